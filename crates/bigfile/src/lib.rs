//! ZBigFile: a file of fixed-size blocks stored in the object database (filled by a later issue).
