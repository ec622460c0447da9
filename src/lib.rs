#![doc = include_str!("../README.md")]
//!
//! This crate re-exports the layers (`storage`, `virtmem`, `bigfile`,
//! `bigarray`) and holds the code of the `wendelin` command.

pub use bigarray;
pub use bigfile;
pub use storage;
pub use virtmem;

pub mod arraycmd;
pub mod demo;
pub mod filecmd;
pub mod fsdump;
