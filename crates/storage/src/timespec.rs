//! Naming a point in a database's history on a command line: a tid or a
//! calendar time.
//!
//! # Model
//!
//! Commands that act "as of" a moment (`pack --before`, and later `--at` on
//! the read commands) take either a transaction id, written as ZODB prints
//! it (16 hex digits, optional `0x`), or an ISO-8601 time: `YYYY-MM-DD`,
//! optionally followed by `T` (or a space) and `HH:MM[:SS[.fraction]]`,
//! optionally followed by `Z` or a `+HH:MM` / `-HH:MM` offset. A time
//! without an offset is UTC, the zone tids are in. A time maps to the tid
//! ZODB's `TimeStamp` gives it ([`Tid::from_time`]), so "as of 12:00" means
//! every transaction committed at or before 12:00:00.000000. Parsing is
//! pure: no clock, no database.

use crate::error::{Error, Result};
use crate::ids::{Tid, TidTime};

/// Parse `TID|ISO-8601-TIME` (see the module docs) into a tid.
pub fn parse_tid_or_time(s: &str) -> Result<Tid> {
    let s = s.trim();
    let bad = |why: &str| {
        Error::Protocol(format!(
            "{s:?} is neither a tid (16 hex digits) nor an ISO-8601 time (YYYY-MM-DD[THH:MM[:SS[.f]]][Z|±HH:MM]): {why}"
        ))
    };
    if !s.contains('-') || s.starts_with("0x") {
        let hex = s.strip_prefix("0x").unwrap_or(s);
        if hex.len() == 16 {
            return Tid::from_hex(hex).ok_or_else(|| bad("bad hex digits"));
        }
        return Err(bad("a tid has 16 hex digits"));
    }
    let secs = parse_iso8601(s).map_err(bad)?;
    tid_of_unix(secs).ok_or_else(|| bad("out of the range of tids (1900..)"))
}

/// The tid of a Unix time (seconds since 1970, UTC), `None` before 1900.
pub fn tid_of_unix(secs: f64) -> Option<Tid> {
    TidTime::from_unix(secs).map(|t| Tid::from_time(&t))
}

/// The tid of "now minus `days` days" on the system clock.
pub fn tid_days_ago(days: f64) -> Option<Tid> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    tid_of_unix(now - days * 86400.0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &'static str) -> std::result::Result<u32, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(what);
    }
    s.parse().map_err(|_| what)
}

/// Unix seconds of an ISO-8601 time.
fn parse_iso8601(s: &str) -> std::result::Result<f64, &'static str> {
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err("the date must be YYYY-MM-DD");
    };
    if y.len() != 4 || mo.len() != 2 || d.len() != 2 {
        return Err("the date must be YYYY-MM-DD");
    }
    let (y, mo, d) = (
        num(y, "bad year")?,
        num(mo, "bad month")?,
        num(d, "bad day")?,
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mlen = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err("month out of range"),
    };
    if d == 0 || d > mlen {
        return Err("day out of range");
    }
    let mut secs = days_from_civil(i64::from(y), mo, d) as f64 * 86400.0;
    let Some(time) = time else {
        return Ok(secs);
    };
    // Split off the zone: Z, +HH:MM, -HH:MM (or +HHMM / +HH).
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0.0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1.0 } else { 1.0 };
        let z = z[1..].replace(':', "");
        let (hh, mm) = match z.len() {
            2 => (num(&z, "bad zone hour")?, 0),
            4 => (
                num(&z[..2], "bad zone hour")?,
                num(&z[2..], "bad zone minute")?,
            ),
            _ => return Err("the zone must be Z or ±HH:MM"),
        };
        if hh > 23 || mm > 59 {
            return Err("zone offset out of range");
        }
        (c, sign * f64::from(hh * 3600 + mm * 60))
    } else {
        (time, 0.0)
    };
    let mut tp = clock.split(':');
    let (Some(h), Some(mi), sec, None) = (tp.next(), tp.next(), tp.next(), tp.next()) else {
        return Err("the time must be HH:MM[:SS[.f]]");
    };
    if h.len() != 2 || mi.len() != 2 {
        return Err("the time must be HH:MM[:SS[.f]]");
    }
    let (h, mi) = (num(h, "bad hour")?, num(mi, "bad minute")?);
    let sec = match sec {
        None => 0.0,
        Some(sec) => {
            let (whole, frac) = sec.split_once(['.', ',']).unwrap_or((sec, ""));
            if whole.len() != 2 {
                return Err("seconds must be SS[.f]");
            }
            let w = num(whole, "bad seconds")?;
            let f = if frac.is_empty() {
                0.0
            } else {
                num(frac, "bad fraction of a second")?;
                format!("0.{frac}")
                    .parse::<f64>()
                    .map_err(|_| "bad fraction")?
            };
            f64::from(w) + f
        }
    };
    if h > 23 || mi > 59 || sec >= 60.0 {
        return Err("time of day out of range");
    }
    secs += f64::from(h * 3600 + mi * 60) + sec - offset;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tids_and_times() {
        assert_eq!(
            parse_tid_or_time("03fdba8043333333").expect("tid"),
            Tid(0x03fdba8043333333)
        );
        assert_eq!(
            parse_tid_or_time("0x03fdba8043333333").expect("tid"),
            Tid(0x03fdba8043333333)
        );
        // 2025-01-01 00:00:15.75 UTC, in several spellings.
        for s in [
            "2025-01-01T00:00:15.75",
            "2025-01-01 00:00:15.75Z",
            "2025-01-01T01:00:15.75+01:00",
            "2024-12-31T23:30:15.75-00:30",
        ] {
            assert_eq!(
                parse_tid_or_time(s).expect(s),
                Tid(0x03fdba8043333333),
                "{s}"
            );
        }
        assert_eq!(
            parse_tid_or_time("2025-01-01").expect("date").time_string(),
            "2025-01-01 00:00:00.000000"
        );
        assert_eq!(
            parse_tid_or_time("2000-02-29T12:34")
                .expect("leap")
                .time_string(),
            "2000-02-29 12:34:00.000000"
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for s in [
            "",
            "abc",
            "03fdba80",
            "2025-13-01",
            "2025-02-29",
            "2025-01-01T25:00",
            "2025-01-01T10:00:61",
            "2025-1-1",
            "2025-01-01T10",
            "2025-01-01T10:00+5",
            "1800-01-01",
            "zzzzzzzzzzzzzzzz",
            "2025-01-01T10:00:00.x",
        ] {
            assert!(parse_tid_or_time(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn days_ago_is_in_the_past() {
        let t = tid_days_ago(1.0).expect("now");
        assert!(t < Tid::now_after(Tid::ZERO));
    }
}
