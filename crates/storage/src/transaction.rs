//! Transactions, ZODB-shaped: a [`TransactionManager`] drives two-phase commit
//! across every [`DataManager`] that joined the current transaction.
//!
//! Order of a commit: before-commit hooks run (they may change objects and
//! join more data managers), then every data manager, sorted by
//! [`DataManager::sort_key`] (an explicit [`CommitPhase`] first, then an
//! id), gets `tpc_begin`, `commit`, `tpc_vote` and
//! finally `tpc_finish`. A failure in any phase before finish calls
//! `tpc_abort` on every joined data manager and returns the error. After
//! every commit or abort the registered [`Synchronizer`]s are told, which is
//! how connections move to the newest snapshot at transaction boundaries.

use crate::error::{Error, Result};
use crate::storage::TxnMeta;
use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// Where a data manager commits among the others of one transaction. The
/// order is explicit rather than an accident of key spelling: a data
/// manager that stores records through a connection's storage transaction
/// (a ZBigFile handle storing its blocks, and the blktab nodes it changes)
/// must run its `commit` before that connection writes its modified objects
/// and votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitPhase {
    /// Stores through a connection (file handles): before connections.
    BeforeConnection,
    /// Connections: write modified objects, vote, finish.
    Connection,
    /// Anything else (after the connections).
    Other,
}

/// The order of a data manager in a commit: by phase, then by id (which
/// makes the order deterministic among equals, as ZODB's sortKey does).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    /// The phase.
    pub phase: CommitPhase,
    /// A stable id within the phase.
    pub id: String,
}

/// A participant in two-phase commit (ZODB's `IDataManager`). Methods take
/// `&self`: implementations use interior mutability, so that hooks and other
/// code may reach them while the manager drives a commit.
pub trait DataManager: Send + Sync {
    /// Data managers commit in ascending order of this key.
    fn sort_key(&self) -> SortKey;
    /// Abort outside two-phase commit: drop uncommitted changes.
    fn abort(&self, txn: &TxnMeta) -> Result<()>;
    /// Start two-phase commit.
    fn tpc_begin(&self, txn: &TxnMeta) -> Result<()>;
    /// Write the changes (they are not yet visible).
    fn commit(&self, txn: &TxnMeta) -> Result<()>;
    /// Last chance to refuse: after a successful vote, finish must succeed.
    fn tpc_vote(&self, txn: &TxnMeta) -> Result<()>;
    /// Make the changes durable and visible.
    fn tpc_finish(&self, txn: &TxnMeta) -> Result<()>;
    /// Undo everything done since `tpc_begin` (also called if it failed).
    fn tpc_abort(&self, txn: &TxnMeta);
    /// After `tpc_finish`: the tid this data manager's storage committed
    /// the transaction as (None if it wrote nothing).
    fn committed_tid(&self) -> Option<crate::Tid> {
        None
    }
}

/// Told about transaction boundaries (ZODB's `ISynchronizer`).
pub trait Synchronizer: Send + Sync {
    /// The transaction ended (committed: `committed == true`, or aborted).
    fn after_completion(&self, committed: bool);
}

type Hook = Box<dyn FnOnce() -> Result<()> + Send>;

#[derive(Default)]
struct State {
    meta: TxnMeta,
    resources: Vec<Arc<dyn DataManager>>,
    hooks: Vec<Hook>,
    /// The tid of the last successful commit that wrote something.
    last_committed: Option<crate::Tid>,
}

/// Drives transactions for a set of data managers. Cheap to clone (a handle).
#[derive(Clone, Default)]
pub struct TransactionManager {
    state: Arc<Mutex<State>>,
    synchronizers: Arc<Mutex<Vec<Weak<dyn Synchronizer>>>>,
}

/// A weak handle on a [`TransactionManager`]: data managers that join its
/// transactions keep one, so that the manager (whose current transaction
/// holds the data managers) and they do not keep each other alive.
#[derive(Clone, Default)]
pub struct WeakTransactionManager {
    state: Weak<Mutex<State>>,
    synchronizers: Weak<Mutex<Vec<Weak<dyn Synchronizer>>>>,
}

impl WeakTransactionManager {
    /// The manager, if any handle on it is still alive.
    pub fn upgrade(&self) -> Option<TransactionManager> {
        Some(TransactionManager {
            state: self.state.upgrade()?,
            synchronizers: self.synchronizers.upgrade()?,
        })
    }
}

impl std::fmt::Debug for TransactionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("TransactionManager")
            .field("meta", &s.meta)
            .field("joined", &s.resources.len())
            .finish()
    }
}

