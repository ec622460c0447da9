//! Error types of the crate.

use std::io;
use std::sync::Arc;

/// A boxed error from a [`crate::BigFile`] implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A load error shared between the handle's error record and the callers that
/// ask for it (cheap to clone).
#[derive(Debug, Clone)]
pub struct SharedError(pub Arc<dyn std::error::Error + Send + Sync + 'static>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Errors of virtmem operations. Each carries its context (block, range, file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process may not create a userfaultfd.
    #[error(
        "userfaultfd is not permitted for this process ({source}); run as root, or set \
         sysctl vm.unprivileged_userfaultfd=1, or give the process CAP_SYS_PTRACE, or grant \
         it read/write access to /dev/userfaultfd"
    )]
    NotPermitted {
        /// The OS error (EPERM).
        source: io::Error,
    },
    /// The kernel offers no userfaultfd.
    #[error(
        "userfaultfd is not available ({source}); a Linux >= 5.7 kernel built with CONFIG_USERFAULTFD is required"
    )]
    Unavailable {
        /// The OS error.
        source: io::Error,
    },
    /// The kernel's userfaultfd lacks features this crate needs.
    #[error(
        "the kernel's userfaultfd lacks required features (mask {missing:#x}): write-protect \
         faults on anonymous memory need Linux >= 5.7, UFFDIO_POISON needs Linux >= 6.6"
    )]
    MissingFeatures {
        /// Bit mask of the missing `UFFD_FEATURE_*` flags.
        missing: u64,
    },
    /// The file's block size is not usable.
    #[error("invalid block size {block_size}: it must be a non-zero multiple of 4096")]
    BlockSize {
        /// The block size the file reported.
        block_size: usize,
    },
    /// An operating-system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A view was requested outside the handle's mapping.
    #[error("range {offset}+{len} is outside the handle's mapping of {size} bytes")]
    OutOfRange {
        /// Byte offset requested.
        offset: u64,
        /// Byte length requested.
        len: u64,
        /// Reserved size of the mapping.
        size: u64,
    },
    /// A typed view was requested at an offset not aligned for its type.
    #[error("offset {offset} is not aligned to {align} bytes as a view of {type_name} requires")]
    Misaligned {
        /// Byte offset requested.
        offset: u64,
        /// Required alignment.
        align: usize,
        /// Element type.
        type_name: &'static str,
    },
    /// A block could not be loaded.
    #[error("loading block {blk} of {file} failed: {source}")]
    Load {
        /// Block number.
        blk: u64,
        /// Name of the file.
        file: String,
        /// The file's error.
        source: SharedError,
    },
    /// A dirty block could not be stored.
    #[error("storing block {blk} of {file} failed: {source}")]
    Store {
        /// Block number.
        blk: u64,
        /// Name of the file.
        file: String,
        /// The file's error.
        source: BoxError,
    },
    /// A size (e.g. a RAM budget) that cannot be used.
    #[error("bad size {spec:?}: {msg}")]
    BadSize {
        /// The text given.
        spec: String,
        /// What is wrong.
        msg: String,
    },
    /// A block number beyond the handle's mapping.
    #[error("block {blk} is beyond the handle's mapping of {nblocks} blocks")]
    BlockOutOfRange {
        /// Block number.
        blk: u64,
        /// Number of blocks the mapping holds.
        nblocks: u64,
    },
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
