//! Behaviour tests of the paging engine against the in-memory and OS-file
//! backends (real userfaultfd, real faults).

use std::sync::Arc;

use virtmem::{BigFile, Error, FileBigFile, FileH, MemBigFile, Options, Writeout};

const BS: usize = 64 << 10;

fn pattern(blk: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| (i as u64 ^ blk.wrapping_mul(0x9E37_79B9)).wrapping_mul(31) as u8)
        .collect()
}

fn file_with(nblocks: u64, holes: &[u64]) -> Arc<MemBigFile> {
    let f = Arc::new(MemBigFile::new(BS));
    for b in 0..nblocks {
        if !holes.contains(&b) {
            f.set_block(b, &pattern(b));
        }
    }
    f
}

fn open(f: &Arc<MemBigFile>, nblocks: u64, readahead: bool, budget: u64) -> FileH {
    let opts = Options {
        reserve: nblocks * BS as u64,
        budget: Some(budget),
        readahead,
        ..Options::default()
    };
    match FileH::open(f.clone() as Arc<dyn BigFile>, opts) {
        Ok(h) => h,
        Err(e) => panic!("open: {e}"),
    }
}

fn off(blk: u64) -> u64 {
    blk * BS as u64
}

#[test]
fn lazy_loading_loads_each_block_once_per_residency() {
    let f = file_with(8, &[]);
    let mut fh = open(&f, 8, false, 1 << 30);
    assert_eq!(f.total_loads(), 0, "open must not load anything");
    for _ in 0..3 {
        for blk in [0u64, 2, 5] {
            let v = fh.bytes(off(blk)..off(blk + 1)).unwrap();
            assert_eq!(&v[..], &pattern(blk)[..]);
            assert_eq!(v[BS - 1], pattern(blk)[BS - 1]);
        }
    }
    for blk in 0..8 {
        let want = u64::from([0, 2, 5].contains(&blk));
        assert_eq!(f.load_count(blk), want, "block {blk}");
    }
    // A new residency after invalidation loads once more.
    fh.invalidate(2).unwrap();
    assert_eq!(fh.bytes(off(2)..off(2) + 1).unwrap()[0], pattern(2)[0]);
    assert_eq!(f.load_count(2), 2);
    assert_eq!(fh.stats().loads, 4);
}

#[test]
fn dirty_tracking_is_exact_and_store_is_ascending() {
    let f = file_with(12, &[5]);
    let mut fh = open(&f, 12, false, 1 << 30);
    // Read some blocks (must stay clean), write others in descending order.
    for blk in [0u64, 3, 7] {
        std::hint::black_box(fh.bytes(off(blk)..off(blk) + 10).unwrap()[3]);
    }
    {
        let mut v = fh.bytes_mut(off(9)..off(9) + 1).unwrap();
        v[0] = 0xAA;
    }
    {
        let mut v = fh.bytes_mut(off(5) + 100..off(5) + 101).unwrap(); // a hole
        v[0] = 0xBB;
    }
    {
        let mut v = fh.bytes_mut(off(3) + 7..off(3) + 8).unwrap(); // loaded clean, then written
        v[0] = 0xCC;
    }
    {
        let mut v = fh.view_mut::<u64>(off(1), 4).unwrap(); // first touch is a write
        v[2] = 0xDDDD;
    }
    assert_eq!(fh.dirty_blocks(), vec![1, 3, 5, 9]);
    fh.writeout(Writeout::STORE).unwrap();
    assert_eq!(f.take_stores(), vec![1, 3, 5, 9]);
    // STORE alone leaves them dirty.
    assert_eq!(fh.dirty_blocks(), vec![1, 3, 5, 9]);
    let b9 = f.block(9).unwrap();
    assert_eq!(b9[0], 0xAA);
    assert_eq!(&b9[1..], &pattern(9)[1..]);
    let b5 = f.block(5).unwrap();
    assert_eq!(b5[100], 0xBB);
    assert_eq!(b5.iter().filter(|&&x| x != 0).count(), 1);
    assert_eq!(f.block(3).unwrap()[7], 0xCC);
    let b1 = f.block(1).unwrap();
    assert_eq!(u64::from_ne_bytes(b1[16..24].try_into().unwrap()), 0xDDDD);
    assert_eq!(&b1[24..], &pattern(1)[24..]);

    fh.writeout(Writeout::MARKSTORED).unwrap();
    assert!(fh.dirty_blocks().is_empty());
    assert!(
        f.take_stores().is_empty(),
        "MARKSTORED alone stores nothing"
    );
    // Write protection is re-armed: a new write is seen again.
    fh.bytes_mut(off(9)..off(9) + 1).unwrap()[0] = 1;
    assert_eq!(fh.dirty_blocks(), vec![9]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), vec![9]);
    assert!(fh.dirty_blocks().is_empty());
    // Blocks only read were never loaded twice nor stored.
    assert_eq!(f.load_count(0), 1);
    assert_eq!(f.load_count(7), 1);
}

