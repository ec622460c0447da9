//! Model test with two threads: concurrent faults, writes and reads through
//! views of one handle, checked against a `Vec<u8>` model at barriers.
//!
//! The engine's `&mut` API means writeout and discard run with no view
//! alive, so the test goes in rounds. In a round, (1) two threads write and
//! read concurrently through one mutable view split at a random byte (not a
//! block boundary: the block holding the cut is written by both threads at
//! once, on different bytes), (2) two threads read random ranges of the
//! whole file concurrently through their own shared views (so both fault the
//! same blocks at once, under a budget small enough to evict), then (3) the
//! main thread, with no view alive, checks the dirty set, and stores,
//! stores-and-marks, discards or does nothing; the stores must be exactly
//! the dirty blocks with the model's bytes, a discard must bring back the
//! stored bytes. `threads.rs` covers fixed patterns (many writers of
//! quarter blocks, read-ahead races); this one explores.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use virtmem::{BigFile, FileH, MemBigFile, Options, Writeout};

const NB: usize = 8;
const BS: usize = 16 << 10;
const SIZE: usize = NB * BS;

/// A thread's step inside its part: `at` and `len` are taken modulo the
/// part's length.
#[derive(Debug, Clone)]
enum Step {
    Write { at: usize, len: usize, byte: u8 },
    Read { at: usize, len: usize },
}

#[derive(Debug, Clone, Copy)]
enum AtBarrier {
    Nothing,
    Store,
    StoreMarkStored,
    Discard,
}

#[derive(Debug, Clone)]
struct Round {
    cut: usize,
    steps: [Vec<Step>; 2],
    reads: [Vec<(usize, usize)>; 2],
    then: AtBarrier,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (any::<usize>(), 1..2 * BS, any::<u8>()).prop_map(|(at, len, byte)| Step::Write { at, len, byte }),
        1 => (any::<usize>(), 1..2 * BS).prop_map(|(at, len)| Step::Read { at, len }),
    ]
}

fn round() -> impl Strategy<Value = Round> {
    let steps = || proptest::collection::vec(step(), 0..12);
    let reads = || proptest::collection::vec((0..SIZE, 1..3 * BS), 0..8);
    (
        1..SIZE,
        [steps(), steps()],
        [reads(), reads()],
        prop_oneof![
            Just(AtBarrier::Nothing),
            Just(AtBarrier::Store),
            Just(AtBarrier::StoreMarkStored),
            Just(AtBarrier::Discard)
        ],
    )
        .prop_map(|(cut, steps, reads, then)| Round {
            cut,
            steps,
            reads,
            then,
        })
}

/// Run `steps` on `part` (bytes `base..` of the file) and on `model` (the
/// same bytes of the model); returns the blocks written.
fn run_steps(part: &mut [u8], model: &mut [u8], base: usize, steps: &[Step]) -> BTreeSet<usize> {
    let mut written = BTreeSet::new();
    let n = part.len();
    for s in steps {
        match *s {
            Step::Write { at, len, byte } => {
                let at = at % n;
                let len = len.min(n - at);
                part[at..at + len].fill(byte);
                model[at..at + len].fill(byte);
                written.extend((base + at) / BS..=(base + at + len - 1) / BS);
            }
            Step::Read { at, len } => {
                let at = at % n;
                let len = len.min(n - at);
                assert!(
                    part[at..at + len] == model[at..at + len],
                    "read {}+{len} differs",
                    base + at
                );
            }
        }
    }
    written
}

fn run(init: &[Option<u8>], rounds: &[Round]) -> Result<(), TestCaseError> {
    let file = Arc::new(MemBigFile::new(BS));
    let mut stored = vec![0u8; SIZE];
    for (b, fill) in init.iter().enumerate() {
        if let Some(x) = fill {
            let data: Vec<u8> = (0..BS).map(|i| x.wrapping_add(i as u8)).collect();
            stored[b * BS..(b + 1) * BS].copy_from_slice(&data);
            file.set_block(b as u64, &data);
        }
    }
    let mut mem = stored.clone();
    let mut dirty = BTreeSet::new();
    let opts = Options {
        reserve: SIZE as u64,
        budget: Some(3 * BS as u64),
        readahead: true,
        readahead_window: 2,
        threads: 2,
        ..Options::default()
    };
    let mut fh = FileH::open(file.clone() as Arc<dyn BigFile>, opts).expect("open");
    for r in rounds {
        // (1) two writers on one mutable view, cut inside a block
        {
            let view = fh.bytes_mut(0..SIZE as u64).expect("view").into_slice();
            let (a, b) = view.split_at_mut(r.cut);
            let (ma, mb) = mem.split_at_mut(r.cut);
            let go = Barrier::new(2);
            let (wa, wb) = std::thread::scope(|s| {
                let go = &go;
                let ta = s.spawn(move || {
                    go.wait();
                    run_steps(a, ma, 0, &r.steps[0])
                });
                let tb = s.spawn(move || {
                    go.wait();
                    run_steps(b, mb, r.cut, &r.steps[1])
                });
                (ta.join().expect("writer a"), tb.join().expect("writer b"))
            });
            dirty.extend(wa);
            dirty.extend(wb);
        }
        // (2) two readers of the whole file, overlapping
        {
            let go = Barrier::new(2);
            let (fh, mem) = (&fh, &mem);
            std::thread::scope(|s| {
                for reads in &r.reads {
                    let go = &go;
                    s.spawn(move || {
                        let v = fh.bytes(0..SIZE as u64).expect("view");
                        go.wait();
                        for &(at, len) in reads {
                            let len = len.min(SIZE - at);
                            assert!(v[at..at + len] == mem[at..at + len], "read {at}+{len}");
                        }
                    });
                }
            });
        }
        // (3) the barrier: no view alive
        let want: Vec<u64> = dirty.iter().map(|&b| b as u64).collect();
        prop_assert_eq!(fh.dirty_blocks(), want.clone(), "dirty blocks");
        prop_assert!(file.take_stores().is_empty(), "stores outside writeout");
        match r.then {
            AtBarrier::Nothing => {}
            AtBarrier::Store | AtBarrier::StoreMarkStored => {
                let how = if matches!(r.then, AtBarrier::Store) {
                    Writeout::STORE
                } else {
                    Writeout::STORE | Writeout::MARKSTORED
                };
                fh.writeout(how).expect("writeout");
                prop_assert_eq!(file.take_stores(), want);
                for &b in &dirty {
                    let rg = b * BS..(b + 1) * BS;
                    stored[rg.clone()].copy_from_slice(&mem[rg.clone()]);
                    prop_assert!(
                        file.block(b as u64).expect("block") == mem[rg],
                        "stored block {}",
                        b
                    );
                }
                if matches!(r.then, AtBarrier::StoreMarkStored) {
                    dirty.clear();
                }
            }
            AtBarrier::Discard => {
                fh.discard().expect("discard");
                for &b in &dirty {
                    let rg = b * BS..(b + 1) * BS;
                    mem[rg.clone()].copy_from_slice(&stored[rg]);
                }
                dirty.clear();
            }
        }
        let v = fh.bytes(0..SIZE as u64).expect("view");
        prop_assert!(v[..] == mem[..], "full scan after the barrier differs");
    }
    prop_assert!(fh.load_errors().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn two_threads_match_vec_model(
        init in proptest::collection::vec(proptest::option::of(any::<u8>()), NB),
        rounds in proptest::collection::vec(round(), 1..8),
    ) {
        run(&init, &rounds)?;
    }
}
