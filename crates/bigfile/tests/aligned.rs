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
