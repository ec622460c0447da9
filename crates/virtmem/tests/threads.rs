//! Multi-threaded writers and the process-wide budget (own test binary: the
//! process budget is global state).

use std::sync::Arc;

use virtmem::{BigFile, FileH, MemBigFile, Options, Writeout, process_budget, set_process_budget};

const BS: usize = 64 << 10;

#[test]
fn concurrent_writers_mark_exactly_the_written_blocks() {
    let n = 16u64;
    let f = Arc::new(MemBigFile::new(BS));
    for b in 0..n {
        if b % 3 != 0 {
            f.set_block(b, &vec![b as u8; BS]);
        }
    }
    let opts = Options {
        reserve: n * BS as u64,
        budget: Some(1 << 30),
        readahead: false,
        ..Options::default()
    };
    let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    // Blocks 2..10 are written by 8 threads, each a quarter-block chunk, so
    // several threads hit the same block (first-touch write, write-protect
    // fault, hole) at once. Other blocks are only read, concurrently.
    {
        let v = fh
            .bytes_mut(2 * BS as u64..10 * BS as u64)
            .unwrap()
            .into_slice();
        std::thread::scope(|s| {
            let chunks: Vec<&mut [u8]> = v.chunks_mut(BS / 4).collect();
            let mut per_thread: Vec<Vec<&mut [u8]>> = (0..8).map(|_| Vec::new()).collect();
            for (i, c) in chunks.into_iter().enumerate() {
                per_thread[i % 8].push(c);
            }
            for (t, mine) in per_thread.into_iter().enumerate() {
                s.spawn(move || {
                    for c in mine {
                        c[c.len() / 2] = 0xF0 | t as u8;
                    }
                });
            }
        });
    }
    assert_eq!(fh.dirty_blocks(), (2..10).collect::<Vec<_>>());
    {
        let fh = &fh;
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(move || {
                    for b in (10..n).chain(0..2) {
                        let v = fh.bytes(b * BS as u64..(b + 1) * BS as u64).unwrap();
                        let want = if b % 3 == 0 { 0 } else { b as u8 };
                        assert!(v.iter().all(|&x| x == want), "block {b}");
                    }
                });
            }
        });
    }
    assert_eq!(fh.dirty_blocks(), (2..10).collect::<Vec<_>>());
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert_eq!(f.take_stores(), (2..10).collect::<Vec<_>>());
    for b in 2..10u64 {
        let data = f.block(b).unwrap();
        let base = if b % 3 == 0 { 0 } else { b as u8 };
        for q in 0..4 {
            let i = (b as usize - 2) * 4 + q; // chunk index
            let at = q * BS / 4 + BS / 8;
            assert_eq!(data[at], 0xF0 | (i % 8) as u8, "block {b} chunk {q}");
            assert_eq!(data[at - 1], base);
        }
    }
}

#[test]
fn process_budget_is_shared_by_handles() {
    set_process_budget(8 * BS as u64);
    let n = 32u64;
    let f = Arc::new(MemBigFile::new(BS));
    for b in 0..n {
        f.set_block(b, &vec![b as u8 + 1; BS]);
    }
    let open = || {
        let opts = Options {
            reserve: n * BS as u64,
            ..Options::default()
        };
        FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap()
    };
    let (a, b) = (open(), open());
    assert!(Arc::ptr_eq(a.budget(), b.budget()));
    let slack = 6 * BS as u64; // loads in flight on the two handles' threads
    for blk in 0..n {
        for h in [&a, &b] {
            let v = h.bytes(blk * BS as u64..(blk + 1) * BS as u64).unwrap();
            assert!(v.iter().all(|&x| x == blk as u8 + 1));
            assert!(process_budget().used() <= process_budget().limit() + slack);
        }
    }
    assert!(a.stats().evictions + b.stats().evictions >= 2 * n - 8 - 6);
    drop((a, b));
    assert_eq!(
        process_budget().used(),
        0,
        "closing handles returns their budget"
    );
}

/// Zero-copy loads (2 MiB blocks) install pages writable and protect them a
/// few microseconds later; a write in between must not be lost. Writers
/// start while read-ahead moves of the blocks they write are in flight: every
/// written block must end up dirty and stored.
#[test]
fn writes_racing_zero_copy_read_ahead_are_all_seen() {
    const BS2: usize = 2 << 20;
    let n = 24u64;
    let f = Arc::new(MemBigFile::new(BS2));
    for b in 0..n {
        f.set_block(b, &vec![b as u8 + 1; BS2]);
    }
    for round in 0..40u8 {
        let opts = Options {
            reserve: n * BS2 as u64,
            budget: Some(1 << 30),
            readahead_window: 16,
            ..Options::default()
        };
        let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
        // A sequential shared scan of the first blocks: read-ahead of the
        // next ones starts (moves when the kernel allows them).
        for b in 0..3u64 {
            let v = fh.bytes(b * BS2 as u64..(b + 1) * BS2 as u64).unwrap();
            assert_eq!(v[0], b as u8 + 1);
        }
        // At once, two threads write every page of blocks 3.. .
        {
            let v = fh
                .bytes_mut(3 * BS2 as u64..n * BS2 as u64)
                .unwrap()
                .into_slice();
            let (lo, hi) = v.split_at_mut(v.len() / 2);
            std::thread::scope(|s| {
                for part in [lo, hi] {
                    s.spawn(move || {
                        for p in part.chunks_mut(4096) {
                            p[0] = round.wrapping_add(100);
                        }
                    });
                }
            });
        }
        assert_eq!(
            fh.dirty_blocks(),
            (3..n).collect::<Vec<_>>(),
            "round {round}"
        );
        fh.writeout(Writeout::STORE).unwrap();
        assert_eq!(f.take_stores(), (3..n).collect::<Vec<_>>());
        fh.discard().unwrap();
        for b in 3..n {
            let data = f.block(b).unwrap();
            assert_eq!(
                data[4096],
                round.wrapping_add(100),
                "round {round} block {b}"
            );
            assert_eq!(data[1], b as u8 + 1);
            // Restore for the next round.
            f.set_block(b, &vec![b as u8 + 1; BS2]);
        }
    }
}
