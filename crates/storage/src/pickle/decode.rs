//! The pickle decoder: a stack machine over the opcodes of protocols 0-3 (plus
//! the harmless protocol-4 ones), building [`Value`] trees. Nothing is ever
//! executed; every length is checked against the input before allocating.

use crate::error::{Error, Result};
use crate::value::Value;
use std::collections::HashMap;

/// Deepest nesting of containers accepted. Deeper trees are rejected, so that
/// neither decoding nor dropping a value can exhaust the thread stack.
pub const MAX_DEPTH: u32 = 200;

/// Most memo entries accepted in one record (Python's own pickles use one per object).
const MAX_MEMO: usize = 1 << 20;

/// A value on the VM stack with its nesting depth and size.
struct Slot {
    v: Value,
    depth: u32,
    /// Nodes plus payload bytes: what cloning it costs.
    size: u64,
    /// Memo ids that refer to this very object while it is on the stack.
    memo_ids: Vec<u32>,
}

enum Item {
    Mark,
    Val(Slot),
}

/// A memo entry: the object is either still on the VM stack (and may still
/// be filled by APPENDS/SETITEMS/BUILD), or final.
enum Memo {
    OnStack(usize),
    Ready(Value, u32, u64),
}

/// One unpickler: a shared memo across successive `load`s (ZODB records are
/// two pickles written by one pickler, FORMATS.md §3.1).
///
/// Python shares memoized objects by reference; a value tree cannot, so a
/// memo reference (GET) is a copy. Copies are counted, and a pickle that
/// would expand by memo reuse beyond a bound proportional to its length (a
/// "billion laughs" pickle) is rejected instead of exhausting memory.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Memo>,
    copied: u64,
    copy_limit: u64,
}

fn err(offset: usize, msg: impl Into<String>) -> Error {
    Error::Pickle {
        offset,
        msg: msg.into(),
    }
}

fn leaf_size(v: &Value) -> u64 {
    1 + match v {
        Value::Bytes(b) | Value::Py2Str(b) | Value::BigInt(b) => b.len() as u64,
        Value::Str(s) => s.len() as u64,
        Value::Global { module, name } => (module.len() + name.len()) as u64,
        _ => 0,
    }
}

/// Name of an opcode byte, for error messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown opcode",
    }
}

