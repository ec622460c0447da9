//! Fuzz the FileStorage reader: any file must open read-only or fail with an
//! error, and everything it indexed must load or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "fs_input.rs"]
mod fs_input;
use storage::{FileStorage, Oid, Storage, Tid};

fuzz_target!(|data: &[u8]| {
    let Some((_dir, path)) = fs_input::write_fs(data) else { return };
    let Ok(fs) = FileStorage::open_read_only(&path) else { return };
    if let Ok(it) = fs.iter_txns(Tid::ZERO, Tid::MAX) {
        for t in it {
            let Ok(t) = t else { break };
            for r in t.records {
                let _ = fs.load_before(r.oid, t.tid.successor());
                let _ = fs.load_serial(r.oid, t.tid);
            }
        }
    }
    for o in 0..4 {
        let _ = fs.load(Oid(o));
    }
    let _ = fs.changed_oids(Tid::ZERO, Tid::MAX);
    for t in fs.raw_transactions() {
        let Ok(t) = t else { break };
        for r in &t.records {
            let _ = fs.raw_record_data(&r.header);
        }
    }
});
