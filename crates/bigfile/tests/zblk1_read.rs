//! ZBlk1 blocks read through the fast path (chunk payloads copied out of the
//! storage's file mapping, chunk-table buckets parsed without value trees)
//! equal the plain, generic reading of the same records at every snapshot:
//! chunks rewritten and deleted in later transactions, new blocks, holes.

use bigfile::objects::{ZBlkRecord, decode_zdata};
use bigfile::reader::SnapshotFile;
use bigfile::zblk::assemble_chunks;
use bigfile::{ZBigFileH, ZBlkFormat};
use storage::{DB, Oid, Tid, TransactionManager};

mod common;

use common::{new_db, opts, with_file_of};

/// 512 chunks of 4 KiB per block: the chunk table has buckets.
const BS: u64 = 2 << 20;
const NBLK: u64 = 4;

/// Block `blk` at `at` read the plain way: the chunk table and every ZData
/// record loaded one by one and decoded generically.
fn generic_block(db: &DB, at: Tid, f: Oid, blk: u64) -> Option<Vec<u8>> {
    let st = db.storage();
    let sf = SnapshotFile::open(st.as_ref(), at, f).expect("file");
    let zoid = sf.zblk_ref(blk, &mut Vec::new()).expect("lookup")?;
    let (ZBlkRecord::ZBlk1(tab), _) = sf.zblk(zoid).expect("zblk") else {
        panic!("block {blk} is not a ZBlk1");
    };
    let refs = sf
        .chunk_refs(blk, tab, &mut Vec::new())
        .expect("chunk table");
    let chunks: Vec<(i64, Vec<u8>)> = refs
        .iter()
        .map(|&(off, o)| {
            let r = st
                .load_before(o, at.successor())
                .expect("load")
                .expect("zdata");
            (off, decode_zdata(o, &r.data).expect("decode"))
        })
        .collect();
    let mut out = vec![0xEEu8; BS as usize];
    assemble_chunks(chunks.iter().map(|(o, d)| (*o, &d[..])), &mut out).expect("assemble");
    Some(out)
}

#[test]
fn zblk1_reads_equal_generic_loads_at_every_snapshot() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk1)).expect("fh");
    let mut model = vec![vec![0u8; BS as usize]; NBLK as usize];
    let mut snaps: Vec<(Tid, Vec<Vec<u8>>)> = Vec::new();
    let write = |model: &mut Vec<Vec<u8>>, at: u64, data: &[u8]| {
        fh.write(at, data).expect("write");
        let (b, o) = ((at / BS) as usize, (at % BS) as usize);
        model[b][o..o + data.len()].copy_from_slice(data);
    };
    // 1: block 0 full, block 2 with gaps (zero chunks absent); 1 and 3 holes.
    let full: Vec<u8> = (0..BS as usize).map(|i| (i % 251) as u8 | 1).collect();
    write(&mut model, 0, &full);
    write(&mut model, 2 * BS + 5000, &[7u8; 9000]);
    write(&mut model, 2 * BS + 700_000, b"tail bytes");
    tm.commit().expect("commit");
    snaps.push((c.at(), model.clone()));
    // 2: rewrite chunks of block 0, zero one chunk out (deleted), start block 1.
    write(&mut model, 3 * 4096 + 10, b"changed");
    write(&mut model, 100 * 4096, &[9u8; 5000]);
    write(&mut model, 5 * 4096, &[0u8; 4096]);
    write(&mut model, BS + 123, b"block one");
    tm.commit().expect("commit");
    snaps.push((c.at(), model.clone()));
    // 3: change a chunk of block 2 and the first chunk of block 0 again.
    write(&mut model, 2 * BS + 6000, b"again");
    write(&mut model, 0, b"first");
    tm.commit().expect("commit");
    snaps.push((c.at(), model.clone()));

    let st = db.storage();
    for (i, (at, want)) in snaps.iter().enumerate() {
        let sf = SnapshotFile::open(st.as_ref(), *at, f).expect("file");
        for blk in 0..NBLK {
            let mut buf = vec![0xAAu8; BS as usize];
            let (hole, deps) = sf.read_block(blk, &mut buf).expect("read");
            match generic_block(&db, *at, f, blk) {
                None => {
                    assert!(hole, "snapshot {i} block {blk}: a hole");
                    assert!(want[blk as usize].iter().all(|&b| b == 0));
                }
                Some(g) => {
                    assert!(!hole, "snapshot {i} block {blk}");
                    assert!(buf == g, "snapshot {i} block {blk}: fast != generic");
                    assert!(buf == want[blk as usize], "snapshot {i} block {blk}: model");
                    // the ZBlk, every table node and every chunk are deps
                    assert!(deps.direct.len() > 2, "{:?}", deps.direct.len());
                }
            }
        }
        // and through a fresh handle at the newest snapshot
        if i + 1 == snaps.len() {
            let tm2 = TransactionManager::new();
            let c2 = db.open_connection(&tm2).expect("conn2");
            let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(ZBlkFormat::ZBlk1)).expect("fh2");
            for blk in 0..NBLK {
                let got = fh2.read(blk * BS, BS as usize).expect("read");
                assert!(got == want[blk as usize], "handle: block {blk}");
            }
        }
    }
}

