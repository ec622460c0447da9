//! Byte layouts of FileStorage (FORMATS.md §2): magic, transaction headers,
//! data record headers. Pure functions over byte slices.

use crate::ids::{Oid, Tid};

/// Python-3 ZODB magic.
pub const MAGIC_FS30: &[u8; 4] = b"FS30";
/// Python-2 ZODB magic (same layout, py2 pickles).
pub const MAGIC_FS21: &[u8; 4] = b"FS21";
/// Length of a transaction header (`>8sQcHHH`).
pub const TXN_HDR_LEN: u64 = 23;
/// Length of a data record header (`>8s8sQQHQ`).
pub const DATA_HDR_LEN: u64 = 42;

/// Transaction status: committed.
pub const STATUS_COMMITTED: u8 = b' ';
/// Transaction status: committed and copied by a pack.
pub const STATUS_PACKED: u8 = b'p';
/// Transaction status: checkpoint (voted, not finished).
pub const STATUS_CHECKPOINT: u8 = b'c';
/// Transaction status: obsolete "uncertain"; its records are not indexed.
pub const STATUS_UNDONE: u8 = b'u';

/// A transaction record header, with its position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnHeader {
    /// File offset of the header.
    pub pos: u64,
    /// Transaction id.
    pub tid: Tid,
    /// Record length, excluding the 8-byte trailer.
    pub tlen: u64,
    /// Status byte.
    pub status: u8,
    /// Length of the user field.
    pub ulen: u16,
    /// Length of the description field.
    pub dlen: u16,
    /// Length of the extension field.
    pub elen: u16,
}

impl TxnHeader {
    /// Parse the 23 header bytes found at `pos`.
    pub fn parse(pos: u64, b: &[u8; 23]) -> TxnHeader {
        TxnHeader {
            pos,
            tid: Tid::from_bytes(arr8(&b[0..8])),
            tlen: u64::from_be_bytes(arr8(&b[8..16])),
            status: b[16],
            ulen: u16::from_be_bytes([b[17], b[18]]),
            dlen: u16::from_be_bytes([b[19], b[20]]),
            elen: u16::from_be_bytes([b[21], b[22]]),
        }
    }

    /// The 23 header bytes.
    pub fn to_bytes(&self) -> [u8; 23] {
        let mut b = [0u8; 23];
        b[0..8].copy_from_slice(&self.tid.to_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status;
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// Header length including user, description and extension.
    pub fn header_len(&self) -> u64 {
        TXN_HDR_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }

    /// Offset just past the trailer: where the next transaction starts.
    pub fn next_pos(&self) -> u64 {
        self.pos.saturating_add(self.tlen).saturating_add(8)
    }
}

/// A data record header, with its position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHeader {
    /// File offset of the header.
    pub pos: u64,
    /// The object.
    pub oid: Oid,
    /// The revision (= the enclosing transaction's tid).
    pub tid: Tid,
    /// Offset of the previous record of the same oid (0 = none).
    pub prev: u64,
    /// Offset of the enclosing transaction.
    pub tloc: u64,
    /// Version length (must be 0).
    pub vlen: u16,
    /// Length of the record data; 0 means a backpointer follows.
    pub plen: u64,
}

impl DataHeader {
    /// Parse the 42 header bytes found at `pos`.
    pub fn parse(pos: u64, b: &[u8; 42]) -> DataHeader {
        DataHeader {
            pos,
            oid: Oid::from_bytes(arr8(&b[0..8])),
            tid: Tid::from_bytes(arr8(&b[8..16])),
            prev: u64::from_be_bytes(arr8(&b[16..24])),
            tloc: u64::from_be_bytes(arr8(&b[24..32])),
            vlen: u16::from_be_bytes([b[32], b[33]]),
            plen: u64::from_be_bytes(arr8(&b[34..42])),
        }
    }

    /// The 42 header bytes.
    pub fn to_bytes(&self) -> [u8; 42] {
        let mut b = [0u8; 42];
        b[0..8].copy_from_slice(&self.oid.to_bytes());
        b[8..16].copy_from_slice(&self.tid.to_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Total record length: header + data, or header + 8-byte backpointer.
    pub fn record_len(&self) -> u64 {
        DATA_HDR_LEN.saturating_add(if self.plen > 0 { self.plen } else { 8 })
    }
}

fn arr8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let t = TxnHeader {
            pos: 4,
            tid: Tid(0x03fdba8043333333),
            tlen: 154,
            status: b' ',
            ulen: 0,
            dlen: 25,
            elen: 0,
        };
        assert_eq!(TxnHeader::parse(4, &t.to_bytes()), t);
        assert_eq!(t.header_len(), 48);
        assert_eq!(t.next_pos(), 166);
        let d = DataHeader {
            pos: 52,
            oid: Oid(0),
            tid: t.tid,
            prev: 0,
            tloc: 4,
            vlen: 0,
            plen: 64,
        };
        assert_eq!(DataHeader::parse(52, &d.to_bytes()), d);
        assert_eq!(d.record_len(), 106);
        let bp = DataHeader { plen: 0, ..d };
        assert_eq!(bp.record_len(), 50);
    }
}
