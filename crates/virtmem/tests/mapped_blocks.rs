//! Blocks mapped straight from their file (`BigFile::map_block`, here a
//! `FileBigFile` with mapping on): reads are exact and cost no copy, the
//! budget bounds what a scan keeps mapped, a mutable view puts them back
//! to registered anonymous memory (so writes are tracked exactly), and
//! invalidation reloads them from the file's new bytes.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use virtmem::{BigFile, FileBigFile, FileH, Options, Writeout};

const BS: usize = 2 << 20;

fn pat(blk: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| ((i / 8) as u64 ^ blk.wrapping_mul(0x9E37_79B9)) as u8)
        .collect()
}

fn file(dir: &tempfile::TempDir, n: u64) -> (std::path::PathBuf, Arc<FileBigFile>) {
    let path = dir.path().join("blocks");
    let f = FileBigFile::open(&path, BS).unwrap().with_mapping(true);
    for b in 0..n {
        f.file().write_all_at(&pat(b), b * BS as u64).unwrap();
    }
    (path, Arc::new(f))
}

fn open(f: &Arc<FileBigFile>, n: u64, budget_blocks: u64, readahead: bool) -> FileH {
    let opts = Options {
        reserve: n * BS as u64,
        budget: Some(budget_blocks * BS as u64),
        readahead,
        ..Options::default()
    };
    FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap()
}

/// A handle on a fresh file of `n` blocks with mapping on, or `None` (said
/// on stderr) where zero-copy, hence mapping, is unavailable.
fn mapped_handle(
    n: u64,
    budget_blocks: u64,
) -> Option<(tempfile::TempDir, Arc<FileBigFile>, FileH)> {
    mapped_handle_with(n, budget_blocks, true)
}

/// As `mapped_handle`, read-ahead on or off. Read-ahead leaves the blocks it
/// loads as markers (unmapped), and which blocks it reaches before their
/// fault depends on timing: a test that counts mapped blocks turns it off.
fn mapped_handle_with(
    n: u64,
    budget_blocks: u64,
    readahead: bool,
) -> Option<(tempfile::TempDir, Arc<FileBigFile>, FileH)> {
    let dir = tempfile::tempdir().unwrap();
    let (_, f) = file(&dir, n);
    let fh = open(&f, n, budget_blocks, readahead);
    if !fh.zero_copy() {
        eprintln!("zero-copy unavailable here (no UFFDIO_MOVE or THP): blocks are not mapped");
        return None;
    }
    Some((dir, f, fh))
}

fn off(b: u64) -> u64 {
    b * BS as u64
}

/// Read blocks `0..n` one by one, checking their bytes and that the budget
/// of `budget_blocks` holds after each.
fn scan_within_budget(fh: &FileH, n: u64, budget_blocks: u64) {
    for b in 0..n {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b}");
        // A handler thread adds a block before evicting one: a block of
        // slack per handler thread.
        let slack = Options::default().threads as u64;
        assert!(
            fh.budget().used() <= (budget_blocks + slack) * BS as u64,
            "budget {} after block {b}",
            fh.budget().used()
        );
    }
}

#[test]
fn a_scan_maps_blocks_and_keeps_within_the_budget() {
    let n = 64u64;
    let Some((_dir, _f, fh)) = mapped_handle(n, 8) else {
        return;
    };
    scan_within_budget(&fh, n, 8);
    let st = fh.stats();
    assert!(st.mapped_loads >= n - 2, "{st:?}");
    assert_eq!(st.moved_loads, 0, "{st:?}");
    // Twice, backwards: blocks whose pages were dropped read the same.
    for b in (0..n).rev() {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b} again");
    }
    assert!(fh.load_errors().is_empty());
}

/// How many of the first `len` bytes' pages of `f` are in the page cache
/// (`mincore` through a mapping made for this: it reads nothing).
fn pages_cached(f: &std::fs::File, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: a new private read-only mapping of our own file, at an
    // address of the kernel's choosing, never read, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let mut v = vec![0u8; len.div_ceil(4096)];
    // SAFETY: one byte per page of the mapping just made, into `v`.
    let rc = unsafe { libc::mincore(p, len, v.as_mut_ptr()) };
    // SAFETY: exactly the mapping made above.
    unsafe { libc::munmap(p, len) };
    assert_eq!(rc, 0);
    v.iter().filter(|&&b| b & 1 == 1).count()
}