impl<'a> Decoder<'a> {
    /// A decoder over `data`, positioned at its start.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            copied: 0,
            copy_limit: 16 * data.len() as u64 + (1 << 20),
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize, at: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                err(
                    at,
                    format!(
                        "{} needs {n} bytes, only {} left",
                        opcode_name(self.data[at]),
                        self.data.len() - self.pos
                    ),
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn take_arr<const N: usize>(&mut self, at: usize) -> Result<[u8; N]> {
        let s = self.take(N, at)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn line(&mut self, at: usize) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            err(
                at,
                format!("{}: unterminated text argument", opcode_name(self.data[at])),
            )
        })?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn len_arg(&mut self, width: usize, at: usize) -> Result<usize> {
        let n: u64 = match width {
            1 => u64::from(self.take_arr::<1>(at)?[0]),
            4 => u64::from(u32::from_le_bytes(self.take_arr::<4>(at)?)),
            _ => u64::from_le_bytes(self.take_arr::<8>(at)?),
        };
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(err(
                at,
                format!(
                    "{}: length {n} exceeds the {left} bytes left",
                    opcode_name(self.data[at])
                ),
            ));
        }
        Ok(n as usize)
    }

    fn charge(&mut self, size: u64, at: usize) -> Result<()> {
        self.copied = self.copied.saturating_add(size);
        if self.copied > self.copy_limit {
            return Err(err(
                at,
                "pickle expands beyond its size bound by memo reuse",
            ));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) {
        let size = leaf_size(&v);
        self.push_sized(v, 0, size);
    }

    fn push_sized(&mut self, v: Value, depth: u32, size: u64) {
        self.stack.push(Item::Val(Slot {
            v,
            depth,
            size,
            memo_ids: Vec::new(),
        }));
    }

    /// Make the memo entries of the slot at stack index `idx` final (it is
    /// leaving the stack). Skipped when `keep` is false (last pickle: the
    /// memo is never read again).
    fn settle(&mut self, idx: usize, slot: &Slot, at: usize, keep: bool) -> Result<()> {
        for id in &slot.memo_ids {
            if matches!(self.memo.get(id), Some(Memo::OnStack(i)) if *i == idx) {
                if keep {
                    self.charge(slot.size, at)?;
                    self.memo
                        .insert(*id, Memo::Ready(slot.v.clone(), slot.depth, slot.size));
                } else {
                    self.memo.remove(id);
                }
            }
        }
        Ok(())
    }

    fn pop(&mut self, at: usize, name: &str) -> Result<Slot> {
        self.pop_keep(at, name, true)
    }

    fn pop_keep(&mut self, at: usize, name: &str, keep: bool) -> Result<Slot> {
        match self.stack.pop() {
            Some(Item::Val(s)) => {
                let idx = self.stack.len();
                self.settle(idx, &s, at, keep)?;
                Ok(s)
            }
            Some(Item::Mark) => Err(err(
                at,
                format!("{name}: found MARK where a value was expected"),
            )),
            None => Err(err(at, format!("{name}: stack underflow"))),
        }
    }

    fn top(&mut self, at: usize, name: &str) -> Result<&mut Slot> {
        match self.stack.last_mut() {
            Some(Item::Val(s)) => Ok(s),
            Some(Item::Mark) => Err(err(
                at,
                format!("{name}: found MARK where a value was expected"),
            )),
            None => Err(err(at, format!("{name}: stack underflow"))),
        }
    }

    /// Pop everything down to (and including) the last `from` items.
    fn drain_from(&mut self, from: usize, at: usize) -> Result<Vec<Slot>> {
        let items: Vec<(usize, Item)> = self
            .stack
            .drain(from..)
            .enumerate()
            .map(|(i, it)| (from + i, it))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (idx, it) in items {
            if let Item::Val(s) = it {
                self.settle(idx, &s, at, true)?;
                out.push(s);
            }
        }
        Ok(out)
    }

    fn pop_mark(&mut self, at: usize, name: &str) -> Result<Vec<Slot>> {
        let m = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| err(at, format!("{name}: no MARK on the stack")))?;
        let mut items = self.drain_from(m + 1, at)?;
        self.stack.pop(); // the MARK
        items.shrink_to_fit();
        Ok(items)
    }

    fn memo_get(&mut self, id: u32, at: usize, name: &str) -> Result<()> {
        let (v, depth, size) = match self.memo.get(&id) {
            Some(Memo::Ready(v, d, s)) => (v.clone(), *d, *s),
            Some(Memo::OnStack(i)) => match self.stack.get(*i) {
                Some(Item::Val(s)) => (s.v.clone(), s.depth, s.size),
                _ => return Err(err(at, format!("{name}: memo key {id} is stale"))),
            },
            None => return Err(err(at, format!("{name}: memo key {id} never stored"))),
        };
        self.charge(size, at)?;
        self.push_sized(v, depth, size);
        Ok(())
    }

    /// Run the VM until STOP and return the pickled value.
    pub fn load(&mut self) -> Result<Value> {
        self.load_inner(true)
    }

    /// Like [`Decoder::load`] for the last pickle of the data: memo entries
    /// that only this pickle could still use are dropped instead of copied.
    pub fn load_last(&mut self) -> Result<Value> {
        self.load_inner(false)
    }

    fn load_inner(&mut self, keep_memo: bool) -> Result<Value> {
        let start = self.pos;
        self.stack.clear();
        loop {
            let at = self.pos;
            let Some(&op) = self.data.get(at) else {
                return Err(err(at, "pickle ends without STOP"));
            };
            self.pos += 1;
            let name = opcode_name(op);
            match op {
                b'.' => {
                    let v = self.pop_keep(at, name, keep_memo)?;
                    if !self.stack.is_empty() {
                        return Err(err(at, "STOP with more than one value on the stack"));
                    }
                    return Ok(v.v);
                }
                0x80 => {
                    let p = self.take_arr::<1>(at)?[0];
                    if p > 5 {
                        return Err(err(at, format!("unsupported pickle protocol {p}")));
                    }
                }
                0x95 => {
                    self.take_arr::<8>(at)?;
                }
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.pop(at, name)?;
                }
                b'1' => {
                    self.pop_mark(at, name)?;
                }
                b'2' => {
                    let t = self.top(at, name)?;
                    let (v, d, s) = (t.v.clone(), t.depth, t.size);
                    self.charge(s, at)?;
                    self.push_sized(v, d, s);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'I' => {
                    let l = self.line(at)?;
                    let v = match l {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        _ => parse_decimal(l).ok_or_else(|| err(at, "INT: bad number"))?,
                    };
                    self.push(v);
                }
                b'L' => {
                    let l = self.line(at)?;
                    let l = l.strip_suffix(b"L").unwrap_or(l);
                    let v = parse_decimal(l).ok_or_else(|| err(at, "LONG: bad number"))?;
                    self.push(v);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_arr::<4>(at)?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.take_arr::<1>(at)?[0];
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_arr::<2>(at)?);
                    self.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = self.len_arg(if op == 0x8a { 1 } else { 4 }, at)?;
                    let b = self.take(n, at)?;
                    self.push(long_from_le(b));
                }
                b'F' => {
                    let l = self.line(at)?;
                    let s = std::str::from_utf8(l).map_err(|_| err(at, "FLOAT: not ASCII"))?;
                    let f = parse_py_float(s).ok_or_else(|| err(at, "FLOAT: bad number"))?;
                    self.push(Value::Float(f));
                }
                b'G' => {
                    let f = f64::from_be_bytes(self.take_arr::<8>(at)?);
                    self.push(Value::Float(f));
                }
                b'S' => {
                    let l = self.line(at)?;
                    let b = unquote_py2_repr(l).ok_or_else(|| err(at, "STRING: bad quoting"))?;
                    self.push(Value::Py2Str(b));
                }
                b'T' | b'U' => {
                    let n = self.len_arg(if op == b'U' { 1 } else { 4 }, at)?;
                    let b = self.take(n, at)?.to_vec();
                    self.push(Value::Py2Str(b));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let w = match op {
                        b'C' => 1,
                        b'B' => 4,
                        _ => 8,
                    };
                    let n = self.len_arg(w, at)?;
                    let b = self.take(n, at)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b'V' => {
                    let l = self.line(at)?;
                    let s =
                        raw_unicode_unescape(l).ok_or_else(|| err(at, "UNICODE: bad escape"))?;
                    self.push(Value::Str(s));
                }
                b'X' | 0x8c | 0x8d => {
                    let w = match op {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    };
                    let n = self.len_arg(w, at)?;
                    let b = self.take(n, at)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| err(at, format!("{name}: invalid UTF-8")))?;
                    self.push(Value::Str(s.to_owned()));
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b't' | b'l' => {
                    let items = self.pop_mark(at, name)?;
                    let (d, sz) = sum_children(&items, at)?;
                    let vs = items.into_iter().map(|s| s.v).collect();
                    let v = if op == b't' {
                        Value::Tuple(vs)
                    } else {
                        Value::List(vs)
                    };
                    self.push_sized(v, d, sz);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n
                        || self.stack[self.stack.len() - n..]
                            .iter()
                            .any(|i| matches!(i, Item::Mark))
                    {
                        return Err(err(at, format!("{name}: stack underflow")));
                    }
                    let items = self.drain_from(self.stack.len() - n, at)?;
                    let (d, sz) = sum_children(&items, at)?;
                    let v = Value::Tuple(items.into_iter().map(|s| s.v).collect());
                    self.push_sized(v, d, sz);
                }
                b'd' => {
                    let items = self.pop_mark(at, name)?;
                    if items.len() % 2 != 0 {
                        return Err(err(at, "DICT: odd number of items"));
                    }
                    let (d, sz) = sum_children(&items, at)?;
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k.v, v.v));
                    }
                    self.push_sized(Value::Dict(pairs), d, sz);
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop(at, name)?]
                    } else {
                        self.pop_mark(at, name)?
                    };
                    let (d, sz) = sum_children(&items, at)?;
                    let target = self.top(at, name)?;
                    let Value::List(list) = &mut target.v else {
                        return Err(err(at, format!("{name} to a non-list")));
                    };
                    list.extend(items.into_iter().map(|s| s.v));
                    target.depth = target.depth.max(d);
                    target.size += sz - 1;
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop(at, name)?;
                        let k = self.pop(at, name)?;
                        vec![k, v]
                    } else {
                        self.pop_mark(at, name)?
                    };
                    if items.len() % 2 != 0 {
                        return Err(err(at, "SETITEMS: odd number of items"));
                    }
                    let (d, sz) = sum_children(&items, at)?;
                    let target = self.top(at, name)?;
                    let Value::Dict(dict) = &mut target.v else {
                        return Err(err(at, format!("{name} to a non-dict")));
                    };
                    // Pickle order is kept; a repeated key is kept twice
                    // (Python would keep the last), see `Value::Dict`.
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.push((k.v, v.v));
                    }
                    target.depth = target.depth.max(d);
                    target.size += sz - 1;
                }
                b'c' | b'i' => {
                    let module = self.line(at)?;
                    let nm = self.line(at)?;
                    let module = std::str::from_utf8(module)
                        .map_err(|_| err(at, format!("{name}: module is not UTF-8")))?;
                    let nm = std::str::from_utf8(nm)
                        .map_err(|_| err(at, format!("{name}: name is not UTF-8")))?;
                    let g = Value::global(module, nm);
                    if op == b'c' {
                        self.push(g);
                    } else {
                        let items = self.pop_mark(at, name)?;
                        let (d, sz) = sum_children(&items, at)?;
                        let gs = leaf_size(&g);
                        let args = Value::Tuple(items.into_iter().map(|s| s.v).collect());
                        check_depth(d + 1, at)?;
                        self.push_sized(
                            Value::NewObj {
                                cls: Box::new(g),
                                args: Box::new(args),
                            },
                            d + 1,
                            sz + gs + 1,
                        );
                    }
                }
                0x93 => {
                    let nm = self.pop(at, name)?;
                    let module = self.pop(at, name)?;
                    let (Some(m), Some(n)) = (module.v.as_text(), nm.v.as_text()) else {
                        return Err(err(at, "STACK_GLOBAL: module and name must be text"));
                    };
                    let g = Value::global(m, n);
                    self.push(g);
                }
                b'o' => {
                    let mut items = self.pop_mark(at, name)?;
                    if items.is_empty() {
                        return Err(err(at, "OBJ: no class"));
                    }
                    let cls = items.remove(0);
                    let (d, sz) = sum_children(&items, at)?;
                    let d = d.max(cls.depth + 1) + 1;
                    check_depth(d, at)?;
                    let args = Value::Tuple(items.into_iter().map(|s| s.v).collect());
                    self.push_sized(
                        Value::NewObj {
                            cls: Box::new(cls.v),
                            args: Box::new(args),
                        },
                        d,
                        sz + cls.size + 1,
                    );
                }
                0x81 | b'R' => {
                    let args = self.pop(at, name)?;
                    let f = self.pop(at, name)?;
                    let d = args.depth.max(f.depth) + 1;
                    check_depth(d, at)?;
                    let sz = args.size + f.size + 1;
                    let v = if op == b'R' {
                        Value::Reduce {
                            callable: Box::new(f.v),
                            args: Box::new(args.v),
                        }
                    } else {
                        Value::NewObj {
                            cls: Box::new(f.v),
                            args: Box::new(args.v),
                        }
                    };
                    self.push_sized(v, d, sz);
                }
                b'b' => {
                    let state = self.pop(at, name)?;
                    let target = self.top(at, name)?;
                    let d = target.depth.max(state.depth) + 1;
                    check_depth(d, at)?;
                    let obj = std::mem::replace(&mut target.v, Value::None);
                    target.v = Value::Build {
                        obj: Box::new(obj),
                        state: Box::new(state.v),
                    };
                    target.depth = d;
                    target.size += state.size + 1;
                }
                b'P' => {
                    let l = self.line(at)?;
                    let pid = Value::Py2Str(l.to_vec());
                    let sz = leaf_size(&pid) + 1;
                    self.push_sized(Value::PersistentRef(Box::new(pid)), 1, sz);
                }
                b'Q' => {
                    let pid = self.pop(at, name)?;
                    let d = pid.depth + 1;
                    check_depth(d, at)?;
                    self.push_sized(Value::PersistentRef(Box::new(pid.v)), d, pid.size + 1);
                }
                b'g' | b'h' | b'j' => {
                    let id = match op {
                        b'g' => parse_memo_id(self.line(at)?)
                            .ok_or_else(|| err(at, "GET: bad memo id"))?,
                        b'h' => u32::from(self.take_arr::<1>(at)?[0]),
                        _ => u32::from_le_bytes(self.take_arr::<4>(at)?),
                    };
                    self.memo_get(id, at, name)?;
                }
                b'p' | b'q' | b'r' | 0x94 => {
                    let id = match op {
                        b'p' => parse_memo_id(self.line(at)?)
                            .ok_or_else(|| err(at, "PUT: bad memo id"))?,
                        b'q' => u32::from(self.take_arr::<1>(at)?[0]),
                        b'r' => u32::from_le_bytes(self.take_arr::<4>(at)?),
                        _ => {
                            u32::try_from(self.memo.len()).map_err(|_| err(at, "memo too large"))?
                        }
                    };
                    if self.memo.len() >= MAX_MEMO {
                        return Err(err(at, "memo too large"));
                    }
                    let idx = self.stack.len().wrapping_sub(1);
                    let slot = self.top(at, name)?;
                    slot.memo_ids.push(id);
                    self.memo.insert(id, Memo::OnStack(idx));
                }
                _ => {
                    return Err(err(
                        at,
                        format!(
                            "unsupported opcode {name} (0x{op:02x}) in pickle starting at byte {start}"
                        ),
                    ));
                }
            }
        }
    }
}

