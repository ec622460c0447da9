//! `FileH::bytes_overwrite`: blocks wholly inside the range that are not
//! resident take the pages of clean donor blocks (no fresh zeroed pages),
//! become dirty and hold exactly what the caller writes; donors reload
//! their stored bytes; partial, resident and donor-less blocks behave as
//! with `bytes_mut`.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use virtmem::{BigFile, FileBigFile, FileH, Options, Writeout};

const BS: usize = 2 << 20;

fn off(b: u64) -> u64 {
    b * BS as u64
}

fn pat(blk: u64, seed: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| ((i / 7) as u8) ^ (blk as u8).wrapping_mul(37) ^ seed)
        .collect()
}

#[test]
fn overwritten_blocks_reuse_donor_pages_and_hold_what_was_written() {
    let n = 12u64;
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(FileBigFile::open(&dir.path().join("blocks"), BS).unwrap());
    let opts = Options {
        reserve: off(n),
        budget: Some(off(64)),
        readahead: false,
        ..Options::default()
    };
    let mut fh = FileH::open(f.clone() as Arc<dyn BigFile>, opts).unwrap();
    // A streaming writer's first transaction: blocks 0..4 written, stored.
    {
        let mut v = fh.bytes_mut(0..off(4)).unwrap();
        for b in 0..4 {
            v[off(b) as usize..off(b + 1) as usize].copy_from_slice(&pat(b, 1));
        }
    }
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    // Block 10 resident and dirty: not a donor, not replaced.
    fh.bytes_mut(off(10)..off(10) + 1).unwrap()[0] = 0xAB;
    let recycled = fh.stats().recycled;
    // The next transaction: blocks 4..8 whole, 8 partly (from byte 5).
    let range = off(4)..off(8) + 5;
    {
        let mut v = fh
            .bytes_overwrite(range.clone(), &[0, 1, 2, 3, 10])
            .unwrap();
        for b in 4..8u64 {
            let s = (off(b) - range.start) as usize;
            v[s..s + BS].copy_from_slice(&pat(b, 2));
        }
        let s = (off(8) - range.start) as usize;
        v[s..].copy_from_slice(&pat(8, 2)[..5]);
    }
    if fh.zero_copy() {
        assert_eq!(fh.stats().recycled, recycled + 4, "{:?}", fh.stats());
        for b in 0..4 {
            assert!(!fh.is_resident(b), "donor {b} dropped");
        }
    }
    assert_eq!(fh.dirty_blocks(), vec![4, 5, 6, 7, 8, 10]);
    assert_eq!(fh.bytes(off(10)..off(10) + 1).unwrap()[0], 0xAB);
    // Donors reload their stored bytes; the new blocks hold what was
    // written, the partial block zeros after it.
    let v = fh.bytes(0..off(9)).unwrap().to_vec();
    for b in 0..4 {
        assert!(
            v[off(b) as usize..off(b + 1) as usize] == pat(b, 1)[..],
            "donor {b}"
        );
    }
    for b in 4..8 {
        assert!(
            v[off(b) as usize..off(b + 1) as usize] == pat(b, 2)[..],
            "block {b}"
        );
    }
    let b8 = &v[off(8) as usize..off(9) as usize];
    assert!(b8[..5] == pat(8, 2)[..5] && b8[5..].iter().all(|&x| x == 0));
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    let mut got = vec![0u8; BS];
    for b in 4..8 {
        f.file().read_exact_at(&mut got, off(b)).unwrap();
        assert!(got == pat(b, 2), "stored block {b}");
    }
    assert!(fh.load_errors().is_empty());
}

#[test]
fn an_overwrite_outside_the_file_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(FileBigFile::open(&dir.path().join("blocks"), BS).unwrap());
    let opts = Options {
        reserve: off(2),
        ..Options::default()
    };
    let mut fh = FileH::open(f as Arc<dyn BigFile>, opts).unwrap();
    fh.bytes_mut(0..1).unwrap()[0] = 1;
    fh.writeout(Writeout::STORE | Writeout::MARKSTORED).unwrap();
    assert!(fh.bytes_overwrite(off(1)..off(3), &[0]).is_err());
    assert!(fh.is_resident(0));
    assert!(fh.dirty_blocks().is_empty());
}
