//! The persistent `ZBigArray` object: its stored state as wendelin.core
//! writes it, `({_dtype, _shape, _order, _stridev}, {zfile})`, and the
//! limits a shape must respect.
//!
//! Shapes follow numpy's limits: every dimension fits an i64 (the state
//! stores Python ints, and numpy's `npy_intp`), and the byte size stays
//! below 2^63. A shape outside them is refused before anything is written
//! (a dimension stored wrapped to -1 made every later read of the database
//! root fail).

use crate::Error;
use crate::dtype::DType;
use storage::{Oid, Persistent, PersistentClass, Value};

/// Module of wendelin's array class.
pub const MODULE: &str = "wendelin.bigarray.array_zodb";

/// Memory order of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Row-major (last index fastest).
    C,
    /// Column-major (first index fastest).
    F,
}

/// The stored state of a `ZBigArray`: `({_dtype, _shape, _order, _stridev}, {zfile})`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayState {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Memory order.
    pub order: Order,
    /// The ZBigFile holding the bytes.
    pub zfile: Oid,
}

/// Check `shape` against numpy's limits for elements of `itemsize` bytes;
/// returns the byte size.
pub fn check_shape(shape: &[usize], itemsize: usize) -> Result<u64, Error> {
    let too_big = |what: &str| Error::Shape {
        shape: shape.to_vec(),
        msg: what.to_owned(),
    };
    if shape.iter().any(|&d| i64::try_from(d).is_err()) {
        return Err(too_big(
            "a dimension is larger than numpy's maximum (2^63 - 1)",
        ));
    }
    shape
        .iter()
        .try_fold(itemsize as u64, |a, &x| a.checked_mul(x as u64))
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| too_big("its byte size is 2^63 or more"))
}

fn strides(shape: &[usize], itemsize: usize, order: Order) -> Vec<i64> {
    let n = shape.len();
    let mut st = vec![0i64; n];
    let mut acc = itemsize as i64;
    match order {
        Order::C => {
            for i in (0..n).rev() {
                st[i] = acc;
                acc = acc.saturating_mul(shape[i] as i64);
            }
        }
        Order::F => {
            for i in 0..n {
                st[i] = acc;
                acc = acc.saturating_mul(shape[i] as i64);
            }
        }
    }
    st
}

impl ArrayState {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data.
    pub fn nbytes(&self) -> u64 {
        self.len() as u64 * self.dtype.size as u64
    }

    /// Parse the stored state.
    pub fn parse(oid: Oid, state: &Value) -> Result<ArrayState, Error> {
        let bad = |m: &str| Error::BadArray {
            oid,
            msg: m.to_owned(),
        };
        let parts = state
            .as_seq()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| bad("state is not a (dict, slots) tuple"))?;
        let d = &parts[0];
        let dtype = DType::from_value(d.dict_get("_dtype").ok_or_else(|| bad("no _dtype"))?)?;
        let int = |v: &Value| -> Option<i64> {
            v.as_int().or_else(|| {
                // numpy scalar: REDUCE(multiarray.scalar, (dtype, raw LE bytes))
                let Value::Reduce { args, .. } = v else {
                    return None;
                };
                let raw = args.as_seq()?.get(1)?.as_bytes()?;
                let mut b = [0u8; 8];
                let n = raw.len().min(8);
                b[..n].copy_from_slice(&raw[..n]);
                Some(i64::from_le_bytes(b))
            })
        };
        let shape = d
            .dict_get("_shape")
            .and_then(Value::as_seq)
            .ok_or_else(|| bad("no _shape"))?
            .iter()
            .map(|x| int(x).and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("_shape has a non-integer"))?;
        let order = match d.dict_get("_order").and_then(Value::as_text) {
            None | Some("C") => Order::C,
            Some("F") => Order::F,
            Some(o) => return Err(bad(&format!("unknown _order {o:?}"))),
        };
        let zfile = parts[1]
            .dict_get("zfile")
            .and_then(Value::ref_oid)
            .ok_or_else(|| bad("no zfile reference"))?;
        check_shape(&shape, dtype.size).map_err(|e| bad(&e.to_string()))?;
        Ok(ArrayState {
            dtype,
            shape,
            order,
            zfile,
        })
    }

    /// The state value, as wendelin stores it.
    pub fn to_value(&self) -> Value {
        let s = |x: &str| Value::Str(x.into());
        let tuple = |v: Vec<i64>| Value::Tuple(v.into_iter().map(Value::Int).collect());
        Value::Tuple(vec![
            Value::Dict(vec![
                (s("_dtype"), self.dtype.to_value()),
                (
                    s("_shape"),
                    tuple(self.shape.iter().map(|&x| x as i64).collect()),
                ),
                (
                    s("_order"),
                    s(if self.order == Order::C { "C" } else { "F" }),
                ),
                (
                    s("_stridev"),
                    tuple(strides(&self.shape, self.dtype.size, self.order)),
                ),
            ]),
            Value::Dict(vec![(
                s("zfile"),
                Value::persistent_ref(self.zfile, bigfile::objects::MODULE, "ZBigFile"),
            )]),
        ])
    }
}

impl Persistent for ArrayState {
    fn class_path(&self) -> (&str, &str) {
        (MODULE, "ZBigArray")
    }
    fn state(&self) -> storage::Result<Value> {
        Ok(self.to_value())
    }
}

impl PersistentClass for ArrayState {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> storage::Result<Self> {
        if (module, name) != (MODULE, "ZBigArray") {
            return Err(storage::Error::BadState {
                oid,
                msg: format!("{module}.{name} is not a ZBigArray"),
            });
        }
        ArrayState::parse(oid, &state).map_err(|e| storage::Error::BadState {
            oid,
            msg: e.to_string(),
        })
    }
}
