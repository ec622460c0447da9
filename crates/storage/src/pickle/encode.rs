//! The pickle encoder: value trees to protocol-3 (py3) or protocol-2 (py2)
//! pickles that Python's unpickler and ZODB load (FORMATS.md §3.7). No memo is
//! used: ZODB does not need one, and values are trees.

use super::Dialect;
use crate::error::{Error, Result};
use crate::value::Value;

/// Items per APPENDS / SETITEMS batch, as Python writes them.
const BATCH: usize = 1000;

fn err(msg: impl Into<String>) -> Error {
    Error::Pickle {
        offset: 0,
        msg: msg.into(),
    }
}

/// Append the pickle of `v` (PROTO ... STOP) to `out`.
pub fn encode_into(out: &mut Vec<u8>, v: &Value, dialect: Dialect) -> Result<()> {
    out.push(0x80);
    out.push(match dialect {
        Dialect::Py3 => 3,
        Dialect::Py2 => 2,
    });
    Enc { out, dialect }.value(v, 0)?;
    out.push(b'.');
    Ok(())
}

struct Enc<'o> {
    out: &'o mut Vec<u8>,
    dialect: Dialect,
}

/// Append the start of the pickle of a byte string of `len` bytes (PROTO,
/// the opcode and the length): the bytes themselves and `STOP` follow. What
/// [`encode_into`] writes for `Value::Bytes`, for writers that send the
/// payload separately instead of copying it into the pickle. `pad` bytes
/// of no-op padding go between PROTO and the opcode (see `padding`).
pub fn encode_bytes_head(
    out: &mut Vec<u8>,
    len: usize,
    pad: usize,
    dialect: Dialect,
) -> Result<()> {
    out.push(0x80);
    out.push(match dialect {
        Dialect::Py3 => 3,
        Dialect::Py2 => 2,
    });
    if !super::padding::push_padding(out, pad, dialect) {
        return Err(err(format!("no pickle padding is {pad} bytes long")));
    }
    let (short, long) = bytes_ops(dialect);
    len_prefix(out, Some(short), long, len)
}

/// The (short, long) opcodes of a byte string in `dialect`.
fn bytes_ops(dialect: Dialect) -> (u8, u8) {
    match dialect {
        Dialect::Py3 => (b'C', b'B'),
        Dialect::Py2 => (b'U', b'T'),
    }
}

/// Push the opcode and length of a string of `len` bytes.
fn len_prefix(out: &mut Vec<u8>, short_op: Option<u8>, long_op: u8, len: usize) -> Result<()> {
    match short_op {
        Some(op) if len < 256 => {
            out.push(op);
            out.push(len as u8);
        }
        _ => {
            let n = u32::try_from(len)
                .map_err(|_| err(format!("string of {len} bytes is too long for protocol 3")))?;
            out.push(long_op);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    Ok(())
}

impl Enc<'_> {
    fn len_prefixed(&mut self, short_op: Option<u8>, long_op: u8, b: &[u8]) -> Result<()> {
        len_prefix(self.out, short_op, long_op, b.len())?;
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        let (short, long) = bytes_ops(self.dialect);
        self.len_prefixed(Some(short), long, b)
    }

    fn text(&mut self, s: &str) -> Result<()> {
        self.len_prefixed(None, b'X', s.as_bytes())
    }

    fn int(&mut self, i: i64) {
        if (0..256).contains(&i) {
            self.out.push(b'K');
            self.out.push(i as u8);
        } else if (0..65536).contains(&i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(i32v) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&i32v.to_le_bytes());
        } else {
            let le = i.to_le_bytes();
            let n = super::decode::minimal_twos_len(&le);
            self.out.push(0x8a);
            self.out.push(n as u8);
            self.out.extend_from_slice(&le[..n]);
        }
    }

    fn seq(&mut self, items: &[Value], depth: u32) -> Result<()> {
        for it in items {
            self.value(it, depth + 1)?;
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: u32) -> Result<()> {
        if depth > super::decode::MAX_DEPTH {
            return Err(err(format!(
                "value nested deeper than {}",
                super::decode::MAX_DEPTH
            )));
        }
        match v {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => {
                if b.len() < 256 {
                    self.out.push(0x8a);
                    self.out.push(b.len() as u8);
                } else {
                    let n = u32::try_from(b.len()).map_err(|_| err("integer too large"))?;
                    self.out.push(0x8b);
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
                self.out.extend_from_slice(b);
            }
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Bytes(b) => self.bytes(b)?,
            Value::Py2Str(b) => match self.dialect {
                Dialect::Py2 => self.len_prefixed(Some(b'U'), b'T', b)?,
                // Python 3 ZODB reads a py2 str as text if it is ASCII, else bytes.
                Dialect::Py3 => match std::str::from_utf8(b) {
                    Ok(s) if s.is_ascii() => self.text(s)?,
                    _ => self.bytes(b)?,
                },
            },
            Value::Str(s) => self.text(s)?,
            Value::Tuple(items) => match items.len() {
                0 => self.out.push(b')'),
                1..=3 => {
                    self.seq(items, depth)?;
                    self.out.push(0x84 + items.len() as u8);
                }
                _ => {
                    self.out.push(b'(');
                    self.seq(items, depth)?;
                    self.out.push(b't');
                }
            },
            Value::List(items) => {
                self.out.push(b']');
                for chunk in items.chunks(BATCH) {
                    if chunk.len() == 1 {
                        self.value(&chunk[0], depth + 1)?;
                        self.out.push(b'a');
                    } else {
                        self.out.push(b'(');
                        self.seq(chunk, depth)?;
                        self.out.push(b'e');
                    }
                }
            }
            Value::Dict(items) => {
                self.out.push(b'}');
                for chunk in items.chunks(BATCH) {
                    if chunk.len() == 1 {
                        self.value(&chunk[0].0, depth + 1)?;
                        self.value(&chunk[0].1, depth + 1)?;
                        self.out.push(b's');
                    } else {
                        self.out.push(b'(');
                        for (k, v) in chunk {
                            self.value(k, depth + 1)?;
                            self.value(v, depth + 1)?;
                        }
                        self.out.push(b'u');
                    }
                }
            }
            Value::Global { module, name } => {
                for part in [module, name] {
                    if part.is_empty() || part.contains('\n') {
                        return Err(err(format!("invalid global name {module:?}.{name:?}")));
                    }
                }
                self.out.push(b'c');
                self.out.extend_from_slice(module.as_bytes());
                self.out.push(b'\n');
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'\n');
            }
            Value::PersistentRef(pid) => {
                self.value(pid, depth + 1)?;
                self.out.push(b'Q');
            }
            Value::Reduce { callable, args } => {
                self.value(callable, depth + 1)?;
                self.value(args, depth + 1)?;
                self.out.push(b'R');
            }
            Value::Build { obj, state } => {
                self.value(obj, depth + 1)?;
                self.value(state, depth + 1)?;
                self.out.push(b'b');
            }
            Value::NewObj { cls, args } => {
                self.value(cls, depth + 1)?;
                self.value(args, depth + 1)?;
                self.out.push(0x81);
            }
        }
        Ok(())
    }
}