#[test]
fn discard_drops_dirty_blocks_and_reloads() {
    let f = file_with(4, &[3]);
    let mut fh = open(&f, 4, false, 1 << 30);
    fh.bytes_mut(off(1)..off(2)).unwrap().fill(7);
    fh.bytes_mut(off(3)..off(3) + 5).unwrap().fill(9);
    std::hint::black_box(fh.bytes(off(2)..off(2) + 1).unwrap()[0]); // clean: kept
    assert_eq!(fh.dirty_blocks(), vec![1, 3]);
    fh.discard().unwrap();
    assert!(fh.dirty_blocks().is_empty());
    assert_eq!(&fh.bytes(off(1)..off(2)).unwrap()[..], &pattern(1)[..]);
    assert!(fh.bytes(off(3)..off(4)).unwrap().iter().all(|&b| b == 0));
    assert_eq!(f.load_count(1), 2, "discarded block reloads");
    std::hint::black_box(fh.bytes(off(2)..off(2) + 1).unwrap()[0]);
    assert_eq!(f.load_count(2), 1, "clean block kept through discard");
    assert!(f.take_stores().is_empty());
}

#[test]
fn invalidate_drops_one_block_whatever_its_state() {
    let f = file_with(4, &[]);
    let mut fh = open(&f, 4, false, 1 << 30);
    std::hint::black_box(
        fh.bytes(0..off(4))
            .unwrap()
            .iter()
            .map(|&b| b as u64)
            .sum::<u64>(),
    );
    fh.bytes_mut(off(2)..off(2) + 1).unwrap()[0] = 0x55;
    // The file changes behind the handle (as after a database invalidation).
    f.set_block(0, &[1, 2, 3]);
    f.set_block(1, &[4, 5, 6]);
    f.set_block(2, &[7, 8, 9]);
    assert_eq!(
        fh.bytes(0..3).unwrap()[..],
        pattern(0)[..3],
        "not yet invalidated"
    );
    fh.invalidate(0).unwrap(); // clean
    fh.invalidate(2).unwrap(); // dirty
    assert_eq!(fh.bytes(0..3).unwrap()[..], [1, 2, 3]);
    assert_eq!(fh.bytes(off(1)..off(1) + 3).unwrap()[..], pattern(1)[..3]);
    assert_eq!(fh.bytes(off(2)..off(2) + 3).unwrap()[..], [7, 8, 9]);
    assert!(fh.dirty_blocks().is_empty());
    fh.invalidate(3).unwrap(); // clean, never changed
    assert_eq!(fh.bytes(off(3)..off(4)).unwrap()[..], pattern(3)[..]);
    fh.invalidate(1000).unwrap_err();
}