#[test]
fn a_cold_file_is_read_ahead_in_order_and_reads_exact() {
    use std::os::fd::AsRawFd;
    // On the crate's own file system: /tmp may be tmpfs, whose pages
    // cannot be dropped.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let n = 48u64;
    let (_, f) = file(&dir, n);
    f.file().sync_all().unwrap();
    // SAFETY: advice on our own open file; it changes no content.
    let rc = unsafe { libc::posix_fadvise(f.file().as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    if pages_cached(f.file(), off(n) as usize) > 0 {
        eprintln!("the file's pages stay cached here: no cold read to test");
        return;
    }
    let mut fh = open(&f, n, 16, true);
    if !fh.zero_copy() {
        eprintln!("zero-copy unavailable here: blocks are not mapped");
        return;
    }
    scan_within_budget(&fh, n, 16);
    let st = fh.stats();
    // Read-ahead found the file cold and read it in turn.
    assert!(st.read_in_order > 0, "{st:?}");
    assert!(st.mapped_loads > 0, "{st:?}");
    assert!(fh.load_errors().is_empty());
    // Read again, backwards, from what the first pass left cached: a new
    // stream, which finds the file warm and reads nothing in turn (the
    // blocks whose pages were dropped first go back to the engine, so they
    // load again).
    fh.unmap_dropped().unwrap();
    let (in_order, mapped) = (st.read_in_order, st.mapped_loads);
    for b in (0..n).rev() {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b} again");
    }
    let st = fh.stats();
    assert!(st.mapped_loads > mapped + n / 2, "loaded again: {st:?}");
    assert_eq!(st.read_in_order, in_order, "{st:?}");
    assert!(fh.load_errors().is_empty());
}

#[test]
fn a_mutable_view_unmaps_and_writes_are_tracked() {
    let n = 6u64;
    let Some((_dir, f, mut fh)) = mapped_handle_with(n, 64, false) else {
        return;
    };
    // Map every block.
    {
        let v = fh.bytes(0..off(n)).unwrap();
        for b in 0..n {
            assert!(v[off(b) as usize..off(b + 1) as usize] == pat(b)[..]);
        }
    }
    assert!(fh.stats().mapped_loads >= n - 1, "{:?}", fh.stats());
    assert_eq!(fh.resident_blocks() as u64, n);
    // A mutable view: blocks go back to anonymous memory and reload; only
    // the written blocks are dirty, and their stores hold the writes.
    {
        let mut v = fh.bytes_mut(off(1)..off(5)).unwrap();
        v[10] = 0xEE;
        v[3 * BS + 77] = 0xDD;
    }
    assert_eq!(fh.dirty_blocks(), vec![1, 4]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    let mut b1 = pat(1);
    b1[10] = 0xEE;
    let mut b4 = pat(4);
    b4[77] = 0xDD;
    let mut got = vec![0u8; BS];
    f.file().read_exact_at(&mut got, off(1)).unwrap();
    assert!(got == b1);
    f.file().read_exact_at(&mut got, off(4)).unwrap();
    assert!(got == b4);
    // Shared views again (blocks map again), then writes once more.
    let v = fh.bytes(0..off(n)).unwrap().to_vec();
    assert!(v[off(1) as usize..off(2) as usize] == b1[..]);
    assert!(v[off(4) as usize..off(5) as usize] == b4[..]);
    fh.bytes_mut(off(2) + 5..off(2) + 6).unwrap()[0] ^= 1;
    assert_eq!(fh.dirty_blocks(), vec![2]);
    assert!(fh.load_errors().is_empty());
}

#[test]
fn invalidation_reloads_a_mapped_block_from_new_bytes() {
    let n = 4u64;
    let Some((_dir, f, mut fh)) = mapped_handle(n, 64) else {
        return;
    };
    assert!(fh.bytes(off(2)..off(3)).unwrap()[..] == pat(2)[..]);
    assert!(fh.stats().mapped_loads >= 1);
    // Someone else commits new bytes for block 2: the handle is told.
    fh.invalidate(2).unwrap();
    let new = vec![0x42u8; BS];
    f.file().write_all_at(&new, off(2)).unwrap();
    assert!(fh.bytes(off(2)..off(3)).unwrap()[..] == new[..]);
    assert!(fh.bytes(off(1)..off(2)).unwrap()[..] == pat(1)[..]);
    // Invalidated while mapped, then written: tracked.
    fh.invalidate(1).unwrap();
    fh.bytes_mut(off(1)..off(1) + 1).unwrap()[0] = 9;
    assert_eq!(fh.dirty_blocks(), vec![1]);
}

#[test]
fn two_threads_scan_mapped_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let n = 48u64;
    let (_, f) = file(&dir, n);
    let fh = open(&f, n, 12, true);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let fh = &fh;
            s.spawn(move || {
                for b in (t * n / 2)..((t + 1) * n / 2) {
                    let v = fh.bytes(off(b)..off(b + 1)).unwrap();
                    assert!(v[..] == pat(b)[..], "thread {t} block {b}");
                }
            });
        }
    });
    assert!(fh.load_errors().is_empty());
    if fh.zero_copy() {
        assert!(fh.stats().mapped_loads > 0, "{:?}", fh.stats());
    }
}

