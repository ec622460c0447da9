//! Two [`BigFile`] backends: [`MemBigFile`] (blocks in memory, for tests and
//! examples, with load/store counters and injectable load failures) and
//! [`FileBigFile`] (a plain OS file read with `pread` and written with
//! `pwrite`, like wendelin.core's `file_file`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{BigFile, BoxError, Loaded, MappableBlock};

/// A file whose blocks live in memory. Blocks never stored are holes.
///
/// Counts loads per block and records every store, so tests can assert exactly
/// what the paging engine asked for.
#[derive(Debug)]
pub struct MemBigFile {
    block_size: usize,
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    blocks: BTreeMap<u64, Vec<u8>>,
    loads: HashMap<u64, u64>,
    stores: Vec<u64>,
    failing: BTreeSet<u64>,
    failing_stores: BTreeSet<u64>,
}

/// The error a [`MemBigFile`] block set to fail returns.
#[derive(Debug, thiserror::Error)]
#[error("injected {op} failure for block {blk}")]
pub struct InjectedFailure {
    /// "load" or "store".
    pub op: &'static str,
    /// The block.
    pub blk: u64,
}

impl MemBigFile {
    /// An empty file (all holes) of `block_size`-byte blocks.
    pub fn new(block_size: usize) -> MemBigFile {
        MemBigFile {
            block_size,
            inner: Mutex::new(MemInner::default()),
        }
    }

    /// Set the content of block `blk` (shorter data is zero-padded, longer
    /// data truncated to the block size).
    pub fn set_block(&self, blk: u64, data: &[u8]) {
        let mut b = vec![0u8; self.block_size];
        let n = data.len().min(self.block_size);
        b[..n].copy_from_slice(&data[..n]);
        self.inner.lock().blocks.insert(blk, b);
    }

    /// The content of block `blk` (`None` for a hole).
    pub fn block(&self, blk: u64) -> Option<Vec<u8>> {
        self.inner.lock().blocks.get(&blk).cloned()
    }

    /// How many times block `blk` was loaded.
    pub fn load_count(&self, blk: u64) -> u64 {
        self.inner.lock().loads.get(&blk).copied().unwrap_or(0)
    }

    /// Total loads of all blocks.
    pub fn total_loads(&self) -> u64 {
        self.inner.lock().loads.values().sum()
    }

    /// Block numbers stored so far, in call order (and clear the record).
    pub fn take_stores(&self) -> Vec<u64> {
        std::mem::take(&mut self.inner.lock().stores)
    }

    /// Make loads of `blk` fail (`true`) or succeed again (`false`).
    pub fn set_failing(&self, blk: u64, failing: bool) {
        let mut g = self.inner.lock();
        if failing {
            g.failing.insert(blk);
        } else {
            g.failing.remove(&blk);
        }
    }
}

impl MemBigFile {
    /// Make stores of `blk` fail (`true`) or succeed again (`false`).
    pub fn set_store_failing(&self, blk: u64, failing: bool) {
        let mut g = self.inner.lock();
        if failing {
            g.failing_stores.insert(blk);
        } else {
            g.failing_stores.remove(&blk);
        }
    }
}

impl BigFile for MemBigFile {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError> {
        let mut g = self.inner.lock();
        *g.loads.entry(blk).or_insert(0) += 1;
        if g.failing.contains(&blk) {
            return Err(Box::new(InjectedFailure { op: "load", blk }));
        }
        match g.blocks.get(&blk) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(Loaded::Data)
            }
            None => Ok(Loaded::Hole),
        }
    }

    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError> {
        let mut g = self.inner.lock();
        if g.failing_stores.contains(&blk) {
            return Err(Box::new(InjectedFailure { op: "store", blk }));
        }
        g.blocks.insert(blk, data.to_vec());
        g.stores.push(blk);
        Ok(())
    }

    fn name(&self) -> String {
        "MemBigFile".into()
    }
}

/// A plain OS file seen as blocks: block `blk` is bytes
/// `[blk*block_size, (blk+1)*block_size)`; bytes past the end read as zeros
/// (blocks entirely past the end are holes). Stores write with `pwrite`;
/// [`FileBigFile::sync`] makes them durable. With
/// [`FileBigFile::with_mapping`], blocks wholly inside the file are offered
/// for mapping in place ([`BigFile::map_block`]).
#[derive(Debug)]
pub struct FileBigFile {
    file: Arc<File>,
    block_size: usize,
    name: String,
    mappable: bool,
}

/// A block of a [`FileBigFile`] offered for mapping.
struct FileBlock {
    file: Arc<File>,
    offset: u64,
}

impl MappableBlock for FileBlock {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.file.as_fd())
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

impl FileBigFile {
    /// Open (creating if missing) `path` read-write with `block_size`-byte blocks.
    pub fn open(path: &Path, block_size: usize) -> std::io::Result<FileBigFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(FileBigFile {
            file: Arc::new(file),
            block_size,
            name: path.display().to_string(),
            mappable: false,
        })
    }

    /// Offer blocks wholly inside the file for mapping in place (read-only,
    /// while no mutable view exists). Only for files nobody writes while
    /// they are mapped: a store through another handle would show through.
    pub fn with_mapping(mut self, on: bool) -> FileBigFile {
        self.mappable = on;
        self
    }

    /// fsync the file.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl BigFile for FileBigFile {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError> {
        let off = blk
            .checked_mul(self.block_size as u64)
            .ok_or_else(|| format!("block {blk}: offset overflows"))?;
        let mut done = 0usize;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], off + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if done == 0 {
            return Ok(Loaded::Hole);
        }
        buf[done..].fill(0);
        Ok(Loaded::Data)
    }

    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError> {
        let off = blk
            .checked_mul(self.block_size as u64)
            .ok_or_else(|| format!("block {blk}: offset overflows"))?;
        self.file.write_all_at(data, off)?;
        Ok(())
    }

    fn map_block(&self, blk: u64) -> Result<Option<Box<dyn MappableBlock>>, BoxError> {
        if !self.mappable {
            return Ok(None);
        }
        let bs = self.block_size as u64;
        let off = blk
            .checked_mul(bs)
            .ok_or_else(|| format!("block {blk}: offset overflows"))?;
        if off.saturating_add(bs) > self.file.metadata()?.len() {
            return Ok(None);
        }
        Ok(Some(Box::new(FileBlock {
            file: self.file.clone(),
            offset: off,
        })))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
