//! Damaged bigfile objects read through a handle give errors, not wrong
//! data.
//!
//! The damage is committed through the storage crate (crafted objects in a
//! transaction, as a buggy or hostile writer would store them): a ZBlk0
//! bigger than the block size, a ZBlk1 whose chunks overlap, a ZBlk1 whose
//! chunk table points to a ZData that does not exist, a blktab entry
//! pointing to a missing object, and one pointing to an object of the wrong
//! class. The checked read path (`ZBigFileH::read`, which prefetches and
//! returns load errors as values) must fail with an error naming the block
//! or the oid; the healthy block beside them still reads.

use bigfile::objects::MODULE;
use bigfile::{ZBigFile, ZBigFileH, ZBlk0, ZBlk1, ZBlkFormat, ZData};
use storage::btree::{self, BTree};
use storage::{Oid, TransactionManager, Value};

mod common;

use common::{BS, new_db, opts, with_file};

#[test]
fn damaged_blocks_read_as_errors_naming_them() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    // block 0: healthy
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    fh.write(0, b"healthy").expect("w");
    tm.commit().expect("commit");
    drop(fh);
    let blktab = BTree {
        family: &btree::LO,
        oid: c.get::<ZBigFile>(f).expect("file").blktab,
    };
    let zref = |o: Oid, class: &str| Value::persistent_ref(o, MODULE, class);
    // block 1: a ZBlk0 bigger than a block
    let big = c
        .add(ZBlk0 {
            data: vec![1; BS as usize + 1],
        })
        .expect("add");
    blktab
        .insert(&c, Value::Int(1), zref(big, "ZBlk0"))
        .expect("ins");
    // block 2: a ZBlk1 with overlapping chunks (0..4096 and 100..4196)
    let tab = BTree::create(&c, &btree::IO).expect("tab");
    for off in [0i64, 100] {
        let zd = c
            .add(ZData {
                data: vec![2; 4096],
            })
            .expect("add");
        tab.insert(&c, Value::Int(off), zref(zd, "ZData"))
            .expect("ins");
    }
    let z1 = c.add(ZBlk1 { chunktab: tab.oid }).expect("add");
    blktab
        .insert(&c, Value::Int(2), zref(z1, "ZBlk1"))
        .expect("ins");
    // block 3: a ZBlk1 whose chunk is a dangling ZData oid
    let dangling_zdata = Oid(0xdead_0001);
    let tab = BTree::create(&c, &btree::IO).expect("tab");
    tab.insert(&c, Value::Int(0), zref(dangling_zdata, "ZData"))
        .expect("ins");
    let z1 = c.add(ZBlk1 { chunktab: tab.oid }).expect("add");
    blktab
        .insert(&c, Value::Int(3), zref(z1, "ZBlk1"))
        .expect("ins");
    // block 4: blktab points to a missing object
    let missing = Oid(0xdead_0002);
    blktab
        .insert(&c, Value::Int(4), zref(missing, "ZBlk0"))
        .expect("ins");
    // block 5: blktab points to an object of the wrong class
    let wrong = c.add(ZData { data: vec![5; 10] }).expect("add");
    blktab
        .insert(&c, Value::Int(5), zref(wrong, "ZBlk0"))
        .expect("ins");
    tm.commit().expect("commit the damage");

    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    assert_eq!(fh.read(0, 7).expect("healthy block"), b"healthy");
    let expect: [(u64, String); 5] = [
        (1, "block 1".into()),
        (2, "block 2".into()),
        (3, format!("{dangling_zdata}")),
        (4, format!("{missing}")),
        (5, format!("{wrong}")),
    ];
    for (blk, names) in expect {
        match fh.read(blk * BS, 16) {
            Ok(d) => panic!("block {blk}: damaged block read as data {d:?}"),
            Err(e) => {
                let msg = format!("{e}");
                eprintln!("block {blk}: {msg}");
                assert!(
                    msg.contains(&names),
                    "block {blk}: the error does not name {names:?}: {msg}"
                );
            }
        }
    }
    // the healthy block still reads after the errors
    assert_eq!(fh.read(0, 7).expect("healthy block"), b"healthy");
}
