//! No-op padding inside a pickle: bytes the unpickler runs without
//! changing its stack, so that the payload of a byte-string record can be
//! placed at a chosen file offset.
//!
//! # Model
//!
//! A FileStorage record whose state is one large byte string (a ZBlk0
//! block) can be read in place by mapping the data file straight into an
//! array's memory (`MAP_FIXED | MAP_PRIVATE` of the file): no copy at all.
//! `mmap` maps whole pages, so the payload's first byte must lie at a file
//! offset that is a multiple of the page size. The record header and the
//! class pickle before it have whatever lengths they have; what can move
//! the payload is padding inside the state pickle, between its `PROTO`
//! and the payload's opcode, that the unpickler executes as a no-op:
//!
//! - 2 bytes: `N0` (push None, POP);
//! - 3 bytes: `(N1` (MARK, push None, POP_MARK);
//! - 4, 5 bytes: `N0N0`, `N0(N1`;
//! - n >= 6 bytes: one byte string of n-6 zero bytes, then POP:
//!   `B len32 zeros 0` (BINBYTES, the py3 dialect) or `T len32 zeros 0`
//!   (BINSTRING, py2: a py2 `str`, which every Python 2 unpickler reads).
//!
//! One byte alone cannot be a no-op (every opcode that pushes needs a POP),
//! so a writer that needs 1 byte of padding pads one page more (4097).
//! These are opcodes of protocol 0/1 that every unpickler of protocols 2
//! and 3 runs (Python's `pickle`, `cPickle`, zodbpickle's `noload` used by
//! ZODB's reference finder, our [`super::Decoder`]), and the state they
//! leave is the unpadded pickle's: Python ZODB and wendelin.core read
//! padded records unchanged.
//!
//! Readers that locate a payload without decoding
//! ([`super::bytes_state_layout`]) skip such padding with [`skip`]: a byte
//! string followed by POP is padding (a payload is followed by its tail,
//! `BINPUT`/`LONG_BINPUT`/`STOP`, never POP).

use super::Dialect;

/// The most padding a writer inserts (a page, plus the one byte that
/// cannot be padded alone): readers that locate payloads from a record's
/// first bytes read this much more than the class pickle and opcode.
pub const MAX_PADDING: usize = 4097;

/// Append exactly `n` bytes of no-op pickle opcodes to `out` (see the
/// module docs). `false` (nothing appended) for `n == 1`, which no opcode
/// sequence can fill.
pub fn push_padding(out: &mut Vec<u8>, n: usize, dialect: Dialect) -> bool {
    match n {
        0 => {}
        1 => return false,
        2 => out.extend_from_slice(b"N0"),
        3 => out.extend_from_slice(b"(N1"),
        4 => out.extend_from_slice(b"N0N0"),
        5 => out.extend_from_slice(b"N0(N1"),
        _ => {
            let Ok(len) = u32::try_from(n - 6) else {
                return false;
            };
            out.push(match dialect {
                Dialect::Py3 => b'B',
                Dialect::Py2 => b'T',
            });
            out.extend_from_slice(&len.to_le_bytes());
            out.resize(out.len() + (n - 6), 0);
            out.push(b'0');
        }
    }
    true
}

/// The padding that moves a payload now at file offset `at` to the next
/// multiple of `align` (a power of two): `0` if it is aligned already, and
/// `1 + align` instead of the impossible `1`.
pub fn padding_to_align(at: u64, align: u64) -> usize {
    let pad = at.next_multiple_of(align) - at;
    // `pad < align`, a page: fits in usize.
    match pad as usize {
        1 => 1 + align as usize,
        p => p,
    }
}

/// The position after any no-op padding of the forms above that starts at
/// `at` of `data` (`at` itself if there is none). Padding that does not
/// lie wholly inside `data` is not skipped.
pub(super) fn skip(data: &[u8], mut at: usize) -> usize {
    loop {
        let rest = data.get(at..).unwrap_or_default();
        let n = match rest {
            [b'N', b'0', ..] => 2,
            [b'(', b'N', b'1', ..] => 3,
            [b'B' | b'T', l0, l1, l2, l3, ..] => {
                let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
                match len.checked_add(5) {
                    Some(p) if rest.get(p) == Some(&b'0') => p + 1,
                    _ => return at,
                }
            }
            _ => return at,
        };
        at += n;
    }
}