fn check_depth(d: u32, at: usize) -> Result<()> {
    if d > MAX_DEPTH {
        return Err(err(at, format!("values nested deeper than {MAX_DEPTH}")));
    }
    Ok(())
}

/// Depth and size of a container holding `items`.
fn sum_children(items: &[Slot], at: usize) -> Result<(u32, u64)> {
    let d = items.iter().map(|s| s.depth).max().unwrap_or(0) + 1;
    check_depth(d, at)?;
    let sz = items.iter().map(|s| s.size).sum::<u64>() + 1;
    Ok((d, sz))
}

fn parse_memo_id(l: &[u8]) -> Option<u32> {
    std::str::from_utf8(l).ok()?.trim().parse().ok()
}

/// Length of the shortest little-endian two's complement form of `b` (at least 1).
pub(crate) fn minimal_twos_len(b: &[u8]) -> usize {
    let mut n = b.len();
    while n > 1 {
        let (last, prev) = (b[n - 1], b[n - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    n
}

/// An int from the little-endian two's complement bytes of LONG1/LONG4.
pub fn long_from_le(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    let b = &b[..minimal_twos_len(b)];
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(b.to_vec())
}

/// Parse a decimal integer (optionally signed) into Int or BigInt.
fn parse_decimal(l: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(l).ok()?.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::Int(i));
    }
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 10_000 {
        return None;
    }
    // Magnitude as little-endian base-256, built by multiply-add.
    let mut mag: Vec<u8> = vec![0];
    for c in digits.bytes() {
        let mut carry = u32::from(c - b'0');
        for byte in mag.iter_mut() {
            let x = u32::from(*byte) * 10 + carry;
            *byte = (x & 0xff) as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // room for the sign bit
    if neg {
        // two's complement: invert and add one
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let x = u16::from(!*byte) + carry;
            *byte = (x & 0xff) as u8;
            carry = x >> 8;
        }
    }
    Some(long_from_le(&mag))
}

fn parse_py_float(s: &str) -> Option<f64> {
    match s.trim() {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// Undo Python 2 `repr()` quoting of a STRING argument.
fn unquote_py2_repr(l: &[u8]) -> Option<Vec<u8>> {
    let q = *l.first()?;
    if (q != b'\'' && q != b'"') || l.len() < 2 || *l.last()? != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decode Python's `raw-unicode-escape` (UNICODE argument).
fn raw_unicode_unescape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        if c == b'\\' && i + 1 < l.len() && (l[i + 1] == b'u' || l[i + 1] == b'U') {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = l.get(i + 2..i + 2 + n)?;
            let cp = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(char::from_u32(cp)?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Some(out)
}
