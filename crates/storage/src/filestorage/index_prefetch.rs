//! Warming the record headers an index scan is about to read, from many
//! threads at once.
//!
//! # Model
//!
//! The index scan ([`super::index::scan`]) follows a chain: each record's
//! header gives the length that leads to the next one, so on a cold cache
//! it waits for one disk read per record, one after the other. A file of
//! large records (an array's 2 MiB blocks) has its headers 2 MiB apart, and
//! no read-ahead helps. Measured on the 2-core VM: opening a 28 GiB
//! database of 14 400 ZBlk0 records after `drop_caches` took 2.46 s, 14 543
//! disk requests, each a 21 KiB read-ahead around one header; that was 5-6%
//! of a cold `wendelin stat` of the whole array (43-46 s).
//!
//! The chains of different transactions are independent once the
//! transactions' positions are known, and those form a chain of their own
//! that is short for large transactions (one header per transaction). So
//! while the scan runs unchanged on the caller's thread, a walker follows
//! the transaction headers ahead of it and hands every large transaction
//! ([`Plan::min_txn`] bytes or more: sparse headers) to a pool of
//! [`Plan::workers`] threads, each of which walks that transaction's data
//! headers with the same 16 KiB reads the scan will make. The disk then has
//! as many reads in flight as there are workers, and the scan finds its
//! headers in the page cache. Small transactions are left to the scan: its
//! window serves their dense headers from one read.
//!
//! Nothing here decides anything: the prefetchers check no more than they
//! need to walk (a length that leaves its transaction stops the walk), read
//! only, and stop when the scan returns. Every check and every error stays
//! the scan's, so a damaged file is reported exactly as without them.
//! Files with less than [`Plan::min_bytes`] left to scan are scanned alone,
//! and a transaction whose header the walker reads from the page cache is
//! left to the scan (a warm open starts no worker).
//!
//! Once the scan is done, the pages of the cold transactions are given back
//! to the kernel ([`give_back`]): headers cached every 2 MiB would break the
//! read-ahead of a later sequential read of the file.

use super::format::{DATA_HDR_LEN, DataHeader, STATUS_UNDONE, TXN_HDR_LEN, TxnHeader};
use super::index::Window;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

/// When and how widely to prefetch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// Threads walking transactions' data headers (each has one read in
    /// flight at a time).
    pub(super) workers: usize,
    /// Transactions of at least this many bytes are walked ahead.
    pub(super) min_txn: u64,
    /// Scans of fewer bytes than this run alone.
    pub(super) min_bytes: u64,
    /// Leave to the scan a transaction whose header the walker read from
    /// the page cache.
    pub(super) skip_cached: bool,
}

/// The plan scans use: 16 reads in flight (a virtio or NVMe queue takes
/// far more; 16 already hides a 0.2 ms read latency behind a 2 MiB stride),
/// transactions of 1 MiB and more, files with 64 MiB or more to scan, and
/// only transactions found cold: on a warm cache the workers would only
/// repeat the scan's reads (opening a 4 GiB file took 19 ms with them
/// against 10.5 ms in an earlier session's run).
pub(super) const PLAN: Plan = Plan {
    workers: 16,
    min_txn: 1 << 20,
    min_bytes: 64 << 20,
    skip_cached: true,
};

/// Run `scan` (which reads `file` from `from` on) while prefetchers warm
/// the data headers of the large transactions ahead of it (see the module
/// documentation); they stop when `scan` returns.
pub(super) fn with_prefetch<R>(
    file: &File,
    path: &Path,
    from: u64,
    plan: Plan,
    scan: impl FnOnce() -> R,
) -> R {
    let size = file.metadata().map_or(0, |m| m.len());
    if size.saturating_sub(from) < plan.min_bytes || plan.workers == 0 {
        return scan();
    }
    let stop = AtomicBool::new(false);
    let (out, cold) = std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("fs-index-prefetch".into())
            .spawn_scoped(s, || prefetch(file, path, from, size, plan, &stop));
        if let Err(e) = &spawned {
            tracing::debug!(error = %e, "index prefetch not started");
        }
        let out = scan();
        stop.store(true, Ordering::Relaxed);
        let cold = match spawned.map(|h| h.join()) {
            Ok(Ok(p)) => {
                tracing::debug!(headers = p.headers, cold = ?p.cold, "index prefetch");
                p.cold
            }
            _ => Vec::new(),
        };
        (out, cold)
    });
    give_back(file, &cold);
    out
}

