//! Committed ZBlk0 blocks read through views are mapped straight from
//! Data.fs (virtmem's `map_block`, page-aligned payloads): no copy, the same
//! bytes, exact invalidation when another connection commits, writes
//! through the same handle tracked (a mutable view puts the blocks back to
//! the engine's memory), and ZBlk1 blocks or uncommitted ones loaded the
//! ordinary way.

mod common;

use bigfile::{ZBigFileH, ZBlkFormat};
use storage::TransactionManager;

use common::{new_db, opts, with_file_of};

const BS: u64 = 2 << 20;

fn pattern(seed: u8) -> Vec<u8> {
    (0..BS as usize)
        .map(|i| (i / 3) as u8 ^ seed.wrapping_mul(31) | 1)
        .collect()
}

#[test]
fn committed_zblk0_blocks_are_mapped_and_invalidated_exactly() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let fh1 = ZBigFileH::open(&c1, &tm1, f, opts(ZBlkFormat::ZBlk0)).expect("fh1");
    for blk in 0..4u8 {
        fh1.write(u64::from(blk) * BS, &pattern(blk))
            .expect("write");
    }
    tm1.commit().expect("commit");

    let c2 = db.open_connection(&tm2).expect("c2");
    let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(ZBlkFormat::ZBlk0)).expect("fh2");
    let zero_copy = fh2.fileh_read().expect("h").zero_copy();
    let read_all = |fh: &ZBigFileH| -> Vec<Vec<u8>> {
        let h = fh.fileh_read().expect("h");
        let v = h.bytes(0..4 * BS).expect("view");
        v.chunks(BS as usize).map(<[u8]>::to_vec).collect()
    };
    let v0 = read_all(&fh2);
    for blk in 0..4u8 {
        assert!(v0[blk as usize] == pattern(blk), "block {blk}");
    }
    let st = fh2.stats().expect("stats");
    if !zero_copy {
        eprintln!("zero-copy unavailable here: blocks are not mapped");
        return;
    }
    assert_eq!(st.mapped_loads, 4, "{st:?}");

    // Another connection changes block 1: exactly it is reloaded (mapped
    // again, from its new record) at the next transaction boundary.
    fh1.write(BS + 7, b"changed").expect("write");
    tm1.commit().expect("commit");
    assert_eq!(read_all(&fh2), v0, "isolation");
    tm2.abort();
    let v1 = read_all(&fh2);
    let mut want1 = pattern(1);
    want1[7..14].copy_from_slice(b"changed");
    assert!(v1[1] == want1);
    assert!(v1[0] == v0[0] && v1[2] == v0[2] && v1[3] == v0[3]);
    let st = fh2.stats().expect("stats");
    assert_eq!(st.mapped_loads, 5, "block 1 mapped again: {st:?}");

    // A write through the reading handle: the engine's memory again, the
    // write is stored and seen by the other connection.
    fh2.write(2 * BS + 100, b"from 2").expect("write");
    let h = fh2.fileh_read().expect("h");
    assert_eq!(
        &h.bytes(2 * BS + 100..2 * BS + 106).expect("v")[..],
        b"from 2"
    );
    assert!(h.bytes(0..BS).expect("v")[..] == v0[0][..]);
    drop(h);
    tm2.commit().expect("commit 2");
    tm1.abort();
    assert_eq!(fh1.read(2 * BS + 100, 6).expect("r"), b"from 2");
}

#[test]
fn zblk1_and_uncommitted_blocks_are_not_mapped() {
    let (_d, db) = new_db();
    let f = with_file_of(&db, BS);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk1)).expect("fh");
    fh.write(0, &pattern(9)).expect("write");
    tm.commit().expect("commit");
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(ZBlkFormat::ZBlk1)).expect("fh2");
    assert!(fh2.read(0, BS as usize).expect("r") == pattern(9));
    // A block written in this transaction and spilled reads from memory.
    fh2.write(BS, &pattern(3)).expect("write");
    assert!(fh2.read(BS, BS as usize).expect("r") == pattern(3));
    assert_eq!(fh2.stats().expect("stats").mapped_loads, 0);
}