#[test]
fn dropped_mapped_blocks_go_back_to_the_engine_when_no_view_is_alive() {
    let n = 40u64;
    let Some((_dir, _f, mut fh)) = mapped_handle(n, 8) else {
        return;
    };
    let pass = |fh: &FileH| {
        for b in 0..n {
            let v = fh.bytes(off(b)..off(b + 1)).unwrap();
            assert!(v[..] == pat(b)[..], "block {b}");
        }
    };
    pass(&fh);
    assert!(fh.has_dropped_mapped(), "{:?}", fh.stats());
    // Touching dropped blocks again while they stay mapped is unseen by the
    // engine (no load: the page cache, as numpy.memmap).
    let loads = fh.stats().mapped_loads;
    let _ = fh.bytes(off(0)..off(1)).unwrap()[7];
    assert_eq!(fh.stats().mapped_loads, loads);
    // Put back: the next pass maps them again through the engine (and its
    // budget), and reads the same.
    fh.unmap_dropped().unwrap();
    assert!(!fh.has_dropped_mapped());
    pass(&fh);
    assert!(
        fh.stats().mapped_loads >= loads + n - 10,
        "{:?}",
        fh.stats()
    );
    assert!(fh.load_errors().is_empty());
    // Writes after all that are tracked exactly.
    fh.bytes_mut(off(3)..off(3) + 1).unwrap()[0] ^= 1;
    assert_eq!(fh.dirty_blocks(), vec![3]);
}

#[test]
fn a_mutable_view_unmaps_only_the_blocks_it_covers() {
    let n = 6u64;
    let Some((_dir, f, mut fh)) = mapped_handle_with(n, 64, false) else {
        return;
    };
    assert!(fh.bytes(0..off(n)).unwrap()[..] == (0..n).flat_map(pat).collect::<Vec<_>>()[..]);
    let mapped = fh.stats().mapped_loads;
    assert_eq!(mapped, n, "{:?}", fh.stats());
    // A write to block 2 only: block 2 reloads into the engine's memory,
    // the others stay mapped (reading them again loads nothing).
    fh.bytes_mut(off(2) + 9..off(2) + 10).unwrap()[0] ^= 0x80;
    assert_eq!(fh.dirty_blocks(), vec![2]);
    let loads = fh.stats().loads;
    let v = fh.bytes(0..off(n)).unwrap().to_vec();
    for b in [0u64, 1, 3, 4, 5] {
        assert!(
            v[off(b) as usize..off(b + 1) as usize] == pat(b)[..],
            "block {b}"
        );
    }
    let mut want2 = pat(2);
    want2[9] ^= 0x80;
    assert!(v[off(2) as usize..off(3) as usize] == want2[..]);
    assert_eq!(fh.stats().loads, loads, "no block loaded again");
    assert_eq!(fh.stats().mapped_loads, mapped);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    let mut got = vec![0u8; BS];
    f.file().read_exact_at(&mut got, off(2)).unwrap();
    assert!(got == want2);
}

