//! Stored blocks' pages given to the next first-written holes, for handles
//! whose stored blocks map back from their file (read-write file mappings,
//! [`super::mapped_rw`]).
//!
//! A first write to a hole gets writable zero pages: fresh huge pages,
//! moved in ([`Shared::move_in_zeros`]). Fresh memory is not always cheap:
//! on a VM that reports free memory to its host (virtio-balloon free page
//! reporting, see `install_cost.rs`) the host backs it again on first
//! touch, 118-1465 µs per MiB measured on the 2-core VM, against about
//! 50 µs for memory at hand. Python writing a new 2 GiB array through a
//! writable connection (8 transactions of 256 MiB) spent 1.1-1.8 s of its
//! 6-7 s there.
//!
//! Such a handle has, at every commit, blocks whose bytes have just been
//! stored and which need not stay in its memory: the next touch of a
//! stored block maps the record just written, page cache and no copy (as
//! MARKSTORED of a read-write mapped block already does). So at
//! MARKSTORED a stored block's pages move (`UFFDIO_MOVE`, whole huge pages)
//! into a donor buffer instead of staying resident, and the next
//! first-written hole takes a donor, zeroes it (`memset`, at memory speed)
//! and moves its pages in: no page is freed, allocated or zeroed by the
//! kernel. Donors are accounted in the budget while kept and are at most a
//! quarter of it; blocks that are not whole huge pages, or beyond that,
//! stay resident as before.

use crate::mapping::Staging;

use super::Shared;
use super::options::inc;

/// Donor buffers of a handle.
#[derive(Default)]
pub(super) struct Donors {
    /// Buffers holding a stored block's pages.
    full: Vec<Staging>,
    /// Buffers whose pages were given away, to take the next donation.
    empty: Vec<Staging>,
}

impl Shared {
    /// MARKSTORED of the anonymous block at `addr` on a handle whose stored
    /// blocks map back from their file: move its pages into a donor buffer.
    /// True if done (the block then has no page: the caller removes it from
    /// the table, and its next touch loads or maps it again); false: keep
    /// it resident as usual. Under `&mut FileH` (no access can race).
    pub(super) fn donate_stored(&self, addr: usize, len: usize) -> bool {
        if self.rw_scan.is_none() || !self.moves_on() {
            return false;
        }
        let Some(pm) = self.zc.pagemap.as_ref() else {
            return false;
        };
        if !matches!(pm.all_huge(addr, len), Ok(true)) {
            return false;
        }
        let quarter = self.budget.limit() / 4;
        let kept = {
            let d = self.donors.lock();
            (d.full.len() * len) as u64
        };
        if kept.saturating_add(len as u64) > quarter {
            return false;
        }
        let popped = self.donors.lock().empty.pop();
        let Some(mut b) = popped.or_else(|| self.move_target(len)) else {
            return false;
        };
        // SAFETY: the source is a stored block under `&mut FileH` (no access
        // races; the next touch loads the stored bytes again).
        let ok = unsafe { self.move_block_out(&mut b, addr, len) };
        let mut d = self.donors.lock();
        if ok {
            self.budget.add(len as u64);
            inc(&self.counters.donated);
            d.full.push(b);
        } else {
            // A partial move left pages on both sides: the caller keeps the
            // block resident, its moved pages now missing, so drop the rest
            // of it there too (its next touch reloads the stored bytes).
            // SAFETY: the block's range; `&mut FileH`: no access races, and
            // the block is stored (a reload reads the same bytes).
            let _ = unsafe { self.map.dontneed(addr - self.map.addr(), len) };
            d.empty.push(b);
            return true;
        }
        true
    }

    /// Give the (empty, Loading) hole at `addr` a donor's pages, zeroed.
    /// False: no donor (or the move failed before any page moved).
    pub(super) fn zeros_from_donor(&self, addr: usize, len: usize) -> std::io::Result<bool> {
        let Some(mut b) = self.donors.lock().full.pop() else {
            return Ok(false);
        };
        self.budget.sub(len as u64);
        // The donor's pages are writable (a dirty block's); lift any write
        // protection anyway before writing them.
        let zeroed = self
            .uffd
            .writeprotect(b.addr(), len, false, false)
            .map(|()| b.as_mut_slice().fill(0));
        if let Err(e) = zeroed {
            self.donors.lock().empty.push(b);
            return Err(e);
        }
        // SAFETY: `b` is ours, borrowed exclusively, and holds zeroed pages;
        // the destination is a Loading hole with no page (its accesses
        // wait), about to become dirty.
        let (moved, why) = unsafe { self.uffd.move_pages(addr, b.addr(), len) };
        b.moved_out = true;
        let r = match why {
            Some(e) if moved == 0 => {
                vtrace!("T zeros from a donor: UFFDIO_MOVE failed: {e}");
                Ok(false)
            }
            Some(e) => {
                vtrace!("T zeros from a donor: UFFDIO_MOVE stopped after {moved} of {len}: {e}");
                self.copy_all(addr + moved, &b.as_slice()[moved..], false)
                    .map(|()| true)
            }
            None => Ok(true),
        };
        if matches!(r, Ok(true)) {
            inc(&self.counters.donor_zeros);
        }
        self.donors.lock().empty.push(b);
        r
    }

    /// Bytes kept in donor buffers (accounted in the budget).
    pub(super) fn donor_bytes(&self) -> u64 {
        let d = self.donors.lock();
        d.full.iter().map(|b| b.as_slice().len() as u64).sum()
    }
}