#[test]
fn overlapping_views_are_coherent() {
    let f = file_with(4, &[]);
    let mut fh = open(&f, 4, false, 1 << 30);
    {
        let mut words = fh.view_mut::<u64>(off(1) - 8, 2).unwrap(); // spans blocks 0 and 1
        words[0] = u64::MAX;
        words[1] = 0x0102_0304_0506_0708;
    }
    let a = fh.bytes(off(1) - 16..off(1) + 16).unwrap();
    let b = fh.view::<u32>(off(1) - 4, 2).unwrap();
    assert_eq!(&a[8..16], &[0xFF; 8]);
    assert_eq!(&a[16..24], &0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(b[0], u32::MAX);
    assert_eq!(b[1], 0x0506_0708);
    let c = fh.bytes(off(1)..off(1) + 4).unwrap();
    assert!(
        std::ptr::eq(&a[16], &c[0]),
        "views are slices of one mapping"
    );
    assert_eq!(fh.dirty_blocks(), vec![0, 1]);
    // Misaligned typed views and out-of-range views are errors, not panics.
    assert!(matches!(
        fh.view::<u64>(3, 1),
        Err(Error::Misaligned { .. })
    ));
    assert!(matches!(
        fh.bytes(off(4) - 1..off(4) + 1),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn holes_read_as_zeros_cost_nothing_and_can_be_written() {
    let f = file_with(4, &[1, 2]);
    let mut fh = open(&f, 4, false, 1 << 30);
    assert!(fh.bytes(off(1)..off(2)).unwrap().iter().all(|&b| b == 0));
    assert_eq!(fh.budget().used(), 0, "a hole is not accounted");
    std::hint::black_box(fh.bytes(off(0)..off(0) + 1).unwrap()[0]);
    assert_eq!(fh.budget().used(), BS as u64);
    fh.bytes_mut(off(1) + 4096..off(1) + 4097).unwrap()[0] = 3;
    assert_eq!(fh.dirty_blocks(), vec![1]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    let b = f.block(1).unwrap();
    assert_eq!(b[4096], 3);
    assert_eq!(b.iter().map(|&x| x as u32).sum::<u32>(), 3);
    assert!(f.block(2).is_none(), "a hole only read is never stored");
}

#[test]
fn budget_is_respected_while_scanning_8x_the_budget() {
    let n = 128u64;
    let budget_blocks = 16u64;
    let f = file_with(n, &[]);
    let mut fh = open(&f, n, true, budget_blocks * BS as u64);
    // Two dirty blocks that must survive the scan.
    fh.bytes_mut(off(3)..off(3) + 1).unwrap()[0] = 0xEE;
    fh.bytes_mut(off(100)..off(100) + 1).unwrap()[0] = 0xEF;
    let limit = fh.budget().limit();
    let slack = 4 * BS as u64; // loads in flight on handler threads
    let mut max_used = 0;
    for round in 0..2 {
        for blk in 0..n {
            let v = fh.bytes(off(blk)..off(blk + 1)).unwrap();
            let sum: u64 = v.iter().map(|&b| b as u64).sum();
            let mut want = pattern(blk);
            if blk == 3 {
                want[0] = 0xEE;
            }
            if blk == 100 {
                want[0] = 0xEF;
            }
            assert_eq!(
                sum,
                want.iter().map(|&b| b as u64).sum::<u64>(),
                "round {round} block {blk}"
            );
            max_used = max_used.max(fh.budget().used());
            assert!(
                fh.resident_blocks() as u64 <= budget_blocks + 2 + 4,
                "resident {}",
                fh.resident_blocks()
            );
        }
    }
    assert!(
        max_used <= limit + slack,
        "max used {max_used} > limit {limit}"
    );
    // Blocks left the memory by eviction or, once the scan was a long
    // stream, by drop-behind.
    let st = fh.stats();
    assert!(st.evictions + st.dropped_behind >= n, "{st:?}");
    assert!(st.dropped_behind > 0, "a long scan drops behind: {st:?}");
    assert_eq!(fh.dirty_blocks(), vec![3, 100]);
    fh.writeout(Writeout::STORE).unwrap();
    assert_eq!(f.block(3).unwrap()[0], 0xEE);
    assert_eq!(f.block(100).unwrap()[0], 0xEF);
}

#[test]
fn concurrent_readers_same_and_different_blocks() {
    let n = 32u64;
    let f = file_with(n, &[7]);
    let fh = open(&f, n, false, 1 << 30);
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let fh = &fh;
            s.spawn(move || {
                for i in 0..n {
                    // Threads 0-2 all walk the same order; 3-5 walk strided orders.
                    let blk = if t < 3 { i } else { (i * (2 * t + 1)) % n };
                    let v = fh.bytes(off(blk)..off(blk + 1)).unwrap();
                    let want = if blk == 7 { vec![0; BS] } else { pattern(blk) };
                    // Touch pages in a thread-specific order so faults land on
                    // different pages of the same block.
                    let page = ((t as usize * 5) % 16) * 4096;
                    assert_eq!(v[page], want[page]);
                    assert_eq!(&v[..], &want[..], "thread {t} block {blk}");
                }
            });
        }
    });
    for blk in 0..n {
        assert_eq!(f.load_count(blk), 1, "block {blk} loaded more than once");
    }
}

#[test]
fn readahead_follows_sequential_scans_and_not_random_access() {
    let n = 64u64;
    let f = file_with(n, &[]);
    let fh = open(&f, n, true, 1 << 30);
    for blk in 0..n {
        let v = fh.bytes(off(blk)..off(blk + 1)).unwrap();
        assert_eq!(&v[..], &pattern(blk)[..]);
    }
    let st = fh.stats();
    assert!(st.readahead_loads > n / 2, "forward: {st:?}");
    assert!(st.marker_hits > 0, "forward: {st:?}");
    for blk in 0..n {
        assert_eq!(f.load_count(blk), 1, "block {blk}");
    }
    drop(fh);

    let f = file_with(n, &[]);
    let fh = open(&f, n, true, 1 << 30);
    for blk in (0..n).rev() {
        let v = fh.bytes(off(blk)..off(blk + 1)).unwrap();
        assert_eq!(&v[..], &pattern(blk)[..]);
    }
    let st = fh.stats();
    assert!(st.readahead_loads > n / 2, "backward: {st:?}");
    drop(fh);

    let f = file_with(n, &[]);
    let fh = open(&f, n, true, 1 << 30);
    for i in 0..n {
        let blk = (i * 37 + 11) % n; // no two consecutive accesses are neighbours
        std::hint::black_box(fh.bytes(off(blk)..off(blk) + 1).unwrap()[0]);
    }
    let st = fh.stats();
    assert_eq!(st.readahead_loads, 0, "random: {st:?}");
    assert_eq!(f.total_loads(), n);
}

#[test]
fn prefetch_returns_load_errors_as_values_and_retries() {
    let f = file_with(6, &[]);
    f.set_failing(3, true);
    let mut fh = open(&f, 6, false, 1 << 30);
    match fh.prefetch(0..6) {
        Err(Error::Load { blk, .. }) => assert_eq!(blk, 3),
        other => panic!("expected a load error for block 3, got {other:?}"),
    }
    let errs = fh.load_errors();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, 3);
    assert!(
        errs[0]
            .1
            .to_string()
            .contains("injected load failure for block 3")
    );
    // Other blocks were prefetched: touching them loads nothing more.
    let before = f.total_loads();
    std::hint::black_box(fh.bytes(off(5)..off(5) + 1).unwrap()[0]);
    assert_eq!(f.total_loads(), before);
    // Retry after the cause is gone.
    f.set_failing(3, false);
    fh.prefetch(3..4).unwrap();
    assert!(fh.load_errors().is_empty());
    assert_eq!(&fh.bytes(off(3)..off(4)).unwrap()[..], &pattern(3)[..]);
    // invalidate also clears a failed block.
    f.set_failing(4, true);
    fh.invalidate(4).unwrap();
    assert!(fh.prefetch(4..5).is_err());
    f.set_failing(4, false);
    fh.invalidate(4).unwrap();
    assert!(fh.load_errors().is_empty());
    assert_eq!(fh.bytes(off(4)..off(4) + 2).unwrap()[..], pattern(4)[..2]);
    let before = f.total_loads();
    assert!(matches!(
        fh.prefetch(5..7),
        Err(Error::BlockOutOfRange { blk: 6, .. })
    ));
    assert_eq!(
        f.total_loads(),
        before,
        "a bad range is rejected before any load"
    );
}

const CHILD_ENV: &str = "VIRTMEM_POISON_CHILD";

/// The child half of `poisoned_access_kills_only_the_child`: does nothing
/// unless started by it.
#[test]
#[ignore = "child process entry point, started by poisoned_access_kills_only_the_child"]
fn poison_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let f = file_with(4, &[]);
    f.set_failing(2, true);
    let fh = open(&f, 4, false, 1 << 30);
    let ok = fh.bytes(off(1)..off(1) + 1).unwrap()[0];
    eprintln!("child: block 1 reads {ok}");
    let v = fh.bytes(off(2)..off(2) + 1).unwrap();
    let x = std::hint::black_box(&v[..])[0]; // SIGBUS here
    eprintln!("child: UNREACHABLE read {x}");
    std::process::exit(3);
}

