//! Fuzz the FileStorage reader: any file must open read-only or fail with an
//! error, and everything it indexed must load or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::{FileStorage, Oid, Storage, Tid};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("f.fs");
    // Seeds are real files; give the fuzzer the magic for free half the time.
    let mut bytes = Vec::with_capacity(data.len() + 4);
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(b"FS30");
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
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