/// A handle as the Python binding opens one for a writable connection:
/// blocks mapped read-write, no zero-copy moves, read-ahead off (so counts
/// are exact). `None` where the kernel lacks PAGEMAP_SCAN.
fn rw_handle(n: u64, budget_blocks: u64) -> Option<(tempfile::TempDir, Arc<FileBigFile>, FileH)> {
    let dir = tempfile::tempdir().unwrap();
    let (_, f) = file(&dir, n);
    let opts = Options {
        reserve: n * BS as u64,
        budget: Some(budget_blocks * BS as u64),
        readahead: false,
        zero_copy: false,
        map_files_writable: true,
        ..Options::default()
    };
    let fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    if !fh.maps_writable() {
        eprintln!("PAGEMAP_SCAN unavailable: blocks are not mapped read-write");
        return None;
    }
    Some((dir, f, fh))
}

#[test]
fn read_write_mapped_blocks_find_writes_store_and_remap() {
    let n = 6u64;
    let Some((_dir, f, mut fh)) = rw_handle(n, 64) else {
        return;
    };
    assert!(fh.bytes(0..off(n)).unwrap()[..] == (0..n).flat_map(pat).collect::<Vec<_>>()[..]);
    assert_eq!(fh.stats().mapped_loads, n, "{:?}", fh.stats());
    assert!(fh.dirty_blocks().is_empty(), "reads dirty nothing");
    // Writes land in the mapping itself (no block is put back or loaded
    // again): blocks 2 and 4 are found written, the file is untouched.
    {
        let mut v = fh.bytes_mut(0..off(n)).unwrap();
        v[off(2) as usize + 9] ^= 0x80;
        v[off(4) as usize + BS - 1] ^= 0x01;
    }
    assert_eq!(fh.stats().mapped_loads, n, "{:?}", fh.stats());
    assert_eq!(fh.dirty_blocks(), vec![2, 4]);
    let mut got = vec![0u8; BS];
    f.file().read_exact_at(&mut got, off(2)).unwrap();
    assert!(got == pat(2), "a private mapping never writes the file");
    let (mut want2, mut want4) = (pat(2), pat(4));
    want2[9] ^= 0x80;
    want4[BS - 1] ^= 0x01;
    // Commit: stored, then unmapped; the next read maps the stored bytes.
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert!(fh.dirty_blocks().is_empty());
    f.file().read_exact_at(&mut got, off(2)).unwrap();
    assert!(got == want2);
    f.file().read_exact_at(&mut got, off(4)).unwrap();
    assert!(got == want4);
    assert!(!fh.is_resident(2) && !fh.is_resident(4) && fh.is_resident(3));
    let v = fh.bytes(0..off(n)).unwrap().to_vec();
    assert!(v[off(2) as usize..off(3) as usize] == want2[..]);
    assert!(v[off(4) as usize..off(5) as usize] == want4[..]);
    assert_eq!(fh.stats().mapped_loads, n + 2, "{:?}", fh.stats());
    assert!(fh.dirty_blocks().is_empty(), "mapped again, clean");
    // Abort: the copies go, the file's bytes show again, still mapped.
    fh.bytes_mut(off(1)..off(1) + 1).unwrap()[0] ^= 0xFF;
    assert_eq!(fh.dirty_blocks(), vec![1]);
    fh.discard().unwrap();
    assert!(fh.dirty_blocks().is_empty());
    assert!(fh.bytes(off(1)..off(2)).unwrap()[..] == pat(1)[..]);
    assert_eq!(fh.stats().mapped_loads, n + 2, "{:?}", fh.stats());
    // Invalidation: unmapped, the new bytes are mapped on the next touch.
    fh.invalidate(3).unwrap();
    let new = vec![0x5Au8; BS];
    f.file().write_all_at(&new, off(3)).unwrap();
    assert!(fh.bytes(off(3)..off(4)).unwrap()[..] == new[..]);
    assert!(fh.load_errors().is_empty());
}

