#![doc = include_str!("../README.md")]
//!
//! # The crate
//!
//! The front door ([`open`], [`Db`], [`Connection`], [`ZBigArray`]) is all
//! most users need; `ndarray` is re-exported so that its version always
//! matches. The layers underneath are re-exported for advanced use
//! ([`storage`], [`virtmem`], [`bigfile`], [`bigarray`]), and the modules
//! of the `wendelin` command live here too.

#![forbid(unsafe_code)]

mod api;

pub use api::{Connection, Db, Error, Options, history, open, open_with};
pub use bigarray::{B1, DType, Element, Order, Real, Stats, ZBigArray};
pub use bigfile::ZBlkFormat;
pub use ndarray;
pub use storage::{Oid, Tid};

pub use bigarray;
pub use bigfile;
pub use storage;
pub use virtmem;

pub mod arraycmd;
pub mod demo;
pub mod filecmd;
pub mod fsdump;
#[doc(hidden)]
pub mod stdout;
