//! numpy dtypes as wendelin stores them (FORMATS.md §6.7): parse and build
//! the `numpy.dtype` REDUCE/BUILD pickle, numpy type strings (`<f8`, `|u1`).

use crate::Error;
use storage::Value;

/// Byte order of a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// `<`
    Little,
    /// `>`
    Big,
    /// `|` (single bytes)
    NotApplicable,
}

/// A scalar numpy dtype: kind (`i u f c b`), item size, byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DType {
    /// numpy kind character.
    pub kind: char,
    /// Bytes per element.
    pub size: usize,
    /// Byte order.
    pub order: ByteOrder,
}

impl DType {
    /// Parse a numpy type string: `<f8`, `>u4`, `|u1`, `f8`, `=i4` (native).
    pub fn parse(s: &str) -> Result<DType, Error> {
        let bad = || Error::DType(format!("unsupported dtype {s:?}"));
        let (order, rest) = match s.chars().next().ok_or_else(bad)? {
            '<' => (Some(ByteOrder::Little), &s[1..]),
            '>' => (Some(ByteOrder::Big), &s[1..]),
            '|' => (Some(ByteOrder::NotApplicable), &s[1..]),
            '=' => (None, &s[1..]),
            _ => (None, s),
        };
        let mut ch = rest.chars();
        let kind = ch.next().ok_or_else(bad)?;
        let size: usize = ch.as_str().parse().map_err(|_| bad())?;
        let valid = match kind {
            'i' | 'u' => matches!(size, 1 | 2 | 4 | 8),
            'f' => matches!(size, 4 | 8),
            'c' => matches!(size, 8 | 16),
            'b' => size == 1,
            _ => false,
        };
        if !valid {
            return Err(bad());
        }
        let order = match order {
            _ if size == 1 => ByteOrder::NotApplicable,
            Some(ByteOrder::NotApplicable) => return Err(bad()),
            Some(o) => o,
            None => ByteOrder::Little, // native on x86-64
        };
        Ok(DType { kind, size, order })
    }

    /// The numpy type string, e.g. `<f8`.
    pub fn str(&self) -> String {
        let o = match self.order {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        };
        format!("{o}{}{}", self.kind, self.size)
    }

    /// True if elements are stored in this machine's byte order.
    pub fn is_native(&self) -> bool {
        self.order != ByteOrder::Big
    }

    /// The pickled `numpy.dtype` value: `dtype(typestr, False, True)` built
    /// with the version-3 state, as numpy 2.x writes it.
    pub fn to_value(&self) -> Value {
        let o = match self.order {
            ByteOrder::Little => "<",
            ByteOrder::Big => ">",
            ByteOrder::NotApplicable => "|",
        };
        Value::Build {
            obj: Box::new(Value::Reduce {
                callable: Box::new(Value::global("numpy", "dtype")),
                args: Box::new(Value::Tuple(vec![
                    Value::Str(format!("{}{}", self.kind, self.size)),
                    Value::Bool(false),
                    Value::Bool(true),
                ])),
            }),
            state: Box::new(Value::Tuple(vec![
                Value::Int(3),
                Value::Str(o.into()),
                Value::None,
                Value::None,
                Value::None,
                Value::Int(-1),
                Value::Int(-1),
                Value::Int(0),
            ])),
        }
    }

    /// Parse a pickled `numpy.dtype` (numpy 1.x ints or 2.x bools, py2 or
    /// py3 strings).
    pub fn from_value(v: &Value) -> Result<DType, Error> {
        let bad = |m: &str| Error::DType(format!("{m}: {v:?}"));
        let (red, state) = match v {
            Value::Build { obj, state } => (obj.as_ref(), Some(state.as_ref())),
            other => (other, None),
        };
        let Value::Reduce { callable, args } = red else {
            return Err(bad("not a numpy.dtype reduction"));
        };
        if callable.as_global() != Some(("numpy", "dtype")) {
            return Err(bad("not numpy.dtype"));
        }
        let typestr = args
            .as_seq()
            .and_then(|a| a.first())
            .and_then(Value::as_text)
            .ok_or_else(|| bad("dtype args have no type string"))?;
        let order = state
            .and_then(Value::as_seq)
            .and_then(|s| s.get(1))
            .and_then(Value::as_text)
            .unwrap_or("|");
        if let Some(s) = state.and_then(Value::as_seq)
            && s.get(3).is_some_and(|n| *n != Value::None)
        {
            return Err(bad("structured dtypes are not supported"));
        }
        DType::parse(&format!("{order}{typestr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::pickle::{Dialect, decode, encode};

    #[test]
    fn parses_and_prints_type_strings() {
        for s in ["<f8", ">u4", "|u1", "<i4", "<c16", "|b1", "<f4"] {
            assert_eq!(DType::parse(s).expect(s).str(), s);
        }
        assert_eq!(DType::parse("f8").expect("native").str(), "<f8");
        assert_eq!(DType::parse("<u1").expect("u1").str(), "|u1");
        for bad in ["<f2", "x8", "<S10", "", "<u3"] {
            assert!(DType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pickles_are_byte_identical_to_numpy_without_memo() {
        // FORMATS.md §6.7 '<f8' py3 (memo ops removed by our encoder)
        let v = DType::parse("<f8").expect("f8").to_value();
        let p = encode(&v, Dialect::Py3).expect("enc");
        let (back, _) = decode(&p).expect("dec");
        assert_eq!(
            DType::from_value(&back).expect("parse"),
            DType::parse("<f8").expect("f8")
        );
        // numpy's own bytes (with memo) decode to the same dtype
        let numpy = hex_decode(
            "8003636e756d70790a64747970650a71005802000000753471018988877102527103284b0358010000003e71044e4e4e4affffffff4affffffff4b00747105622e",
        );
        let (v, _) = decode(&numpy).expect("dec");
        assert_eq!(DType::from_value(&v).expect("dtype").str(), ">u4");
        // numpy 1.16 py2 protocol 1 (ints 0/1)
        let py2 = hex_decode(
            "636e756d70790a64747970650a710128550269344b004b0174527102284b0355013c4e4e4e4affffffff4affffffff4b0074622e",
        );
        let (v, _) = decode(&py2).expect("dec");
        assert_eq!(DType::from_value(&v).expect("dtype").str(), "<i4");
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
