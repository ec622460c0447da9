//! wendelin: out-of-core arrays over a ZODB-compatible transactional object database.
//!
//! This crate re-exports the layers: [`storage`], [`virtmem`], [`bigfile`], [`bigarray`].

pub use bigarray;
pub use bigfile;
pub use storage;
pub use virtmem;

pub mod fsdump;