#[test]
fn poisoned_access_kills_only_the_child() {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "poison_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("child: block 1 reads {}", pattern(1)[0])),
        "{stderr}"
    );
    assert!(
        stderr.contains("loading block 2 of MemBigFile failed: injected load failure for block 2"),
        "{stderr}"
    );
    assert!(stderr.contains("SIGBUS"), "{stderr}");
    assert!(!stderr.contains("UNREACHABLE"), "{stderr}");
}

#[test]
fn file_backend_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    let mut content: Vec<u8> = (0..3 * BS + 1000).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let file = Arc::new(FileBigFile::open(&path, BS).unwrap());
    let opts = Options {
        reserve: 8 * BS as u64,
        budget: Some(1 << 30),
        ..Options::default()
    };
    let mut fh = FileH::open(file.clone(), opts).unwrap();
    assert_eq!(
        &fh.bytes(0..content.len() as u64).unwrap()[..],
        &content[..]
    );
    // Past the end of the OS file: zero tail of block 3, block 5 is a hole.
    assert!(
        fh.bytes(off(3) + 1000..off(4))
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert!(fh.bytes(off(5)..off(6)).unwrap().iter().all(|&b| b == 0));
    fh.bytes_mut(10..20).unwrap().fill(0xAB);
    fh.bytes_mut(off(5)..off(5) + 3)
        .unwrap()
        .copy_from_slice(b"xyz");
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    file.sync().unwrap();
    let disk = std::fs::read(&path).unwrap();
    content[10..20].fill(0xAB);
    assert_eq!(&disk[..content.len()], &content[..]);
    assert_eq!(disk.len(), 6 * BS);
    assert_eq!(&disk[5 * BS..5 * BS + 3], b"xyz");
}

