//! ZBigArray: typed n-dimensional arrays over a ZBigFile (filled by a later issue).
