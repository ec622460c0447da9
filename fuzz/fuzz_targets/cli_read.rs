//! Fuzz a whole database through the CLI's read path: `ls`, then `stat` and
//! `export` of every array it lists. Any file must give results or errors,
//! never a crash (a SIGBUS from a damaged block would be one).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "fs_input.rs"]
mod fs_input;

fuzz_target!(|data: &[u8]| {
    let Some((dir, path)) = fs_input::write_fs(data) else { return };
    let Some(db) = path.to_str() else { return };
    let Ok(entries) = wendelin::arraycmd::ls(db, None) else { return };
    for e in entries {
        if e.shape.is_some() && e.disk_bytes.is_some_and(|n| n < 64 << 20) {
            let _ = wendelin::arraycmd::stat(db, &e.name, None);
            let _ = wendelin::arraycmd::export(db, &e.name, &dir.path().join("o.npy"), None, None);
        }
        let _ = wendelin::filecmd::info(db, &e.name, None);
    }
});
