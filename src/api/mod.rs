//! The front door: what a Rust user of this crate needs, in one place.
//!
//! ```text
//! wendelin::open(url) -> Db            the database (a path, file://...)
//! Db::open() -> Connection             newest snapshot, with its own transaction
//! Db::open_at(tid) -> Connection       a read-only snapshot (time travel)
//! Connection::create_array / array / remove / names
//! Connection::commit() -> Tid          durable; the transaction's tid
//! Connection::abort() / sync()         transaction boundaries
//! ```
//!
//! A [`Connection`] pairs a storage connection with its own transaction
//! manager, so arrays open by name with nothing else to carry around, and
//! the connection's boundaries (commit, abort, sync) are one call each. The
//! per-crate API (`storage`, `bigfile`, `bigarray`, `virtmem`) stays
//! available for anything beyond this: several connections in one
//! transaction, BTrees, raw files.
//!
//! The RAM budget comes from one place: [`Options::ram_budget`] when given,
//! else `$WENDELIN_RAM_BUDGET`, else half of physical RAM (the engine's
//! default, `virtmem::budget::default_budget`). It is process-wide, like
//! the page cache it replaces.
//!
//! Misuse that used to hang now fails with an error naming it: a commit,
//! abort or sync inside a view (the views would change under the closure),
//! a mutable view inside a view of the same array, a write through a
//! read-only snapshot.

mod connection;
mod db;
mod error;
pub mod history;

pub use connection::Connection;
pub use db::{Db, Options, open, open_with};
pub use error::Error;
