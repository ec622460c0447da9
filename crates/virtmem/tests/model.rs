//! Model test: random reads, writes, writeouts, discards and invalidations
//! against a handle (small budget, read-ahead on, so eviction and read-ahead
//! run too) and against a plain `Vec<u8>` model of the same semantics.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use virtmem::{BigFile, BoxError, FileH, Loaded, MappableBlock, MemBigFile, Options, Writeout};

const NB: u64 = 8;
/// Small blocks: every load copies (`UFFDIO_COPY`).
const SMALL: usize = 16 << 10;
/// 2 MiB blocks: loads move huge pages into place (`UFFDIO_MOVE`) when the
/// kernel allows it, and copy while a mutable view may exist.
const HUGE: usize = 2 << 20;

#[derive(Debug, Clone)]
enum Op {
    Read { off: usize, len: usize },
    Write { off: usize, len: usize, byte: u8 },
    WriteU64 { idx: usize, val: u64 },
    Store,
    StoreMarkStored,
    Discard,
    Invalidate(u64),
    ScanAll,
}

fn op(bs: usize) -> impl Strategy<Value = Op> {
    let size = bs * NB as usize;
    #[allow(non_snake_case)]
    let (BS, SIZE) = (bs, size);
    prop_oneof![
        4 => (0..SIZE, 1..3 * BS).prop_map(move |(off, len)| Op::Read { off, len: len.min(SIZE - off) }),
        4 => (0..SIZE, 1..2 * BS, any::<u8>())
            .prop_map(move |(off, len, byte)| Op::Write { off, len: len.min(SIZE - off), byte }),
        2 => (0..SIZE / 8, any::<u64>()).prop_map(|(idx, val)| Op::WriteU64 { idx, val }),
        1 => Just(Op::Store),
        2 => Just(Op::StoreMarkStored),
        1 => Just(Op::Discard),
        2 => (0..NB).prop_map(Op::Invalidate),
        1 => Just(Op::ScanAll),
    ]
}