impl TransactionManager {
    /// A new manager with an empty current transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// A weak handle (does not keep the manager alive).
    pub fn downgrade(&self) -> WeakTransactionManager {
        WeakTransactionManager {
            state: Arc::downgrade(&self.state),
            synchronizers: Arc::downgrade(&self.synchronizers),
        }
    }

    /// Add `dm` to the current transaction (no-op if it already joined).
    pub fn join(&self, dm: Arc<dyn DataManager>) {
        let mut s = self.state.lock();
        if !s.resources.iter().any(|r| Arc::ptr_eq(r, &dm)) {
            s.resources.push(dm);
        }
    }

    /// Number of data managers joined to the current transaction.
    pub fn joined(&self) -> usize {
        self.state.lock().resources.len()
    }

    /// Append to the transaction description (lines joined by `\n`, like ZODB's `note`).
    pub fn note(&self, text: &str) {
        let mut s = self.state.lock();
        if !s.meta.description.is_empty() {
            s.meta.description.push(b'\n');
        }
        s.meta.description.extend_from_slice(text.as_bytes());
    }

    /// Set the transaction user (ZODB stores `"<path> <user>"`; pass what you want stored).
    pub fn set_user(&self, user: &str) {
        self.state.lock().meta.user = user.as_bytes().to_vec();
    }

    /// Set the raw extension bytes (empty, or a pickled dict).
    pub fn set_extension(&self, ext: Vec<u8>) {
        self.state.lock().meta.extension = ext;
    }

    /// Run `hook` at the start of the next commit, before two-phase commit
    /// begins. Hooks may modify objects and join data managers.
    pub fn add_before_commit_hook(&self, hook: impl FnOnce() -> Result<()> + Send + 'static) {
        self.state.lock().hooks.push(Box::new(hook));
    }

    /// Be told about transaction boundaries while `s` is alive.
    pub fn register_synchronizer(&self, s: Weak<dyn Synchronizer>) {
        let mut v = self.synchronizers.lock();
        v.retain(|w| w.strong_count() > 0);
        v.push(s);
    }

    fn notify(&self, committed: bool) {
        let live: Vec<Arc<dyn Synchronizer>> = {
            let mut v = self.synchronizers.lock();
            v.retain(|w| w.strong_count() > 0);
            v.iter().filter_map(Weak::upgrade).collect()
        };
        for s in live {
            s.after_completion(committed);
        }
    }

    /// Commit the current transaction. On error every joined data manager
    /// was aborted and the transaction is over (the next one starts clean).
    pub fn commit(&self) -> Result<()> {
        let r = self.commit_inner();
        self.notify(r.is_ok());
        r
    }

    fn commit_inner(&self) -> Result<()> {
        // Hooks run first; they may add more hooks and join resources.
        loop {
            let hooks = std::mem::take(&mut self.state.lock().hooks);
            if hooks.is_empty() {
                break;
            }
            for h in hooks {
                if let Err(e) = h() {
                    self.abort_state();
                    return Err(e);
                }
            }
        }
        let State {
            meta, resources, ..
        } = std::mem::take(&mut *self.state.lock());
        self.state.lock().last_committed = None;
        let mut rs = resources;
        rs.sort_by_key(|r| r.sort_key());
        let two_phase = || -> Result<()> {
            for r in &rs {
                r.tpc_begin(&meta)?;
            }
            for r in &rs {
                r.commit(&meta)?;
            }
            for r in &rs {
                r.tpc_vote(&meta)?;
            }
            Ok(())
        };
        if let Err(e) = two_phase() {
            for r in &rs {
                r.tpc_abort(&meta);
            }
            return Err(e);
        }
        let mut first_err = None;
        for r in &rs {
            if let Err(e) = r.tpc_finish(&meta) {
                tracing::error!(error = %e, "tpc_finish failed after a successful vote");
                first_err.get_or_insert(e);
            }
        }
        self.state.lock().last_committed = rs.iter().find_map(|r| r.committed_tid());
        match first_err {
            None => Ok(()),
            Some(e) => Err(Error::Protocol(format!(
                "transaction partially finished (a data manager failed in tpc_finish): {e}"
            ))),
        }
    }

    fn abort_state(&self) {
        let State {
            meta, resources, ..
        } = std::mem::take(&mut *self.state.lock());
        for r in &resources {
            if let Err(e) = r.abort(&meta) {
                tracing::warn!(error = %e, "data manager failed to abort");
            }
        }
    }

    /// The tid of the last commit through this manager that wrote
    /// something (None after an empty commit or before any).
    pub fn last_committed(&self) -> Option<crate::Tid> {
        self.state.lock().last_committed
    }

