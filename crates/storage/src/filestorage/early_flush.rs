//! Writing a large transaction's records to the disk while the rest of it
//! is still being written.
//!
//! A transaction's records go into the page cache as they are stored, and
//! `finish`'s `fdatasync` then writes all of them to the disk at once: for
//! a commit of hundreds of megabytes the disk idles while the records are
//! pickled and written, and the CPU idles while the disk writes. (The
//! kernel's own writeback starts only past `dirty_background_ratio`, 10% of
//! RAM by default: 2.4 GB on the 24 GiB VM, more than such a commit.)
//!
//! So once a transaction has written [`KICK`] bytes, a helper thread
//! `fdatasync`s the file, and again after each further [`KICK`] (requests
//! arriving while one runs are merged into the next). The commit's own
//! `fdatasync` then only waits for the tail. A transaction smaller than
//! [`KICK`] starts no thread. An early flush's failure fails the commit:
//! after a failed `fdatasync` the kernel reports the error once, so the
//! final one could succeed with the records lost.
//!
//! Measured on the 2-core VM (Python, 2 GiB written as 8 transactions of
//! 256 MiB, database on the virtio disk): see the note in DESIGN.md's
//! commit section and the README's benchmark table.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Bytes written between early flushes.
pub(super) const KICK: u64 = 32 << 20;

/// The early flushes of one transaction (see the module docs). Dropped
/// unfinished (an aborted transaction), it hangs up and the thread ends
/// after its current flush, detached; the rollback cuts off whatever the
/// records were.
#[derive(Default)]
pub(super) struct EarlyFlush {
    /// Bytes written since the last request.
    since: u64,
    /// Requests to the helper thread (one can wait while one runs).
    tx: Option<SyncSender<()>>,
    /// The helper thread: the first error of its flushes.
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// The helper thread could not be started: flush only at the end.
    off: bool,
}

/// The helper thread: `fdatasync` `file` at each request, until the
/// transaction hangs up; stops at the first error (which it returns).
fn flusher(file: Arc<File>, rx: Receiver<()>) -> std::io::Result<()> {
    while rx.recv().is_ok() {
        file.sync_data()?;
    }
    Ok(())
}

impl EarlyFlush {
    /// The transaction wrote `n` more bytes to `file`.
    pub(super) fn wrote(&mut self, file: &Arc<File>, n: u64) {
        self.since += n;
        if self.since < KICK || self.off {
            return;
        }
        self.since = 0;
        if self.tx.is_none() {
            let (tx, rx) = sync_channel(1);
            let f = Arc::clone(file);
            match std::thread::Builder::new()
                .name("fs-early-flush".into())
                .spawn(move || flusher(f, rx))
            {
                Ok(t) => {
                    self.tx = Some(tx);
                    self.thread = Some(t);
                }
                Err(e) => {
                    tracing::debug!("no early flush thread: {e}");
                    self.off = true;
                    return;
                }
            }
        }
        if let Some(tx) = &self.tx {
            // Full: a request is waiting already and covers these bytes.
            // Disconnected: the thread stopped on an error, which `finish`
            // returns.
            let _: Result<(), TrySendError<()>> = tx.try_send(());
        }
    }

    /// Stop the helper thread, after the flush it is doing: its first
    /// error, if any (the transaction must then fail). Waits for at most
    /// one `fdatasync` of this transaction's records, which the caller's
    /// own `fdatasync` would wait for anyway.
    pub(super) fn finish(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the early flush thread panicked"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn small_transactions_start_no_thread_large_ones_flush_early() {
        let mut t = tempfile::NamedTempFile::new().expect("tmp");
        let f = Arc::new(t.reopen().expect("reopen"));
        let mut e = EarlyFlush::default();
        e.wrote(&f, KICK - 1);
        assert!(e.thread.is_none(), "below KICK: no thread");
        t.write_all(&[1u8; 4096]).expect("write");
        e.wrote(&f, 1);
        assert!(e.thread.is_some(), "at KICK: a thread flushes");
        for _ in 0..3 {
            e.wrote(&f, KICK);
        }
        e.finish().expect("flushed");
        assert!(e.thread.is_none());
        // Finishing twice, or a transaction that never flushed early, is fine.
        e.finish().expect("nothing left");
        EarlyFlush::default().finish().expect("never started");
    }

    #[test]
    fn a_failed_early_flush_fails_the_commit() {
        // fdatasync of a read-only descriptor of a pipe fails (EINVAL).
        let (r, _w) = std::io::pipe().expect("pipe");
        let f = Arc::new(File::from(std::os::fd::OwnedFd::from(r)));
        let mut e = EarlyFlush::default();
        e.wrote(&f, KICK);
        assert!(e.finish().is_err(), "the early flush's error is returned");
    }
}
