//! The persistent classes of wendelin.core's `file_zodb` (FORMATS.md §6):
//! their states, as Python stores them.

use storage::btree::family_of;
use storage::{Error, Oid, Persistent, PersistentClass, Result, Value};

/// Module of wendelin's ZODB file classes.
pub const MODULE: &str = "wendelin.bigfile.file_zodb";

fn bad(oid: Oid, msg: impl Into<String>) -> Error {
    Error::BadState {
        oid,
        msg: msg.into(),
    }
}

/// `ZBigFile`: state `(blksize, blktab)`, `blktab` an LOBTree blk -> ZBlk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZBigFile {
    /// Block size in bytes.
    pub blksize: u64,
    /// Oid of the `blktab` LOBTree.
    pub blktab: Oid,
}

impl ZBigFile {
    /// Parse the state tuple.
    pub fn parse(oid: Oid, state: &Value) -> Result<ZBigFile> {
        let s = state
            .as_seq()
            .filter(|s| s.len() == 2)
            .ok_or_else(|| bad(oid, "ZBigFile state is not (blksize, blktab)"))?;
        let blksize = s[0]
            .as_int()
            .and_then(|b| u64::try_from(b).ok())
            .filter(|&b| b > 0)
            .ok_or_else(|| bad(oid, "ZBigFile blksize is not a positive int"))?;
        let blktab = s[1]
            .ref_oid()
            .ok_or_else(|| bad(oid, "ZBigFile blktab is not a reference"))?;
        if let Some(c) = s[1].ref_class()
            && !c.starts_with("BTrees.LOBTree.LOBTree")
        {
            return Err(bad(
                oid,
                format!("ZBigFile blktab is a {c}, not an LOBTree"),
            ));
        }
        Ok(ZBigFile { blksize, blktab })
    }
}

impl Persistent for ZBigFile {
    fn class_path(&self) -> (&str, &str) {
        (MODULE, "ZBigFile")
    }
    fn state(&self) -> Result<Value> {
        Ok(Value::Tuple(vec![
            Value::Int(i64::try_from(self.blksize).map_err(|_| bad(Oid(0), "blksize too large"))?),
            Value::persistent_ref(self.blktab, "BTrees.LOBTree", "LOBTree"),
        ]))
    }
}

impl PersistentClass for ZBigFile {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        if (module, name) != (MODULE, "ZBigFile") {
            return Err(bad(oid, format!("{module}.{name} is not a ZBigFile")));
        }
        ZBigFile::parse(oid, &state)
    }
}

/// A persistent class whose state is one byte string.
macro_rules! bytes_object {
    ($(#[$doc:meta])* $name:ident, $class:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The stored bytes.
            pub data: Vec<u8>,
        }

        impl Persistent for $name {
            fn class_path(&self) -> (&str, &str) {
                (MODULE, $class)
            }
            fn state(&self) -> Result<Value> {
                Ok(Value::Bytes(self.data.clone()))
            }
        }
    };
}

bytes_object!(
    /// `ZBlk0` (and the legacy `ZBlk`): the block's bytes, trailing zeros trimmed.
    ZBlk0,
    "ZBlk0"
);

/// `ZBlk1`: its state is a reference to the IOBTree offset -> ZData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZBlk1 {
    /// Oid of the chunk table (IOBTree).
    pub chunktab: Oid,
}

impl Persistent for ZBlk1 {
    fn class_path(&self) -> (&str, &str) {
        (MODULE, "ZBlk1")
    }
    fn state(&self) -> Result<Value> {
        Ok(Value::persistent_ref(
            self.chunktab,
            "BTrees.IOBTree",
            "IOBTree",
        ))
    }
}

impl PersistentClass for ZBlk1 {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        if (module, name) != (MODULE, "ZBlk1") {
            return Err(bad(oid, format!("{module}.{name} is not a ZBlk1")));
        }
        let chunktab = state
            .ref_oid()
            .ok_or_else(|| bad(oid, "ZBlk1 state is not a reference"))?;
        if let Some(c) = state.ref_class()
            && family_of("BTrees.IOBTree", c.rsplit('.').next().unwrap_or("")).is_none()
        {
            return Err(bad(oid, format!("ZBlk1 chunktab is a {c}, not an IOBTree")));
        }
        Ok(ZBlk1 { chunktab })
    }
}

bytes_object!(
    /// `ZData`: one chunk of a ZBlk1, trailing zeros trimmed.
    ZData,
    "ZData"
);

/// What a ZBlk record is, decoded from its record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZBlkRecord {
    /// ZBlk0 / legacy ZBlk with its bytes.
    ZBlk0(Vec<u8>),
    /// ZBlk1 with its chunk table oid.
    ZBlk1(Oid),
}

/// Decode a ZBlk record (class + state).
pub fn decode_zblk(oid: Oid, data: &[u8]) -> Result<ZBlkRecord> {
    let (meta, state) = storage::pickle::decode_record(data)?;
    let (m, n) = storage::pickle::class_of_meta(&meta)
        .ok_or_else(|| bad(oid, "record has no recognizable class"))?;
    match (m.as_str(), n.as_str()) {
        (MODULE, "ZBlk0" | "ZBlk") => match state {
            Value::Bytes(b) | Value::Py2Str(b) => Ok(ZBlkRecord::ZBlk0(b)),
            _ => Err(bad(oid, "ZBlk0 state is not a byte string")),
        },
        (MODULE, "ZBlk1") => Ok(ZBlkRecord::ZBlk1(
            ZBlk1::from_state(oid, &m, &n, state)?.chunktab,
        )),
        _ => Err(bad(oid, format!("{m}.{n} is not a ZBlk class"))),
    }
}

/// Decode a ZData record into its bytes.
pub fn decode_zdata(oid: Oid, data: &[u8]) -> Result<Vec<u8>> {
    let (meta, state) = storage::pickle::decode_record(data)?;
    match storage::pickle::class_of_meta(&meta) {
        Some((m, n)) if m == MODULE && n == "ZData" => match state {
            Value::Bytes(b) | Value::Py2Str(b) => Ok(b),
            _ => Err(bad(oid, "ZData state is not a byte string")),
        },
        Some((m, n)) => Err(bad(oid, format!("chunk is a {m}.{n}, not a ZData"))),
        None => Err(bad(oid, "record has no recognizable class")),
    }
}

/// Where the byte payload of a ZBlk0/ZBlk/ZData record lies, from the
/// record's first bytes `head`: `Some((offset, len))` if the record is one
/// of `classes` and its state pickle is a plain byte string
/// ([`storage::pickle::bytes_state_layout`]). The pickle must then end right
/// after the payload with [`is_payload_tail`] bytes.
pub fn payload_layout(head: &[u8], classes: &[&str]) -> Option<(usize, u64)> {
    let l = storage::pickle::bytes_state_layout(head)?;
    (l.module == MODULE && classes.contains(&l.name.as_str())).then_some((l.offset, l.len))
}

/// True for what may follow a payload up to the end of the record
/// ([`storage::pickle::is_bytes_state_tail`]).
pub fn is_payload_tail(t: &[u8]) -> bool {
    storage::pickle::is_bytes_state_tail(t)
}

/// The byte payload of a whole ZBlk0/ZBlk/ZData record without decoding it
/// into a value tree (no copy); `None` if the record is not of that plain
/// form (the caller then decodes it generically).
pub fn fast_payload<'a>(data: &'a [u8], classes: &[&str]) -> Option<&'a [u8]> {
    let (l, payload) = storage::pickle::bytes_state(data)?;
    (l.module == MODULE && classes.contains(&l.name.as_str())).then_some(payload)
}