/// What [`prefetch`] did.
#[derive(Debug, Default)]
pub(super) struct Prefetched {
    /// Data headers the workers read.
    pub(super) headers: usize,
    /// The cold transactions handed to the workers (`[start, end)` of the
    /// file, the transaction header included), adjacent ones merged.
    pub(super) cold: Vec<std::ops::Range<u64>>,
}

/// Give the pages of the cold transactions back to the kernel
/// (`POSIX_FADV_DONTNEED`) once the scan is done with their headers.
///
/// The scan and the workers read 16 KiB around each data header, so a cold
/// file of 2 MiB records is left with a few cached pages every 2 MiB. They
/// break the kernel's read-ahead of a later sequential read of the file
/// (an out-of-core scan through FileStorage's mapping): it stops at each
/// cached page and cannot build large folios across them, so the disk gets
/// requests of 1 MiB or less (254 segments of one 4 KiB page) where a
/// clean file gets 4 MiB ones. Measured on the 2-core VM, a 28 GiB array
/// after `drop_caches`, `wendelin stat --ram-budget 2GiB` against a
/// numpy.memmap sum of the same Data.fs (7 600 requests): with the pages
/// kept, 30 k requests advising blocks ahead and 60-65 k leaving the reads
/// to the scan's faults; given back, and the scan's reads made by one
/// reader ahead, 22.7 k, of which 15 k are the open's (see the README's
/// larger-than-RAM note). These pages came from the disk (the transaction
/// was cold), so giving them back leaves the page cache as it was before
/// the open; a warm file starts no worker and gives back nothing.
fn give_back(file: &File, cold: &[std::ops::Range<u64>]) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    for r in cold {
        let (Ok(off), Ok(len)) = (i64::try_from(r.start), i64::try_from(r.end - r.start)) else {
            continue;
        };
        // Advice only: on failure the pages stay cached, as before.
        let _ = posix_fadvise(file, off, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

/// Walk the transactions from `from` to `size` and, on up to
/// `plan.workers` threads (started when the first cold transaction is
/// found), the data headers of the large ones, until done or `stop`.
pub(super) fn prefetch(
    file: &File,
    path: &Path,
    from: u64,
    size: u64,
    plan: Plan,
    stop: &AtomicBool,
) -> Prefetched {
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let rx = Mutex::new(rx);
    let headers = AtomicUsize::new(0);
    let mut cold: Vec<std::ops::Range<u64>> = Vec::new();
    std::thread::scope(|s| {
        let mut workers = 0usize;
        let mut send = |range: (u64, u64)| -> bool {
            if workers < plan.workers {
                let spawned = std::thread::Builder::new()
                    .name("fs-index-prefetch".into())
                    .spawn_scoped(s, || {
                        let mut w = Window::new(file, path, size);
                        loop {
                            // Waits for the walker's next transaction; the
                            // walker ends (dropping the sender) at the file's
                            // end, at a header it cannot follow, or at `stop`.
                            let next = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => return,
                            };
                            let Ok((start, end)) = next else { return };
                            let n = walk_data_headers(&mut w, start, end, stop);
                            headers.fetch_add(n, Ordering::Relaxed);
                        }
                    });
                if spawned.is_ok() {
                    workers += 1;
                }
            }
            workers > 0 && tx.send(range).is_ok()
        };
        walk_transactions(file, path, from, size, plan, stop, &mut |txn, data| {
            let sent = send(data);
            if sent {
                match cold.last_mut() {
                    Some(last) if last.end == txn.start => last.end = txn.end,
                    _ => cold.push(txn),
                }
            }
            sent
        });
        // The workers end once the sender is gone (the closure only
        // borrowed it).
        drop(tx);
    });
    Prefetched {
        headers: headers.into_inner(),
        cold,
    }
}

/// A read slower than this came from the disk, not the page cache (a page
/// cache hit of 16 KiB takes a few microseconds, a disk read 100 or more).
const COLD_READ: Duration = Duration::from_micros(50);

/// Follow the transaction headers from `from`, giving the range of every
/// transaction of `plan.min_txn` bytes or more (not undone), from its
/// header to the next one's, and its data range to `send` (false: stop),
/// unless its header was read from the page cache
/// (`plan.skip_cached`: a warm file costs no worker).
fn walk_transactions(
    file: &File,
    path: &Path,
    mut pos: u64,
    size: u64,
    plan: Plan,
    stop: &AtomicBool,
    send: &mut dyn FnMut(std::ops::Range<u64>, (u64, u64)) -> bool,
) {
    let mut w = Window::new(file, path, size);
    while pos < size && !stop.load(Ordering::Relaxed) {
        // The header's read also reads the first data header (the window
        // holds 16 KiB): its time tells a cold transaction.
        let Ok(Some(hb)) = w.get_arr::<23>(pos) else {
            return;
        };
        let cold = !plan.skip_cached || w.last_read.is_some_and(|d| d >= COLD_READ);
        let h = TxnHeader::parse(pos, &hb);
        let fits = h.tlen >= TXN_HDR_LEN && h.tlen <= size - pos && size - pos - h.tlen >= 8;
        if !fits {
            return;
        }
        let first = pos + h.header_len();
        let large = h.tlen >= plan.min_txn && h.status != STATUS_UNDONE && first < pos + h.tlen;
        if large && cold && !send(pos..h.next_pos(), (first, pos + h.tlen)) {
            return;
        }
        pos = h.next_pos();
    }
}

/// Read the data headers of one transaction, `[start, end)`, as the scan
/// will (a window of 16 KiB from each header not already in the window). Returns how
/// many it read.
fn walk_data_headers(w: &mut Window<'_>, start: u64, end: u64, stop: &AtomicBool) -> usize {
    let mut p = start;
    let mut n = 0;
    while p.saturating_add(DATA_HDR_LEN) <= end && !stop.load(Ordering::Relaxed) {
        let Ok(Some(b)) = w.get_arr::<42>(p) else {
            break;
        };
        n += 1;
        let next = p.saturating_add(DataHeader::parse(p, &b).record_len());
        if next <= p || next > end {
            break;
        }
        p = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filestorage::FileStorage;
    use crate::ids::{Oid, Tid};
    use crate::storage::{Storage, TxnMeta};

    /// A database of `txns` transactions of `per` records of `len` bytes.
    fn database(dir: &Path, txns: usize, per: usize, len: usize) -> std::path::PathBuf {
        let path = dir.join("d.fs");
        let fs = FileStorage::open(&path).expect("open");
        let mut oid = 1u64;
        for t in 0..txns {
            let mut txn = fs.tpc_begin(TxnMeta::default(), None).expect("begin");
            for _ in 0..per {
                let data = vec![t as u8; len];
                txn.store(Oid(oid), Tid::ZERO, data).expect("store");
                oid += 1;
            }
            txn.vote().expect("vote");
            txn.finish().expect("finish");
        }
        path
    }

    #[test]
    fn the_workers_read_every_data_header_of_the_large_transactions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 3 large transactions of 4 records, then 5 small ones of 2.
        let path = database(dir.path(), 3, 4, 300 << 10);
        {
            let fs = FileStorage::open(&path).expect("open");
            for t in 0..5u64 {
                let mut txn = fs.tpc_begin(TxnMeta::default(), None).expect("begin");
                txn.store(Oid(100 + 2 * t), Tid::ZERO, b"a".to_vec())
                    .expect("store");
                txn.store(Oid(101 + 2 * t), Tid::ZERO, b"b".to_vec())
                    .expect("store");
                txn.vote().expect("vote");
                txn.finish().expect("finish");
            }
        }
        let file = File::open(&path).expect("file");
        let size = file.metadata().expect("stat").len();
        let plan = Plan {
            workers: 3,
            min_txn: 1 << 20,
            min_bytes: 0,
            skip_cached: false,
        };
        let stop = AtomicBool::new(false);
        assert_eq!(prefetch(&file, &path, 4, size, plan, &stop).headers, 12);
        // Every transaction is large with a lower bar: also the root's
        // creation (1 record) and the small ones (5 of 2).
        let all = Plan { min_txn: 0, ..plan };
        assert_eq!(
            prefetch(&file, &path, 4, size, all, &stop).headers,
            1 + 12 + 10
        );
        // The file was just written, so its pages are cached: skipping
        // cached transactions, no worker reads anything (a read delayed
        // past the cold threshold by a busy machine may start one: of a
        // few tries, one reads nothing).
        let warm = Plan {
            skip_cached: true,
            ..all
        };
        let tries: Vec<usize> = (0..5)
            .map(|_| prefetch(&file, &path, 4, size, warm, &stop).headers)
            .collect();
        assert!(tries.contains(&0), "{tries:?}");
        // Stopped before it starts: nothing read.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(prefetch(&file, &path, 4, size, all, &stop).headers, 0);
    }

    #[test]
    fn a_length_that_leaves_its_transaction_stops_the_walk_not_the_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = database(dir.path(), 2, 3, 400 << 10);
        // Damage the first data header's length of the second transaction
        // (the first that `database` wrote; the root's creation is first).
        let bytes = std::fs::read(&path).expect("read");
        let first_tlen = u64::from_be_bytes(bytes[12..20].try_into().expect("8"));
        let second = 4 + first_tlen + 8;
        let h2 = TxnHeader::parse(
            second,
            bytes[second as usize..][..23].try_into().expect("23"),
        );
        let d = (second + h2.header_len()) as usize;
        let mut damaged = bytes.clone();
        damaged[d + 34..d + 42].copy_from_slice(&u64::MAX.to_be_bytes());
        std::fs::write(&path, &damaged).expect("write");
        let file = File::open(&path).expect("file");
        let plan = Plan {
            workers: 2,
            min_txn: 0,
            min_bytes: 0,
            skip_cached: false,
        };
        let stop = AtomicBool::new(false);
        // The root's creation (1), the damaged header of the second (1),
        // the third's 3: the walk of the damaged one stopped, not the others.
        assert_eq!(
            prefetch(&file, &path, 4, damaged.len() as u64, plan, &stop).headers,
            5
        );
        // The scan, with prefetching, still reports the damage.
        let mut idx = super::super::index::Index::empty();
        let r = with_prefetch(&file, &path, 4, plan, || {
            super::super::index::scan_alone(&file, &path, 4, &mut idx)
        });
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn the_cold_transactions_pages_are_given_back_after_the_scan() {
        use crate::mapped::MappedBytes;
        // On the crate's own file system: /tmp may be a tmpfs, whose pages
        // cannot be dropped.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        // 3 large transactions of 4 records of 300 KiB.
        let path = database(dir.path(), 3, 4, 300 << 10);
        let file = std::sync::Arc::new(File::open(&path).expect("file"));
        let size = file.metadata().expect("stat").len();
        let m = super::super::mapped::Mapping::default();
        let map = m.covering(&file, size as usize).expect("mapped");
        // The data headers of the three large transactions.
        let mut idx = super::super::index::Index::empty();
        super::super::index::scan_alone(&file, &path, 4, &mut idx).expect("scan");
        let big = Plan {
            workers: 2,
            min_txn: 1 << 20,
            min_bytes: 0,
            skip_cached: false,
        };
        let stop = AtomicBool::new(false);
        let p = prefetch(&file, &path, 4, size, big, &stop);
        assert_eq!(p.headers, 12);
        assert_eq!(
            p.cold.len(),
            1,
            "adjacent transactions merged: {:?}",
            p.cold
        );
        let headers: Vec<usize> = (1..=12u64)
            .map(|o| idx.oids.get(&Oid(o)).copied().expect("indexed") as usize)
            .collect();
        let cached = |map: &std::sync::Arc<dyn MappedBytes>, hs: &[usize]| {
            hs.iter()
                .filter(|&&h| map.cached(h..h + DATA_HDR_LEN as usize))
                .count()
        };
        // Whole pages are given back: a header in a page that the cold
        // range shares with the transaction before it stays.
        let page = 4096;
        let inside: Vec<usize> = headers
            .iter()
            .copied()
            .filter(|&h| {
                let pg = (h / page * page) as u64;
                p.cold
                    .iter()
                    .any(|r| r.start <= pg && pg + page as u64 <= r.end)
            })
            .collect();
        assert!(inside.len() >= 11, "{inside:?} of {headers:?}");
        let drop_all = || {
            nix::fcntl::posix_fadvise(
                &*file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .expect("fadvise");
        };
        // Without prefetching, the scan leaves every header it read cached.
        drop_all();
        assert_eq!(cached(&map, &headers), 0, "dropped");
        let alone = Plan { workers: 0, ..big };
        let mut idx = super::super::index::Index::empty();
        with_prefetch(&file, &path, 4, alone, || {
            super::super::index::scan_alone(&file, &path, 4, &mut idx)
        })
        .expect("scan");
        assert_eq!(cached(&map, &headers), 12, "the scan read them");
        // With it, the pages of the transactions handed to the workers
        // are given back once the scan is done.
        drop_all();
        let mut idx = super::super::index::Index::empty();
        with_prefetch(&file, &path, 4, big, || {
            super::super::index::scan_alone(&file, &path, 4, &mut idx)
        })
        .expect("scan");
        assert_eq!(cached(&map, &inside), 0, "given back");
        assert_eq!(idx.oids.get(&Oid(12)).copied(), Some(headers[11] as u64));
    }
}