#[test]
fn bad_block_size_is_an_error() {
    let f = Arc::new(MemBigFile::new(1000));
    assert!(matches!(
        FileH::open(f, Options::default()),
        Err(Error::BlockSize { block_size: 1000 })
    ));
}

/// 1 GiB OS file of 2 MiB blocks scanned forward, backward and by two threads
/// under a 64 MiB budget. Slow-ish and needs disk space: `--ignored`.
#[test]
#[ignore]
fn big_file_scans_under_a_small_budget() {
    const BS2: usize = 2 << 20;
    let n = 512u64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for b in 0..n {
            let words: Vec<u8> = (0..BS2 / 8)
                .flat_map(|i| (b * 1_000_003 + i as u64).to_ne_bytes())
                .collect();
            w.write_all(&words).unwrap();
        }
    }
    let want: u64 = (0..n)
        .flat_map(|b| (0..BS2 as u64 / 8).map(move |i| b * 1_000_003 + i))
        .fold(0, u64::wrapping_add);
    let file = Arc::new(FileBigFile::open(&path, BS2).unwrap());
    let budget = 64u64 << 20;
    let opts = Options {
        reserve: n * BS2 as u64,
        budget: Some(budget),
        ..Options::default()
    };
    let fh = FileH::open(file, opts).unwrap();
    let v = fh.view::<u64>(0, n as usize * BS2 / 8).unwrap();
    let fwd = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    assert_eq!(fwd, want);
    let bwd = v.iter().rev().fold(0u64, |a, &x| a.wrapping_add(x));
    assert_eq!(bwd, want);
    let (lo, hi) = v.split_at(v.len() / 2);
    let two = std::thread::scope(|s| {
        let a = s.spawn(|| lo.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
        let b = hi.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        a.join().unwrap().wrapping_add(b)
    });
    assert_eq!(two, want);
    assert!(fh.budget().used() <= budget + 8 * BS2 as u64);
    assert!(fh.resident_blocks() as u64 <= budget / BS2 as u64 + 8);
    let st = fh.stats();
    assert!(st.readahead_loads > n, "{st:?}");
    // Three passes over 8x the budget: every load but what stays resident
    // was evicted (a pass may start on the blocks the previous one left).
    assert!(st.loads + st.readahead_loads >= 2 * n, "{st:?}");
    assert!(
        st.evictions + budget / BS2 as u64 + 16 >= st.loads + st.readahead_loads,
        "{st:?}"
    );
}