/// The ZData record of chunk `oid` at `at` rewritten as `f` makes it (a new
/// transaction); returns its snapshot.
fn rewrite_chunk(db: &DB, oid: Oid, f: impl Fn(&[u8]) -> Vec<u8>) -> Tid {
    let st = db.storage();
    let r = st.load(oid).expect("load");
    let mut t = st
        .tpc_begin(storage::TxnMeta::default(), None)
        .expect("begin");
    t.store(oid, r.serial, f(&r.data)).expect("store");
    t.vote().expect("vote");
    t.finish().expect("finish")
}

/// ZData records of another shape than the block's first one (written by
/// another pickler) are read through the generic decoder: a record of the
/// same length whose payload is a byte shorter with a protocol-4 memo
/// (`MEMOIZE STOP`) passes the storage's length check and fails the shape
/// check (the byte the split read left in its place must read as zero); a
/// longer one fails the storage's check; both equal the generic reading.
#[test]
fn zdata_of_another_shape_falls_back_to_the_generic_decoder() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk1)).expect("fh");
    let full: Vec<u8> = (0..BS as usize).map(|i| (i % 251) as u8 | 1).collect();
    fh.write(0, &full).expect("write");
    tm.commit().expect("commit");
    let st = db.storage();
    let sf = SnapshotFile::open(st.as_ref(), c.at(), f).expect("file");
    let zoid = sf
        .zblk_ref(0, &mut Vec::new())
        .expect("lookup")
        .expect("blk");
    let (ZBlkRecord::ZBlk1(tab), _) = sf.zblk(zoid).expect("zblk") else {
        panic!("not a ZBlk1");
    };
    let refs = sf.chunk_refs(0, tab, &mut Vec::new()).expect("refs");
    // Our writer's ZData: head ending in BINBYTES <len:4>, payload, STOP.
    let split = |data: &[u8]| {
        let (l, _) = storage::pickle::bytes_state(data).expect("plain");
        (l.offset, l.len as usize)
    };
    // Same length: 4095 payload bytes + MEMOIZE STOP.
    let same_len = |data: &[u8]| {
        let (off, len) = split(data);
        let mut out = data[..off].to_vec();
        out[off - 4..off].copy_from_slice(&((len - 1) as u32).to_le_bytes());
        out.extend_from_slice(&data[off..off + len - 1]);
        out.extend_from_slice(&[0x94, b'.']);
        assert_eq!(out.len(), data.len());
        out
    };
    // Longer: the whole payload, then BINPUT 1 STOP.
    let longer = |data: &[u8]| {
        let (off, len) = split(data);
        let mut out = data[..off + len].to_vec();
        out.extend_from_slice(&[b'q', 1, b'.']);
        out
    };
    let mut want = full.clone();
    let mut at = Vec::new();
    at.push(rewrite_chunk(&db, refs[3].1, same_len));
    want[3 * 4096 + 4095] = 0;
    at.push(rewrite_chunk(&db, refs[7].1, longer));
    // The last chunk too (no record after it in its run).
    at.push(rewrite_chunk(&db, refs[refs.len() - 1].1, same_len));
    want[BS as usize - 1] = 0;
    let last = *at.last().expect("at");
    let sf = SnapshotFile::open(st.as_ref(), last, f).expect("file");
    let mut buf = vec![0xAAu8; BS as usize];
    sf.read_block(0, &mut buf).expect("read");
    let g = generic_block(&db, last, f, 0).expect("block");
    assert!(g == want, "generic reading");
    assert!(buf == want, "fast reading falls back");
    // Earlier snapshots still read the chunks' earlier revisions.
    let sf = SnapshotFile::open(st.as_ref(), at[0], f).expect("file");
    sf.read_block(0, &mut buf).expect("read");
    assert!(buf == generic_block(&db, at[0], f, 0).expect("block"));
    assert_eq!(buf[7 * 4096..8 * 4096], full[7 * 4096..8 * 4096]);
}