#[test]
fn read_write_mapped_blocks_pin_at_most_half_the_budget() {
    let n = 24u64;
    let budget = 8u64;
    let Some((_dir, _f, mut fh)) = rw_handle(n, budget) else {
        return;
    };
    scan_within_budget(&fh, n, budget);
    let st = fh.stats();
    // Half the budget is mapped (pinned: never dropped while a write may
    // land), the rest loads the ordinary way and is evicted.
    assert_eq!(st.mapped_loads, budget / 2, "{st:?}");
    assert_eq!(st.loads, n, "every block loaded once: {st:?}");
    assert!(st.evictions > 0, "{st:?}");
    for b in 0..budget / 2 {
        assert!(fh.is_resident(b), "pinned block {b} stays");
    }
    assert!(fh.dirty_blocks().is_empty());
    // A boundary gives the pins back (a written block stays, dirty); the
    // next pass maps half the budget again, from where it is then.
    fh.bytes_mut(off(1)..off(1) + 1).unwrap()[0] ^= 1;
    assert!(fh.has_pinned());
    fh.unmap_pinned().unwrap();
    assert!(fh.has_pinned(), "the written block stays pinned");
    assert_eq!(fh.dirty_blocks(), vec![1]);
    assert!(!fh.is_resident(0) && !fh.is_resident(2) && fh.is_resident(1));
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert!(!fh.has_pinned());
    let before = fh.stats().mapped_loads;
    for b in (0..n).rev() {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        let mut want = pat(b);
        if b == 1 {
            want[0] ^= 1;
        }
        assert!(v[..] == want[..], "block {b}");
    }
    assert_eq!(
        fh.stats().mapped_loads,
        before + budget / 2,
        "{:?}",
        fh.stats()
    );
}

/// A read-write handle gives a stored block's pages to the next
/// first-written hole (`fileh/donors.rs`): zeroed before the hole sees
/// them, the stored block mapped back from its file on its next touch.
#[test]
fn stored_blocks_pages_become_the_next_holes_zeros() {
    let n = 4u64;
    let dir = tempfile::tempdir().unwrap();
    let (_, f) = file(&dir, n);
    let opts = Options {
        reserve: (n + 4) * BS as u64,
        budget: Some(64 * BS as u64),
        readahead: false,
        zero_copy: false,
        map_files_writable: true,
        ..Options::default()
    };
    let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    if !fh.maps_writable() {
        eprintln!("PAGEMAP_SCAN unavailable: blocks are not mapped read-write");
        return;
    }
    // Block 4 is a hole (past the file's end): written whole, stored.
    fh.bytes_mut(off(4)..off(5)).unwrap().fill(0xAB);
    assert_eq!(fh.dirty_blocks(), vec![4]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    let st = fh.stats();
    if st.donated == 0 {
        eprintln!("no huge pages moved here: nothing to donate ({st:?})");
        return;
    }
    assert_eq!(st.donated, 1, "{st:?}");
    assert!(!fh.is_resident(4), "its pages went to the donors");
    // The next hole's first write gets them, zeroed.
    fh.bytes_mut(off(5) + 10..off(5) + 11).unwrap()[0] = 1;
    let st = fh.stats();
    assert_eq!(st.donor_zeros, 1, "{st:?}");
    let mut want = vec![0u8; BS];
    want[10] = 1;
    assert!(fh.bytes(off(5)..off(6)).unwrap()[..] == want[..]);
    // The stored block maps back from the file, its bytes intact.
    assert!(fh.bytes(off(4)..off(5)).unwrap().iter().all(|&b| b == 0xAB));
    assert_eq!(fh.dirty_blocks(), vec![5]);
    // Without donors left, a hole gets fresh zeros as before.
    fh.bytes_mut(off(6)..off(6) + 1).unwrap()[0] = 2;
    assert_eq!(fh.stats().donor_zeros, 1);
    assert!(
        fh.bytes(off(6)..off(7)).unwrap()[1..]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(fh.load_errors().is_empty());
}