    /// Abort the current transaction: every joined data manager drops its
    /// uncommitted changes.
    pub fn abort(&self) {
        self.abort_state();
        self.notify(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Records the calls it gets.
    struct Rec {
        key: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail_in: Option<&'static str>,
    }

    impl Rec {
        fn call(&self, phase: &str) -> Result<()> {
            self.log.lock().push(format!("{}:{phase}", self.key));
            if self.fail_in == Some(phase) {
                return Err(Error::Protocol(format!("{} refuses {phase}", self.key)));
            }
            Ok(())
        }
    }

    impl DataManager for Rec {
        fn sort_key(&self) -> SortKey {
            let phase = if self.key.starts_with("file") {
                CommitPhase::BeforeConnection
            } else if self.key.starts_with("conn") {
                CommitPhase::Connection
            } else {
                CommitPhase::Other
            };
            SortKey {
                phase,
                id: self.key.into(),
            }
        }
        fn abort(&self, _: &TxnMeta) -> Result<()> {
            self.call("abort")
        }
        fn tpc_begin(&self, _: &TxnMeta) -> Result<()> {
            self.call("begin")
        }
        fn commit(&self, _: &TxnMeta) -> Result<()> {
            self.call("commit")
        }
        fn tpc_vote(&self, _: &TxnMeta) -> Result<()> {
            self.call("vote")
        }
        fn tpc_finish(&self, m: &TxnMeta) -> Result<()> {
            assert_eq!(m.description, b"hello\nworld");
            self.call("finish")
        }
        fn tpc_abort(&self, _: &TxnMeta) {
            let _ = self.call("tpc_abort");
        }
    }

    struct Sync(AtomicBool);
    impl Synchronizer for Sync {
        fn after_completion(&self, committed: bool) {
            self.0.store(committed, Ordering::SeqCst);
        }
    }

    #[test]
    fn two_phase_commit_in_sort_key_order_with_hooks() {
        let tm = TransactionManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let b: Arc<dyn DataManager> = Arc::new(Rec {
            key: "b",
            log: log.clone(),
            fail_in: None,
        });
        tm.join(b.clone());
        tm.join(b);
        let tm2 = tm.clone();
        let log2 = log.clone();
        tm.add_before_commit_hook(move || {
            log2.lock().push("hook".into());
            tm2.join(Arc::new(Rec {
                key: "a",
                log: log2.clone(),
                fail_in: None,
            }));
            Ok(())
        });
        tm.note("hello");
        tm.note("world");
        let s = Arc::new(Sync(AtomicBool::new(false)));
        let w: Weak<dyn Synchronizer> = Arc::downgrade(&(s.clone() as Arc<dyn Synchronizer>));
        tm.register_synchronizer(w);
        tm.commit().expect("commit");
        assert!(s.0.load(Ordering::SeqCst));
        assert_eq!(
            *log.lock(),
            [
                "hook", "a:begin", "b:begin", "a:commit", "b:commit", "a:vote", "b:vote",
                "a:finish", "b:finish"
            ]
        );
        assert_eq!(tm.joined(), 0, "the next transaction starts empty");
    }

    #[test]
    fn a_failing_vote_aborts_every_data_manager() {
        let tm = TransactionManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (key, fail_in) in [("a", None), ("b", Some("vote"))] {
            tm.join(Arc::new(Rec {
                key,
                log: log.clone(),
                fail_in,
            }));
        }
        let e = tm.commit().expect_err("vote fails");
        assert!(e.to_string().contains("b refuses vote"));
        let l = log.lock().clone();
        assert!(
            l.ends_with(&["a:tpc_abort".to_string(), "b:tpc_abort".to_string()]),
            "{l:?}"
        );
        assert!(!l.iter().any(|x| x.ends_with("finish")));
        // a failing hook aborts (plain abort) too
        log.lock().clear();
        tm.join(Arc::new(Rec {
            key: "c",
            log: log.clone(),
            fail_in: None,
        }));
        tm.add_before_commit_hook(|| Err(Error::Protocol("hook failed".into())));
        assert!(tm.commit().is_err());
        assert_eq!(*log.lock(), ["c:abort"]);
    }

    #[test]
    fn commit_order_is_the_phase_then_the_id() {
        let tm = TransactionManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        // Alphabetically "a-other" < "conn" < "file"; by phase the file
        // handle commits first, then the connection, then the others.
        for key in ["a-other", "conn", "file"] {
            tm.join(Arc::new(Rec {
                key,
                log: log.clone(),
                fail_in: None,
            }));
        }
        tm.note("hello\nworld");
        tm.commit().expect("commit");
        let commits: Vec<String> = log
            .lock()
            .iter()
            .filter(|l| l.ends_with(":commit"))
            .cloned()
            .collect();
        assert_eq!(commits, ["file:commit", "conn:commit", "a-other:commit"]);
    }
}
