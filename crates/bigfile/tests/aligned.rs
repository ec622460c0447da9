//! ZBlk0 blocks committed through a handle are stored with their payload
//! at a page-aligned offset of Data.fs (padded records), and every reader
//! of blocks in place still finds them: a scan gets them lent from the
//! file mapping, at an offset the file can be mapped from.

mod common;

use bigfile::reader::SnapshotFile;
use bigfile::{StoredBlock, ZBigFileH, ZBlkFormat};
use storage::{ALIGNED_PAYLOAD_MIN, PAYLOAD_ALIGN, TransactionManager};

use common::{new_db, opts, with_file_of};

const BS: u64 = 2 << 20;

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + seed) % 255) as u8 + 1)
        .collect()
}

#[test]
fn zblk0_blocks_are_lent_in_place_from_aligned_offsets() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    // Payload lengths (trailing zeros are trimmed): full blocks, odd
    // lengths over and under the alignment threshold, rewritten in later
    // transactions so that records of every length precede others.
    let lens = [
        BS as usize,
        ALIGNED_PAYLOAD_MIN + 3,
        1000,
        (BS as usize) - 5,
        ALIGNED_PAYLOAD_MIN - 1,
    ];
    let mut want: Vec<Vec<u8>> = vec![Vec::new(); lens.len()];
    for t in 0..4usize {
        for (blk, w) in want.iter_mut().enumerate() {
            if (blk + t) % 2 == 0 || t == 0 {
                let len = lens[(blk + t) % lens.len()];
                *w = pattern(blk * 7 + t, len);
                let mut block = w.clone();
                block.resize(BS as usize, 0);
                fh.write(blk as u64 * BS, &block).expect("write");
            }
        }
        tm.commit().expect("commit");
        let sf = SnapshotFile::open(db.storage().as_ref(), c.at(), f).expect("sf");
        for (blk, w) in want.iter().enumerate() {
            let StoredBlock::Mapped(rec) = sf.stored_block(blk as u64).expect("stored") else {
                panic!(
                    "transaction {t}: block {blk} ({} bytes) not lent in place",
                    w.len()
                );
            };
            assert_eq!(rec.data(), &w[..], "transaction {t} block {blk}");
            let (_, at) = rec.file_range().expect("a file");
            if w.len() >= ALIGNED_PAYLOAD_MIN {
                assert_eq!(at % PAYLOAD_ALIGN, 0, "transaction {t} block {blk} at {at}");
            }
            let mut buf = vec![0u8; BS as usize];
            sf.read_block(blk as u64, &mut buf).expect("read");
            assert_eq!(&buf[..w.len()], &w[..]);
            assert!(buf[w.len()..].iter().all(|&b| b == 0));
        }
    }
}

/// What a block table (one walk of blktab) answers is what a lookup per
/// block answers, holes included; a table of an older snapshot is not
/// used for a newer one.
#[test]
fn a_block_table_lends_what_per_block_lookups_lend() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    // Blocks 0, 1, 3 and 5 written; 2 and 4 holes.
    for blk in [0u64, 1, 3, 5] {
        fh.write(blk * BS, &pattern(blk as usize, BS as usize))
            .expect("write");
    }
    tm.commit().expect("commit");
    let table = fh.block_table().expect("table");
    assert_eq!(table.len(), 4);
    for blk in 0..7u64 {
        let one = fh.stored_block(blk).expect("stored");
        let via = fh.stored_block_in(&table, blk).expect("stored in table");
        match (&one, &via) {
            (StoredBlock::Mapped(a), StoredBlock::Mapped(b)) => {
                assert_eq!(a.data(), b.data(), "block {blk}");
                assert_eq!(a.data(), &pattern(blk as usize, BS as usize)[..]);
            }
            (StoredBlock::Hole, StoredBlock::Hole) => {
                assert!(table.zblk(blk).is_none(), "block {blk}");
            }
            _ => panic!("block {blk}: {one:?} against {via:?}"),
        }
    }
    // Block 2 is written in a later transaction: the old table says hole,
    // but it is not used at the handle's new snapshot.
    fh.write(2 * BS, &pattern(2, BS as usize)).expect("write");
    tm.commit().expect("commit");
    assert!(table.zblk(2).is_none());
    let StoredBlock::Mapped(rec) = fh.stored_block_in(&table, 2).expect("stored") else {
        panic!("block 2 not lent after its commit");
    };
    assert_eq!(rec.data(), &pattern(2, BS as usize)[..]);
}

/// A file created in this transaction has nothing stored: its block table
/// is empty (not an error: the snapshot has no such object) and no block
/// is lent.
#[test]
fn a_file_created_in_this_transaction_has_an_empty_block_table() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = bigfile::create_file(&c, BS).expect("file");
    let fh = ZBigFileH::open_new(&c, &tm, f, BS, opts(ZBlkFormat::ZBlk0)).expect("fh");
    fh.write(0, &pattern(0, BS as usize)).expect("write");
    let table = fh.block_table().expect("the table of a new file");
    assert!(table.is_empty());
    assert!(matches!(
        fh.stored_block_in(&table, 0).expect("stored"),
        StoredBlock::Unavailable
    ));
}
