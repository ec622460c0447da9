//! ZBigFile: a file of fixed-size blocks stored in the object database.
//!
//! Each block `blk` of a ZBigFile is stored as one ZODB object referenced from
//! the file's `blktab` (an LOBTree `blk -> ZBlk`): a ZBlk0 holds the block's
//! bytes with trailing zeros trimmed; a ZBlk1 holds an IOBTree of 4 KiB chunks
//! (all-zero chunks absent). Missing blocks read as zeros. The [`zblk`] module
//! has the byte-level rules of both formats and of the `auto` format choice;
//! the persistent objects and the transaction-joined file handle build on it.

pub mod zblk;
