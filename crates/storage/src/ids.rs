//! Object ids and transaction ids: 8-byte big-endian values (FORMATS.md §1).

use std::fmt;

/// An object id. Oid 0 is the root object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u64);

/// A transaction id (= serial = revision). Bytewise order is chronological order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

macro_rules! id_common {
    ($t:ident) => {
        impl $t {
            /// The 8 big-endian bytes.
            pub fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
            /// From 8 big-endian bytes.
            pub fn from_bytes(b: [u8; 8]) -> Self {
                $t(u64::from_be_bytes(b))
            }
            /// From a slice that must be exactly 8 bytes long.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; 8]>::try_from(b).ok().map(Self::from_bytes)
            }
            /// Parse 16 hex digits (an optional `0x` prefix is accepted).
            pub fn from_hex(s: &str) -> Option<Self> {
                let s = s.strip_prefix("0x").unwrap_or(s);
                if s.is_empty() || s.len() > 16 {
                    return None;
                }
                u64::from_str_radix(s, 16).ok().map($t)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:016x})"), self.0)
            }
        }
    };
}
id_common!(Oid);
id_common!(Tid);

impl Oid {
    /// The root object's oid.
    pub const ROOT: Oid = Oid(0);
}

impl Tid {
    /// "No revision" (`z64`).
    pub const ZERO: Tid = Tid(0);
    /// The largest valid tid (`0x7fffffffffffffff`).
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);
}

/// Calendar time of a tid, UTC (FORMATS.md §1.2). `second` includes the fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TidTime {
    /// Year, e.g. 2026.
    pub year: u32,
    /// Month 1..=12.
    pub month: u32,
    /// Day 1..=31.
    pub day: u32,
    /// Hour 0..=23.
    pub hour: u32,
    /// Minute 0..=59.
    pub minute: u32,
    /// Seconds in [0, 60), with the fraction.
    pub second: f64,
}

const SCONV: f64 = 4294967296.0 / 60.0; // 2^32 / 60

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn month_len(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl TidTime {
    /// The time of a Unix timestamp (seconds since 1970, UTC); `None` before 1900.
    pub fn from_unix(secs: f64) -> Option<TidTime> {
        if !secs.is_finite() {
            return None;
        }
        let whole = secs.floor();
        let days = (whole / 86400.0).floor() as i64;
        let sod = (whole - days as f64 * 86400.0) as u32;
        let (y, month, day) = civil_from_days(days);
        let year = u32::try_from(y).ok().filter(|&y| y >= 1900)?;
        Some(TidTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: f64::from(sod % 60) + (secs - whole),
        })
    }
}

impl Tid {
    /// The tid of a calendar time, exactly as ZODB's `TimeStamp` packs it
    /// (seconds truncated to units of 60/2^32 s).
    pub fn from_time(t: &TidTime) -> Tid {
        let a = ((((u64::from(t.year).saturating_sub(1900)) * 12 + u64::from(t.month) - 1) * 31
            + u64::from(t.day)
            - 1)
            * 24
            + u64::from(t.hour))
            * 60
            + u64::from(t.minute);
        let b = (t.second * SCONV).clamp(0.0, 4294967295.0) as u64;
        Tid(((a & 0xffff_ffff) << 32) | b)
    }

