//! userfaultfd-based virtual memory (filled by the virtmem issue).