#[test]
fn failed_store_keeps_every_block_dirty() {
    let f = file_with(6, &[]);
    let mut fh = open(&f, 6, false, 1 << 30);
    for blk in [1u64, 2, 4] {
        fh.bytes_mut(off(blk)..off(blk) + 1).unwrap()[0] = 0x11 * blk as u8;
    }
    f.set_store_failing(2, true);
    match fh.writeout(Writeout::STORE | Writeout::MARKSTORED) {
        Err(Error::Store { blk, source, .. }) => {
            assert_eq!(blk, 2);
            assert_eq!(source.to_string(), "injected store failure for block 2");
        }
        other => panic!("expected a store error for block 2, got {other:?}"),
    }
    assert_eq!(f.take_stores(), vec![1], "stores stop at the failing block");
    assert_eq!(fh.dirty_blocks(), vec![1, 2, 4], "nothing is marked stored");
    f.set_store_failing(2, false);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), vec![1, 2, 4]);
    assert!(fh.dirty_blocks().is_empty());
    assert_eq!(f.block(4).unwrap()[0], 0x44);
}

const SPIN_CHILD_ENV: &str = "VIRTMEM_SPIN_CHILD";

/// Child half of `a_page_faulting_forever_is_failed_not_spun`.
#[test]
#[ignore = "child process entry point, started by a_page_faulting_forever_is_failed_not_spun"]
fn spin_child() {
    if std::env::var_os(SPIN_CHILD_ENV).is_none() {
        return;
    }
    let f = file_with(2, &[]);
    let fh = open(&f, 2, false, 1 << 30);
    let v = fh.bytes(0..off(1)).unwrap();
    eprintln!("child: block 0 reads {}", std::hint::black_box(&v[..])[5]);
    fh.debug_drop_pages_behind_engine(0).unwrap();
    let x = std::hint::black_box(&v[..])[5]; // faults on a "resident" block
    eprintln!("child: UNREACHABLE read {x}");
    std::process::exit(3);
}

#[test]
fn a_page_faulting_forever_is_failed_not_spun() {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().unwrap();
    let t = std::time::Instant::now();
    let out = std::process::Command::new(exe)
        .args([
            "spin_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SPIN_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("keeps faulting although its block is resident"),
        "{stderr}"
    );
    assert!(!stderr.contains("UNREACHABLE"), "{stderr}");
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
}

#[test]
fn holes_as_data_when_zero_pages_are_off() {
    let f = file_with(4, &[1, 2]);
    let opts = Options {
        reserve: 4 * BS as u64,
        budget: Some(1 << 30),
        readahead: false,
        zero_page_holes: false,
        ..Options::default()
    };
    let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    assert!(fh.bytes(off(1)..off(2)).unwrap().iter().all(|&b| b == 0));
    assert_eq!(
        fh.budget().used(),
        BS as u64,
        "a hole mapped as data is accounted"
    );
    fh.bytes_mut(off(1) + 10..off(1) + 11).unwrap()[0] = 5;
    fh.bytes_mut(off(2) + 20..off(2) + 21).unwrap()[0] = 6; // first touch is a write
    assert_eq!(fh.dirty_blocks(), vec![1, 2]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), vec![1, 2]);
    assert_eq!(f.block(1).unwrap()[10], 5);
    assert_eq!(f.block(2).unwrap()[20], 6);
    assert!(fh.dirty_blocks().is_empty());
}

