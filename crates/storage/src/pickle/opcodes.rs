//! The pickle opcodes that the fast readers match byte by byte (the
//! byte-string state of `bytes_state`, the chunk-table buckets of
//! `btree::int_refs`); the generic decoder has its own dispatch.

pub(crate) const PROTO: u8 = 0x80;
pub(crate) const STOP: u8 = b'.';
pub(crate) const MARK: u8 = b'(';
pub(crate) const TUPLE: u8 = b't';
pub(crate) const TUPLE1: u8 = 0x85;
pub(crate) const TUPLE2: u8 = 0x86;
pub(crate) const BININT: u8 = b'J';
pub(crate) const BININT1: u8 = b'K';
pub(crate) const BININT2: u8 = b'M';
pub(crate) const BINBYTES: u8 = b'B';
pub(crate) const BINSTRING: u8 = b'T';
pub(crate) const SHORT_BINBYTES: u8 = b'C';
pub(crate) const SHORT_BINSTRING: u8 = b'U';
pub(crate) const GLOBAL: u8 = b'c';
pub(crate) const BINGET: u8 = b'h';
pub(crate) const LONG_BINGET: u8 = b'j';
pub(crate) const BINPUT: u8 = b'q';
pub(crate) const LONG_BINPUT: u8 = b'r';
pub(crate) const BINPERSID: u8 = b'Q';
