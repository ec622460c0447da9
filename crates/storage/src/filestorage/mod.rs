//! FileStorage: the ZODB `Data.fs` format (FORMATS.md §2).

/// A ZODB FileStorage (placeholder; filled by the FileStorage work).
pub struct FileStorage;