fn blocks_of(bs: usize, off: usize, len: usize) -> std::ops::RangeInclusive<u64> {
    (off / bs) as u64..=((off + len - 1) / bs) as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn handle_matches_vec_model(
        init in proptest::collection::vec(proptest::option::of(any::<u8>()), NB as usize),
        ops in proptest::collection::vec(op(SMALL), 1..40),
        zero_page_holes in any::<bool>(),
    ) {
        run_model(SMALL, init, ops, zero_page_holes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn handle_matches_vec_model_huge_blocks(
        init in proptest::collection::vec(proptest::option::of(any::<u8>()), NB as usize),
        ops in proptest::collection::vec(op(HUGE), 1..40),
        zero_page_holes in any::<bool>(),
    ) {
        run_model(HUGE, init, ops, zero_page_holes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Blocks offered for mapping straight from a file (mapped while no
    /// mutable view exists): same semantics.
    #[test]
    fn handle_matches_vec_model_mapped_blocks(
        init in proptest::collection::vec(proptest::option::of(any::<u8>()), NB as usize),
        ops in proptest::collection::vec(op(HUGE), 1..40),
        zero_page_holes in any::<bool>(),
    ) {
        run_model_with(HUGE, init, ops, zero_page_holes, Mapping::ReadOnly)?;
    }

    /// Blocks mapped read-write, as for a writable Python connection: no
    /// zero-copy moves, writes found by the page-table scan; same semantics.
    #[test]
    fn handle_matches_vec_model_read_write_mapped_blocks(
        init in proptest::collection::vec(proptest::option::of(any::<u8>()), NB as usize),
        ops in proptest::collection::vec(op(HUGE), 1..40),
        zero_page_holes in any::<bool>(),
    ) {
        run_model_with(HUGE, init, ops, zero_page_holes, Mapping::ReadWrite)?;
    }
}

/// How the model's handle maps blocks its file offers.
#[derive(Clone, Copy, PartialEq)]
enum Mapping {
    /// The file offers none: every block loads.
    None,
    /// Read-only while no mutable view exists (the default options).
    ReadOnly,
    /// Read-write, without zero-copy moves (`map_files_writable`).
    ReadWrite,
}

/// A [`MemBigFile`] whose data blocks are also written to a file, at their
/// block offsets, and offered for mapping from there.
struct Mappable {
    mem: Arc<MemBigFile>,
    file: Arc<std::fs::File>,
}

struct Block(Arc<std::fs::File>, u64);

impl MappableBlock for Block {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.0.as_fd())
    }
    fn offset(&self) -> u64 {
        self.1
    }
}

impl BigFile for Mappable {
    fn block_size(&self) -> usize {
        self.mem.block_size()
    }
    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError> {
        self.mem.load_block(blk, buf)
    }
    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, blk * data.len() as u64)?;
        self.mem.store_block(blk, data)
    }
    fn map_block(&self, blk: u64) -> Result<Option<Box<dyn MappableBlock>>, BoxError> {
        Ok(self.mem.block(blk).map(|_| {
            Box::new(Block(self.file.clone(), blk * self.block_size() as u64))
                as Box<dyn MappableBlock>
        }))
    }
}

fn run_model(
    bs: usize,
    init: Vec<Option<u8>>,
    ops: Vec<Op>,
    zero_page_holes: bool,
) -> Result<(), TestCaseError> {
    run_model_with(bs, init, ops, zero_page_holes, Mapping::None)
}

fn run_model_with(
    bs: usize,
    init: Vec<Option<u8>>,
    ops: Vec<Op>,
    zero_page_holes: bool,
    mapping: Mapping,
) -> Result<(), TestCaseError> {
    let mapped = mapping != Mapping::None;
    let rw = mapping == Mapping::ReadWrite;
    #[allow(non_snake_case)]
    let (BS, SIZE) = (bs, bs * NB as usize);
    {
        // The file: some blocks filled with a byte pattern, some holes.
        let file = Arc::new(MemBigFile::new(BS));
        let mut stored = vec![0u8; SIZE]; // what the file holds
        for (b, fill) in init.iter().enumerate() {
            if let Some(x) = fill {
                let data: Vec<u8> = (0..BS).map(|i| x.wrapping_add(i as u8)).collect();
                stored[b * BS..(b + 1) * BS].copy_from_slice(&data);
                file.set_block(b as u64, &data);
            }
        }
        let backing = tempfile::tempfile().unwrap();
        {
            use std::os::unix::fs::FileExt;
            backing.write_all_at(&stored, 0).unwrap();
        }
        let mappable = Arc::new(Mappable {
            mem: file.clone(),
            file: Arc::new(backing),
        });
        let backend: Arc<dyn BigFile> = if mapped { mappable } else { file.clone() };
        let mut mem = stored.clone(); // what the mapping must show
        let mut dirty = BTreeSet::new();
        let opts = Options {
            reserve: SIZE as u64,
            budget: Some(3 * BS as u64),
            readahead: true,
            readahead_window: 2,
            threads: 2,
            zero_page_holes,
            zero_copy: !rw,
            map_files: true,
            map_files_writable: rw,
        };
        let mut fh = FileH::open(backend, opts).unwrap();
        let trace = std::env::var_os("VIRTMEM_TRACE").is_some();
        for op in ops {
            if trace {
                eprintln!("OP {op:?} model dirty {dirty:?}");
            }
            match op {
                Op::Read { off, len } => {
                    let v = fh.bytes(off as u64..(off + len) as u64).unwrap();
                    prop_assert_eq!(&v[..], &mem[off..off + len], "read {}+{}", off, len);
                }
                Op::Write { off, len, byte } => {
                    fh.bytes_mut(off as u64..(off + len) as u64)
                        .unwrap()
                        .fill(byte);
                    mem[off..off + len].fill(byte);
                    dirty.extend(blocks_of(BS, off, len));
                }
                Op::WriteU64 { idx, val } => {
                    fh.view_mut::<u64>(idx as u64 * 8, 1).unwrap()[0] = val;
                    mem[idx * 8..idx * 8 + 8].copy_from_slice(&val.to_ne_bytes());
                    dirty.extend(blocks_of(BS, idx * 8, 8));
                }
                Op::Store | Op::StoreMarkStored => {
                    let how = if matches!(op, Op::Store) {
                        Writeout::STORE
                    } else {
                        Writeout::STORE | Writeout::MARKSTORED
                    };
                    fh.writeout(how).unwrap();
                    let stores = file.take_stores();
                    prop_assert_eq!(&stores, &dirty.iter().copied().collect::<Vec<_>>());
                    for &b in &dirty {
                        let r = b as usize * BS..(b as usize + 1) * BS;
                        stored[r.clone()].copy_from_slice(&mem[r.clone()]);
                        prop_assert_eq!(file.block(b).unwrap(), mem[r].to_vec());
                    }
                    if matches!(op, Op::StoreMarkStored) {
                        dirty.clear();
                    }
                }
                Op::Discard => {
                    fh.discard().unwrap();
                    for &b in &dirty {
                        let r = b as usize * BS..(b as usize + 1) * BS;
                        mem[r.clone()].copy_from_slice(&stored[r]);
                    }
                    dirty.clear();
                }
                Op::Invalidate(b) => {
                    fh.invalidate(b).unwrap();
                    let r = b as usize * BS..(b as usize + 1) * BS;
                    mem[r.clone()].copy_from_slice(&stored[r]);
                    dirty.remove(&b);
                }
                Op::ScanAll => {
                    let v = fh.bytes(0..SIZE as u64).unwrap();
                    prop_assert!(v[..] == mem[..], "full scan differs");
                }
            }
            prop_assert_eq!(fh.dirty_blocks(), dirty.iter().copied().collect::<Vec<_>>());
            prop_assert!(file.take_stores().is_empty(), "stores outside writeout");
        }
        let v = fh.bytes(0..SIZE as u64).unwrap();
        prop_assert!(v[..] == mem[..], "final scan differs");
        prop_assert!(fh.load_errors().is_empty());
        if BS == HUGE && std::env::var_os("VIRTMEM_TRACE").is_some() {
            eprintln!("stats {:?}", fh.stats());
        }
        // Read-write mapped blocks are pinned, at most half the budget
        // (here one block): a dirty one leaves no room to map another.
        if fh.maps_writable() {
            fh.unmap_pinned().unwrap();
        }
        let can_map = fh.zero_copy() || (fh.maps_writable() && dirty.is_empty());
        if mapped && can_map {
            // A clean stored block loaded by a shared view is mapped: drop
            // every clean data block (invalidation, the file unchanged) and
            // read them again.
            let clean: Vec<u64> = (0..(SIZE / BS) as u64)
                .filter(|b| file.block(*b).is_some() && !dirty.contains(b))
                .collect();
            let before = fh.stats().mapped_loads;
            for &b in &clean {
                fh.invalidate(b).unwrap();
            }
            for &b in &clean {
                let r = b as usize * BS..(b as usize + 1) * BS;
                let v = fh.bytes(r.start as u64..r.end as u64).unwrap();
                prop_assert!(v[..] == mem[r], "block {} read again differs", b);
            }
            let st = fh.stats();
            prop_assert!(clean.is_empty() || st.mapped_loads > before, "{:?}", st);
        }
    }
    Ok(())
}
