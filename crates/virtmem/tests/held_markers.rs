//! Read-ahead marker blocks held back whole (zero-copy mode): a read-ahead
//! load into a recycled buffer keeps the whole block in that buffer and
//! moves it in on the reader's first touch, instead of copying the block
//! in 4 KiB pages with one page held back. These tests check that such
//! blocks read exactly, count as moved loads, can be written (while a
//! mutable view exists, the held block is copied in and its first write
//! makes it dirty), and survive eviction and reload.

use std::sync::Arc;
use std::time::Duration;

use virtmem::{BigFile, FileH, MemBigFile, Options, Writeout};

const BS: usize = 2 << 20;

fn pat(blk: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| ((i / 8) as u64 ^ blk.wrapping_mul(0x9E37_79B9)) as u8)
        .collect()
}

fn file(n: u64) -> Arc<MemBigFile> {
    let f = Arc::new(MemBigFile::new(BS));
    for b in 0..n {
        f.set_block(b, &pat(b));
    }
    f
}

fn open(f: &Arc<MemBigFile>, n: u64, budget_blocks: u64) -> FileH {
    let opts = Options {
        reserve: n * BS as u64,
        budget: Some(budget_blocks * BS as u64),
        ..Options::default()
    };
    match FileH::open(f.clone() as Arc<dyn BigFile>, opts) {
        Ok(h) => h,
        Err(e) => panic!("open: {e}"),
    }
}

fn off(b: u64) -> u64 {
    b * BS as u64
}

#[test]
fn marker_blocks_of_a_long_scan_are_moved_in_whole() {
    let n = 96u64;
    let f = file(n);
    let fh = open(&f, n, 16);
    if !fh.zero_copy() {
        eprintln!("zero-copy unavailable here (no UFFDIO_MOVE or THP): nothing to check");
        return;
    }
    for b in 0..n {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b}");
    }
    let st = fh.stats();
    assert!(st.marker_hits > 4, "{st:?}");
    assert!(st.recycled > 0, "{st:?}");
    // A marker block copied in pages is not a moved load; one held back
    // whole and moved in is. Once the scan recycles, markers are held
    // whole, so moved loads plus marker hits exceed the blocks loaded.
    assert!(
        st.moved_loads + st.marker_hits > st.loads + st.readahead_loads,
        "marker blocks were not moved in: {st:?}"
    );
    for b in 0..n {
        assert_eq!(f.load_count(b), 1, "block {b}: {st:?}");
    }
    // Backwards over blocks the scan dropped and the ones still held.
    for b in (0..n).rev() {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b} again");
    }
}

#[test]
fn held_marker_blocks_can_be_written_and_evicted() {
    let n = 80u64;
    let f = file(n);
    let mut fh = open(&f, n, 24);
    if !fh.zero_copy() {
        eprintln!("zero-copy unavailable here (no UFFDIO_MOVE or THP): nothing to check");
        return;
    }
    // A long forward scan up to block 59: read-ahead runs ahead of it and
    // holds some of the blocks it loads past 59 whole.
    for b in 0..60 {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == pat(b)[..], "block {b}");
    }
    // Let the read-ahead jobs finish.
    std::thread::sleep(Duration::from_millis(300));
    let ahead = fh.resident_blocks();
    assert!(ahead > 0, "nothing resident after the scan");
    // Write one byte in the middle of every block from 60 on, through one
    // mutable view: held blocks are copied in, then made dirty.
    {
        let v = fh.bytes_mut(off(60)..off(n)).unwrap().into_slice();
        for b in 60..n {
            v[(b - 60) as usize * BS + BS / 2 + 3] ^= 0x5A;
        }
    }
    assert_eq!(fh.dirty_blocks(), (60..n).collect::<Vec<_>>());
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), (60..n).collect::<Vec<_>>());
    for b in 60..n {
        let mut want = pat(b);
        want[BS / 2 + 3] ^= 0x5A;
        assert!(f.block(b).unwrap() == want, "stored block {b}");
    }
    // Every block once more, forward (blocks 0..60 were dropped or are
    // held): exact, and no block other than those written is dirty.
    for b in 0..n {
        let v = fh.bytes(off(b)..off(b + 1)).unwrap();
        assert!(v[..] == f.block(b).unwrap()[..], "block {b} reread");
    }
    assert!(fh.dirty_blocks().is_empty());
    assert!(fh.load_errors().is_empty());
    // The budget is respected with held blocks counted like loaded ones.
    assert!(
        fh.budget().used() <= 24 * BS as u64,
        "budget used {}",
        fh.budget().used()
    );
}