/// 2 MiB blocks: loads move huge pages into place (UFFDIO_MOVE) when the
/// kernel allows it. Same semantics as the copy path: each block loaded once,
/// read-ahead markers work, clean blocks stay write-protected (only written
/// blocks are dirty and stored), eviction and reload; while a mutable view
/// exists loads copy.
#[test]
fn zero_copy_loads_keep_the_semantics() {
    const BS2: usize = 2 << 20;
    let n = 40u64; // longer than a read-ahead stream's LONG_STREAM: drop-behind recycles
    let pat = |blk: u64| -> Vec<u8> {
        (0..BS2)
            .map(|i| ((i / 8) as u64 ^ blk.wrapping_mul(0x9E37_79B9)) as u8)
            .collect()
    };
    let f = Arc::new(MemBigFile::new(BS2));
    for b in 0..n {
        if b != 5 {
            f.set_block(b, &pat(b));
        }
    }
    let opts = Options {
        reserve: n * BS2 as u64,
        budget: Some(16 * BS2 as u64),
        ..Options::default()
    };
    let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    let zero_copy = fh.zero_copy();
    eprintln!("zero copy: {zero_copy}");
    let off2 = |b: u64| b * BS2 as u64;
    // Forward scan (read-ahead and its markers), 3 blocks at a time.
    for b in 0..n {
        let v = fh.bytes(off2(b)..off2(b + 1)).unwrap();
        let want = if b == 5 { vec![0; BS2] } else { pat(b) };
        assert!(v[..] == want[..], "block {b}");
    }
    let st = fh.stats();
    if zero_copy {
        // Read-ahead marker blocks (one in half a window: the window of 8
        // is capped to a quarter of the 16-block budget, so every second
        // block) are copied with a page held back, or (once recycled
        // buffers exist) held back whole and moved in. Every other data
        // block moves, or copies where fresh huge pages measured slow
        // before the scan began dropping blocks (`install_cost.rs`).
        let window = Options::default().readahead_window.min(16 / 4);
        let stride = (window / 2).max(1);
        let markers = n.div_ceil(stride);
        assert!(st.moved_loads > 0, "{st:?}");
        assert!(
            st.moved_loads + st.copied_for_cost >= n - 1 - markers,
            "{st:?}"
        );
        assert!(st.marker_hits > 0, "{st:?}");
        // 40 blocks through a budget of 16: the long stream drops what it
        // leaves behind, and those blocks' pages are reused by later loads.
        assert!(st.recycled > 0, "{st:?}");
    }
    for b in 0..n {
        assert_eq!(f.load_count(b), 1, "block {b}: {st:?}");
    }
    assert!(fh.dirty_blocks().is_empty());
    // Clean moved blocks are write-protected: a write makes exactly its
    // block dirty.
    let last = n - 1;
    fh.bytes_mut(off2(last) + 100..off2(last) + 101).unwrap()[0] ^= 0xff;
    assert_eq!(fh.dirty_blocks(), vec![last]);
    // With a mutable view alive, loads copy; the writes are all seen.
    {
        let v = fh.bytes_mut(0..off2(n)).unwrap().into_slice();
        for b in 0..n {
            v[b as usize * BS2 + 7] = 0xAB;
        }
    }
    assert_eq!(fh.dirty_blocks(), (0..n).collect::<Vec<_>>());
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), (0..n).collect::<Vec<_>>());
    assert_eq!(f.block(3).unwrap()[7], 0xAB);
    // Evicted and reloaded (moved again after a shared view), still exact.
    fh.discard().unwrap();
    for b in 0..n {
        fh.invalidate(b).unwrap();
    }
    let before = fh.stats().moved_loads;
    for b in (0..n).rev() {
        let v = fh.bytes(off2(b)..off2(b + 1)).unwrap();
        assert_eq!(v[7], 0xAB, "block {b}");
        assert_eq!(v[8], f.block(b).unwrap()[8], "block {b}");
    }
    if zero_copy {
        assert!(fh.stats().moved_loads > before, "{:?}", fh.stats());
    }
    assert!(fh.dirty_blocks().is_empty());
    fh.bytes_mut(off2(2)..off2(2) + 1).unwrap()[0] = 1;
    assert_eq!(fh.dirty_blocks(), vec![2]);
    assert!(fh.load_errors().is_empty());
}

