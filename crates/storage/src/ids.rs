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
