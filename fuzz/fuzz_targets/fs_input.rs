//! Shared by the targets that read a whole file: the fuzz input written as
//! a FileStorage file in a fresh directory.

/// Writes `data` to `<tmpdir>/f.fs`; seeds are real files, so half the time
/// (first byte odd) the fuzzer gets the `FS30` magic for free.
pub fn write_fs(data: &[u8]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("f.fs");
    let mut bytes = Vec::with_capacity(data.len() + 4);
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(b"FS30");
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    std::fs::write(&path, &bytes).ok()?;
    Some((dir, path))
}