#[test]
fn drop_behind_drops_only_the_clean_blocks_a_scan_loaded() {
    let f = file_with(8, &[6]);
    let mut fh = open(&f, 8, false, 1 << 30);
    // Block 0 is resident before the scan (someone's working set).
    fh.prefetch(0..1).unwrap();
    let loaded = fh.prefetch_for_scan(0..8).unwrap();
    assert_eq!(
        loaded,
        vec![1, 2, 3, 4, 5, 6, 7],
        "only what this call loaded"
    );
    // Block 2 is written meanwhile: dirty blocks are never dropped.
    fh.bytes_mut(off(2)..off(2) + 1).unwrap()[0] ^= 1;
    assert_eq!(fh.resident_blocks(), 8);
    fh.drop_behind(&loaded);
    // Dropped: 1, 3, 4, 5, 7 (6 is a hole: no memory, left alone; 2 is dirty).
    assert_eq!(fh.stats().dropped_behind, 5);
    assert_eq!(
        fh.resident_blocks(),
        3,
        "0 (resident before), 2 (dirty), 6 (hole)"
    );
    assert_eq!(
        fh.budget().used(),
        BS as u64,
        "only block 0 stays accounted"
    );
    // A dropped block reads the same again (it reloads).
    let before = f.total_loads();
    assert_eq!(&fh.bytes(off(3)..off(4)).unwrap()[..], &pattern(3)[..]);
    assert_eq!(f.total_loads(), before + 1);
    let mut expect2 = pattern(2);
    expect2[0] ^= 1;
    assert_eq!(&fh.bytes(off(2)..off(3)).unwrap()[..], &expect2[..]);
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), vec![2]);
}

#[test]
fn a_scan_with_drop_behind_reuses_its_pages() {
    // 2 MiB blocks: whole huge pages, which drop-behind recycles.
    const HBS: usize = 2 << 20;
    let n = 24u64;
    let f = Arc::new(MemBigFile::new(HBS));
    for b in 0..n {
        f.set_block(b, &vec![b as u8 + 1; HBS]);
    }
    let opts = Options {
        reserve: n * HBS as u64,
        budget: Some(1 << 30),
        readahead: false,
        ..Options::default()
    };
    let fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    let mut sum = 0u64;
    for c in 0..n / 4 {
        let loaded = fh.prefetch_for_scan(c * 4..c * 4 + 4).unwrap();
        let v = fh
            .bytes(c * 4 * HBS as u64..(c + 1) * 4 * HBS as u64)
            .unwrap();
        sum += v.iter().step_by(4096).map(|&x| x as u64).sum::<u64>();
        fh.drop_behind(&loaded);
    }
    let expect: u64 = (0..n).map(|b| (b + 1) * (HBS / 4096) as u64).sum();
    assert_eq!(sum, expect);
    let st = fh.stats();
    assert_eq!(st.dropped_behind, n);
    assert_eq!(fh.resident_blocks(), 0);
    if st.moved_loads > 0 {
        // Zero-copy works here: after the first two chunks every load
        // reads into a dropped block's pages. (The first chunk may have
        // been copied, where fresh huge pages are slow: small pages are not
        // recycled; once a drop was seen, loads move.)
        assert!(
            st.recycled >= n - 8,
            "dropped blocks' pages are recycled: {st:?}"
        );
    } else {
        eprintln!("zero-copy unavailable here (no UFFDIO_MOVE or THP): recycling not checked");
    }
}
