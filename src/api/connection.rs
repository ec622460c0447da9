//! [`Connection`]: a snapshot of the database with its own transaction.
//!
//! A connection sees one snapshot until its next transaction boundary:
//! [`Connection::commit`] (durable, returns the tid), [`Connection::abort`]
//! (drops every uncommitted change, of arrays too) or [`Connection::sync`]
//! (moves to the newest snapshot). At each boundary exactly what other
//! transactions changed is invalidated, down to the blocks of open arrays.
//! Arrays live in the database root under a name, as wendelin.core keeps
//! them (`root["A"] = ZBigArray`), so Python sees the same names.
//!
//! A connection opened at a past tid ([`crate::Db::open_at`]) is
//! read-only: arrays open on it without a transaction, and every change,
//! including a mutable view, fails at once instead of at commit.

use super::Error;
use bigarray::{Element, Order, ZBigArray};
use storage::{Tid, TransactionManager, Value};

/// A connection to the database with its own transaction (see the module
/// docs). Cheap to share between threads by reference; arrays opened from
/// it are `Send + Sync`.
pub struct Connection {
    conn: storage::Connection,
    /// None: read-only (historical or read-only database).
    tm: Option<TransactionManager>,
    db: String,
    handle: bigfile::HandleOptions,
}

impl Connection {
    pub(super) fn new(
        conn: storage::Connection,
        tm: Option<TransactionManager>,
        db: String,
        handle: bigfile::HandleOptions,
    ) -> Connection {
        Connection {
            conn,
            tm,
            db,
            handle,
        }
    }

    /// Is this connection read-only (a past snapshot or a read-only database)?
    pub fn is_read_only(&self) -> bool {
        self.tm.is_none()
    }

    /// The snapshot this connection sees.
    pub fn at(&self) -> Tid {
        self.conn.at()
    }

    fn writable(&self, what: &str) -> Result<&TransactionManager, Error> {
        self.tm.as_ref().ok_or_else(|| Error::ReadOnly {
            what: what.to_owned(),
            at: self.conn.at(),
        })
    }

    fn outside_views(what: &str) -> Result<(), Error> {
        if bigfile::views_held_by_this_thread() {
            return Err(Error::InsideView {
                what: what.to_owned(),
            });
        }
        Ok(())
    }

    /// Create a zero-filled array of `shape` and `order` under `name` in
    /// the database root (stored at the next commit; O(1) whatever its
    /// size). An existing `name` is an error.
    pub fn create_array<T: Element>(
        &self,
        name: &str,
        shape: &[usize],
        order: Order,
    ) -> Result<ZBigArray<T>, Error> {
        let tm = self.writable(&format!("create_array({name:?})"))?;
        if self.conn.root()?.get(name).is_some() {
            return Err(Error::Exists {
                db: self.db.clone(),
                name: name.to_owned(),
            });
        }
        let a = ZBigArray::<T>::create(&self.conn, tm, shape, order, self.handle.clone())?;
        let r = self.conn.ref_to(a.oid())?;
        self.conn.root_mut()?.insert(name, r);
        Ok(a)
    }

    /// Open the array `name` of the database root as elements `T` (its
    /// dtype must be `T`'s, native byte order). On a read-only connection
    /// the array is read-only.
    pub fn array<T: Element>(&self, name: &str) -> Result<ZBigArray<T>, Error> {
        let oid = self
            .conn
            .root()?
            .get(name)
            .and_then(Value::ref_oid)
            .ok_or_else(|| Error::NoSuchName {
                db: self.db.clone(),
                name: name.to_owned(),
            })?;
        let (module, class) = self.conn.class_of(oid)?;
        if (module.as_str(), class.as_str()) != (bigarray::array::MODULE, "ZBigArray") {
            return Err(Error::NotAnArray {
                db: self.db.clone(),
                name: name.to_owned(),
                class: format!("{module}.{class}"),
            });
        }
        let stored = bigarray::open_untyped(&self.conn, oid)?.dtype;
        let requested = T::dtype();
        if stored != requested {
            return Err(Error::DType {
                name: name.to_owned(),
                oid,
                stored: stored.str(),
                requested: requested.str(),
            });
        }
        Ok(match &self.tm {
            Some(tm) => ZBigArray::<T>::open(&self.conn, tm, oid, self.handle.clone())?,
            None => ZBigArray::<T>::open_read_only(&self.conn, oid, self.handle.clone())?,
        })
    }

    /// Remove the root entry `name` (in the current transaction; pack
    /// reclaims the data of an array no longer referenced).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        self.writable(&format!("remove({name:?})"))?;
        match self.conn.root_mut()?.remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::NoSuchName {
                db: self.db.clone(),
                name: name.to_owned(),
            }),
        }
    }

    /// The names in the database root.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        Ok(self.conn.root()?.keys().map(str::to_owned).collect())
    }

    /// Is `name` in the database root?
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        Ok(self.conn.root()?.get(name).is_some())
    }

    /// Set the description of the current transaction (shown by `wendelin
    /// log` and ZODB's tools).
    pub fn note(&self, text: &str) -> Result<(), Error> {
        self.writable("note")?.note(text);
        Ok(())
    }

    /// Commit the current transaction: durable when this returns; returns
    /// its tid (the current snapshot's tid when nothing changed). A
    /// conflict aborts the transaction ([`Error::is_conflict`]); the
    /// connection stays usable.
    pub fn commit(&self) -> Result<Tid, Error> {
        Self::outside_views("commit")?;
        let tm = self.writable("commit")?;
        tm.commit()?;
        Ok(tm.last_committed().unwrap_or_else(|| self.conn.at()))
    }

    /// Abort the current transaction: every uncommitted change (objects,
    /// dirty and spilled blocks of arrays) is dropped; the connection moves
    /// to the newest snapshot. Inside a view it does nothing but log an
    /// error (the view's pages cannot be dropped under it): see
    /// [`Connection::try_abort`].
    pub fn abort(&self) {
        if let Err(e) = self.try_abort() {
            tracing::error!(error = %e, "abort refused");
        }
    }

    /// [`Connection::abort`], with misuse as an error.
    pub fn try_abort(&self) -> Result<(), Error> {
        Self::outside_views("abort")?;
        if let Some(tm) = &self.tm {
            tm.abort();
        }
        Ok(())
    }

    /// Move to the newest snapshot now (a transaction boundary; fails with
    /// uncommitted changes). A read-only connection stays at its snapshot.
    pub fn sync(&self) -> Result<(), Error> {
        Self::outside_views("sync")?;
        Ok(self.conn.sync()?)
    }

    /// The storage connection underneath (for the per-crate API).
    pub fn inner(&self) -> &storage::Connection {
        &self.conn
    }

    /// The options arrays opened from now on get (block format, virtmem
    /// options such as zero-copy loads): for bindings that lend the mapping
    /// to code outside Rust's borrow rules.
    pub fn handle_options_mut(&mut self) -> &mut bigfile::HandleOptions {
        &mut self.handle
    }

    /// The transaction manager of this connection (None when read-only).
    pub fn transaction_manager(&self) -> Option<&TransactionManager> {
        self.tm.as_ref()
    }
}