    /// The calendar time (UTC) this tid encodes.
    pub fn time(self) -> TidTime {
        let a = (self.0 >> 32) as u32;
        let b = self.0 as u32;
        TidTime {
            year: a / 535_680 + 1900,
            month: a / 44_640 % 12 + 1,
            day: a / 1440 % 31 + 1,
            hour: a / 60 % 24,
            minute: a % 60,
            second: f64::from(b) / SCONV,
        }
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), as Python's `TimeStamp` prints it.
    pub fn time_string(self) -> String {
        let t = self.time();
        let micros = (t.second * 1e6).round() as u64;
        let (s, us) = (micros / 1_000_000, micros % 1_000_000);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            t.year, t.month, t.day, t.hour, t.minute, s, us
        )
    }

    /// `self + 1` (saturating, never overflows): the exclusive `before` bound
    /// that reads the snapshot `self` (`load_before(oid, at.successor())`).
    /// Unlike [`Tid::next`] this is plain arithmetic, not a commit time.
    pub fn successor(self) -> Tid {
        Tid(self.0.saturating_add(1))
    }

    /// The smallest tid after `self` (`persistent`'s `TimeStamp.laterThan`
    /// step): the low word counts up; on overflow the minute advances by the
    /// real calendar.
    pub fn next(self) -> Tid {
        let a = (self.0 >> 32) as u32;
        let b = self.0 as u32;
        if b < u32::MAX {
            return Tid(self.0 + 1);
        }
        let mut t = self.time();
        t.second = 0.0;
        t.minute += 1;
        if t.minute == 60 {
            t.minute = 0;
            t.hour += 1;
            if t.hour == 24 {
                t.hour = 0;
                t.day += 1;
                if t.day > month_len(t.year, t.month) {
                    t.day = 1;
                    t.month += 1;
                    if t.month == 13 {
                        t.month = 1;
                        t.year += 1;
                    }
                }
            }
        }
        let n = Tid::from_time(&t);
        if n.0 > self.0 {
            n
        } else {
            Tid((u64::from(a) + 1) << 32)
        }
    }

    /// A new tid for a commit at Unix time `now`: the tid of `now` if it is
    /// later than `last`, else `last.next()` (ZODB's `tpc_begin`).
    pub fn new_after(last: Tid, now: f64) -> Tid {
        match TidTime::from_unix(now).map(|t| Tid::from_time(&t)) {
            Some(cand) if cand > last => cand,
            _ => last.next(),
        }
    }

    /// A new tid for a commit now (system clock).
    pub fn now_after(last: Tid) -> Tid {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Tid::new_after(last, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tid_time_matches_zodb_examples() {
        let t = Tid(0x0285cbac20da7419);
        assert_eq!(t.time_string(), "1979-01-03 21:00:07.700000");
        assert_eq!(
            Tid(0x03fdba8043333333).time_string(),
            "2025-01-01 00:00:15.750000"
        );
        assert_eq!(Tid::from_time(&t.time()), t);
        assert_eq!(t.to_string(), "0285cbac20da7419");
    }

    #[test]
    fn later_than_advances_minute_by_the_real_calendar() {
        // 2025-04-30 23:59 with b = 0xffffffff -> 2025-05-01 00:00
        let t = Tid::from_time(&TidTime {
            year: 2025,
            month: 4,
            day: 30,
            hour: 23,
            minute: 59,
            second: 0.0,
        });
        let last = Tid(t.0 | 0xffff_ffff);
        assert_eq!(last.next(), Tid(0x0400740000000000));
        assert_eq!(Tid(5).next(), Tid(6));
    }

    #[test]
    fn new_tids_are_strictly_increasing_and_follow_the_clock() {
        // 2025-01-01 00:00:15.75 UTC = 1735689615.75
        let t = Tid::new_after(Tid::ZERO, 1_735_689_615.75);
        assert_eq!(t, Tid(0x03fdba8043333333));
        // a clock going backwards still yields increasing tids
        let u = Tid::new_after(t, 1_735_689_600.0);
        assert_eq!(u, Tid(t.0 + 1));
        let mut last = Tid::ZERO;
        for _ in 0..1000 {
            let n = Tid::now_after(last);
            assert!(n > last);
            last = n;
        }
    }

    #[test]
    fn unix_to_calendar() {
        let t = TidTime::from_unix(951_782_400.5).expect("2000-02-29");
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2000, 2, 29, 0, 0)
        );
        assert_eq!(t.second, 0.5);
        assert!(TidTime::from_unix(-3e9).is_none());
    }
}
