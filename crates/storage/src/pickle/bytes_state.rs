//! Records whose state is one byte string: where the bytes lie, without
//! decoding the record.
//!
//! # Model
//!
//! Large payloads (wendelin's block and chunk objects) are records whose
//! state pickle is a single byte string. Every writer (Python's pickler and
//! ours) lays such a state out the same way: `[PROTO n]`, one of
//! `BINBYTES`/`SHORT_BINBYTES` (py3) or `BINSTRING`/`SHORT_BINSTRING` (py2)
//! with its length, the raw bytes, then `[BINPUT n | LONG_BINPUT n] STOP`;
//! ours may put no-op padding after `PROTO` to place the bytes at a page
//! boundary of the file (see `padding`), which is skipped here.
//! Knowing that, a reader can locate the bytes from the first few hundred
//! bytes of the record (the class pickle plus the opcode) and copy them
//! straight to their destination, without materializing a value tree. Any
//! other layout is reported as "not plain" (`None`), and the caller decodes
//! generically. The opcodes are this module's business, not the caller's.

use super::{class_of_meta, decode};

/// Where the byte payload of a record lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytesStateLayout {
    /// Module of the record's class.
    pub module: String,
    /// Name of the record's class.
    pub name: String,
    /// Offset of the payload's first byte in the record.
    pub offset: usize,
    /// Payload length.
    pub len: u64,
}

use super::opcodes::{
    BINBYTES, BINPUT, BINSTRING, LONG_BINPUT, PROTO, SHORT_BINBYTES, SHORT_BINSTRING, STOP,
};

/// How many first bytes of a record [`bytes_state_layout`] needs to locate
/// the payload of a record we write: its class pickle (well under 512
/// bytes for every class with a byte-string state), `PROTO`, the most
/// padding we insert and the payload's opcode and length.
pub const BYTES_STATE_HEAD: usize = 512 + super::padding::MAX_PADDING;

/// The layout of a record whose state pickle starts with a plain byte
/// string, from the record's first bytes `head` (the whole class pickle,
/// any padding and the state's first opcode and length must be in it:
/// [`BYTES_STATE_HEAD`] bytes are enough for every record we write). `None` if the head
/// is not of that form. The record must then end right after the payload
/// with bytes accepted by [`is_bytes_state_tail`].
pub fn bytes_state_layout(head: &[u8]) -> Option<BytesStateLayout> {
    let (meta, n) = decode(head).ok()?;
    let (module, name) = class_of_meta(&meta)?;
    let (offset, len) = state_layout(head, n)?;
    Some(BytesStateLayout {
        module,
        name,
        offset,
        len,
    })
}

/// Where the payload of a state pickle starting at `at` of `head` lies:
/// `(offset, len)`.
fn state_layout(head: &[u8], mut at: usize) -> Option<(usize, u64)> {
    if head.get(at) == Some(&PROTO) {
        at += 2;
    }
    let at = super::padding::skip(head, at);
    match *head.get(at)? {
        BINBYTES | BINSTRING => {
            let l = u32::from_le_bytes(head.get(at + 1..at + 5)?.try_into().ok()?);
            Some((at + 5, u64::from(l)))
        }
        SHORT_BINBYTES | SHORT_BINSTRING => Some((at + 2, u64::from(*head.get(at + 1)?))),
        _ => None,
    }
}

/// [`bytes_state`] for many records in a row (a ZBlk1 block's 512 ZData
/// chunks), without decoding each record's class pickle: a record that
/// starts with the very bytes of the class pickle decoded last has the same
/// class (a pickle's meaning is its bytes), so only the state's opcode and
/// length are read.
#[derive(Debug, Default, Clone)]
pub struct BytesStateReader {
    /// The last class pickle decoded (empty: none yet) and its class.
    prefix: Vec<u8>,
    module: String,
    name: String,
}

impl BytesStateReader {
    /// The class `(module, name)` of the whole record `data` and where its
    /// payload lies in it, if its state is one plain byte string (as
    /// [`bytes_state`]); `None` otherwise.
    pub fn payload(&mut self, data: &[u8]) -> Option<(&str, &str, std::ops::Range<usize>)> {
        let n = self.class_len(data)?;
        let (offset, len) = state_layout(data, n)?;
        let end = offset.checked_add(usize::try_from(len).ok()?)?;
        is_bytes_state_tail(data.get(end..)?).then_some((
            self.module.as_str(),
            self.name.as_str(),
            offset..end,
        ))
    }

    /// [`Self::payload`] for a record read split in three (see
    /// [`crate::split`]): its first bytes `head`, a payload of `body_len`
    /// bytes not at hand, its last bytes `tail`. The class `(module, name)`
    /// if the record's state is one plain byte string of exactly that
    /// payload (it starts right after `head`, the record ends with `tail`);
    /// `None` otherwise.
    pub fn split_payload(
        &mut self,
        head: &[u8],
        body_len: usize,
        tail: &[u8],
    ) -> Option<(&str, &str)> {
        let n = self.class_len(head)?;
        let (offset, len) = state_layout(head, n)?;
        (offset == head.len() && len == body_len as u64 && is_bytes_state_tail(tail))
            .then_some((self.module.as_str(), self.name.as_str()))
    }

    /// Length of the class pickle `data` starts with (decoded only when it
    /// is not the one decoded last), its class remembered.
    fn class_len(&mut self, data: &[u8]) -> Option<usize> {
        if !self.prefix.is_empty() && data.starts_with(&self.prefix) {
            return Some(self.prefix.len());
        }
        let (meta, n) = decode(data).ok()?;
        let (module, name) = class_of_meta(&meta)?;
        self.prefix = data.get(..n)?.to_vec();
        self.module = module;
        self.name = name;
        Some(n)
    }
}

/// True for what may follow the payload up to the end of the record:
/// `[BINPUT n | LONG_BINPUT n] STOP`.
pub fn is_bytes_state_tail(t: &[u8]) -> bool {
    matches!(
        t,
        [STOP] | [BINPUT, _, STOP] | [LONG_BINPUT, _, _, _, _, STOP]
    )
}

/// The payload of a whole record whose state is one plain byte string,
/// with the record's class `(module, name)`, without decoding the state (no
/// copy). `None` if the record is not of that plain form.
pub fn bytes_state(data: &[u8]) -> Option<(BytesStateLayout, &[u8])> {
    let l = bytes_state_layout(data)?;
    let end = l.offset.checked_add(usize::try_from(l.len).ok()?)?;
    is_bytes_state_tail(data.get(end..)?).then(|| {
        let payload = &data[l.offset..end];
        (l, payload)
    })
}
