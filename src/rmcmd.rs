//! `wendelin rm DB NAME`: remove a root entry in a new transaction.
//!
//! Only the name goes; the objects it named stay in the file, reachable
//! from the history, until a pack drops what nothing reaches any more.

use storage::{DB, TransactionManager};

/// Remove `name` from the root of `db`; an error if there is no such entry.
pub fn rm(db: &str, name: &str) -> Result<(), String> {
    let e = |e: storage::Error| e.to_string();
    if !db.contains("://") && !std::path::Path::new(db).exists() {
        return Err(format!("{db}: no such database"));
    }
    let db = DB::open(db).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    if c.root_mut().map_err(e)?.remove(name).is_none() {
        tm.abort();
        return Err(format!("{name}: no such entry in the root"));
    }
    tm.note(&format!("wendelin rm {name}"));
    tm.commit().map_err(e)
}
