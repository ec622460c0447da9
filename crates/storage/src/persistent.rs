//! Typed persistent objects: the Rust side of a ZODB class.
//!
//! # Model
//!
//! A stored record is two pickles: the class (module, name) and the state.
//! A Rust type stands for one or more ZODB classes by converting between
//! itself and the decoded state tree ([`Persistent`] to write,
//! [`PersistentClass`] to read); references to other objects stay
//! [`Value::PersistentRef`]s inside the state. Nothing here knows where
//! records come from: the object layer ([`crate::db`]) and the snapshot
//! reader ([`crate::snapshot`]) both decode through
//! [`PersistentClass::from_record`], so there is one recipe for "record
//! bytes -> typed object". [`GenericObject`] takes any class as it is;
//! [`PersistentMapping`] is the root object.

use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::pickle;
use crate::value::Value;
use std::any::Any;

/// A persistent object: a ZODB class and a state that converts to and from
/// the pickle value tree. References to other objects are
/// [`Value::PersistentRef`]s inside the state (see [`crate::db::Connection::ref_to`]).
pub trait Persistent: Any + Send + Sync {
    /// `(module, name)` of the ZODB class, e.g. `("BTrees.LOBTree", "LOBucket")`.
    fn class_path(&self) -> (&str, &str);
    /// The state to pickle.
    fn state(&self) -> Result<Value>;
}

/// A Rust type for one or more ZODB classes.
pub trait PersistentClass: Persistent + Sized {
    /// Build the object from its class path and decoded state.
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self>;

    /// Build the object from its record bytes (class pickle + state pickle).
    fn from_record(oid: Oid, data: &[u8]) -> Result<Self> {
        let obj = GenericObject::decode(oid, data)?;
        Self::from_state(oid, &obj.module, &obj.name, obj.state)
    }
}

/// Any object, kept as its class path and raw state tree.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericObject {
    /// Module of the class.
    pub module: String,
    /// Name of the class.
    pub name: String,
    /// The state as decoded.
    pub state: Value,
}

impl GenericObject {
    /// Decode record bytes into class path and state, without interpreting
    /// the state.
    pub fn decode(oid: Oid, data: &[u8]) -> Result<GenericObject> {
        let (meta, state) = pickle::decode_record(data)?;
        let (module, name) = pickle::class_of_meta(&meta).ok_or_else(|| Error::BadState {
            oid,
            msg: "record has no recognizable class".into(),
        })?;
        Ok(GenericObject {
            module,
            name,
            state,
        })
    }
}
impl Persistent for GenericObject {
    fn class_path(&self) -> (&str, &str) {
        (&self.module, &self.name)
    }
    fn state(&self) -> Result<Value> {
        Ok(self.state.clone())
    }
}

impl PersistentClass for GenericObject {
    fn from_state(_: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        Ok(GenericObject {
            module: module.into(),
            name: name.into(),
            state,
        })
    }
}

/// `persistent.mapping.PersistentMapping` (the root object): a dict under the
/// state key `data` (legacy: `_container`), plus any other attributes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersistentMapping {
    /// The user mapping, in stored order.
    pub data: Vec<(Value, Value)>,
    /// Other state attributes (subclasses), kept as they are.
    pub attrs: Vec<(Value, Value)>,
}

impl PersistentMapping {
    /// The value under text key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data
            .iter()
            .rev()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    }

    /// Set text key `key` (replacing an existing entry).
    pub fn insert(&mut self, key: &str, v: Value) {
        match self.data.iter_mut().find(|(k, _)| k.as_text() == Some(key)) {
            Some(e) => e.1 = v,
            None => self.data.push((Value::Str(key.into()), v)),
        }
    }

    /// Remove text key `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self
            .data
            .iter()
            .position(|(k, _)| k.as_text() == Some(key))?;
        Some(self.data.remove(i).1)
    }

    /// The text keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.iter().filter_map(|(k, _)| k.as_text())
    }
}

impl Persistent for PersistentMapping {
    fn class_path(&self) -> (&str, &str) {
        ("persistent.mapping", "PersistentMapping")
    }
    fn state(&self) -> Result<Value> {
        let mut items = vec![(Value::Str("data".into()), Value::Dict(self.data.clone()))];
        items.extend(self.attrs.iter().cloned());
        Ok(Value::Dict(items))
    }
}

impl PersistentClass for PersistentMapping {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        let bad = |msg: String| Error::BadState { oid, msg };
        if !matches!(
            (module, name),
            ("persistent.mapping", "PersistentMapping") | ("persistent.dict", "PersistentDict")
        ) {
            return Err(bad(format!("{module}.{name} is not a PersistentMapping")));
        }
        let Value::Dict(items) = state else {
            return Err(bad("PersistentMapping state is not a dict".into()));
        };
        let mut m = PersistentMapping::default();
        for (k, v) in items {
            match (k.as_text(), v) {
                (Some("data" | "_container"), Value::Dict(d)) => m.data = d,
                (_, v) => m.attrs.push((k, v)),
            }
        }
        Ok(m)
    }
}
