//! The views a handle lends: [`View`] (shared, from `&FileH`) and
//! [`ViewMut`] (exclusive, from `&mut FileH`). Both are plain slices of the
//! handle's one mapping, so overlapping views are coherent by construction;
//! the borrow of the handle is what keeps a mutable view unique and keeps
//! the operations that change what memory shows (writeout, discard,
//! invalidate) away while any view is alive.

use std::ops::{Deref, DerefMut};

use crate::mapping::Pod;

/// A shared view: a slice of the handle's mapping.
#[derive(Debug)]
pub struct View<'a, T: Pod> {
    pub(super) slice: &'a [T],
    pub(super) offset: u64,
}

impl<T: Pod> View<'_, T> {
    /// Byte offset of the view in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<T: Pod> Deref for View<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

/// An exclusive view: a mutable slice of the handle's mapping.
#[derive(Debug)]
pub struct ViewMut<'a, T: Pod> {
    pub(super) slice: &'a mut [T],
    pub(super) offset: u64,
}

impl<'a, T: Pod> ViewMut<'a, T> {
    /// Byte offset of the view in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The slice with the view's full lifetime (e.g. to split it between
    /// threads with `split_at_mut` / `chunks_mut`).
    pub fn into_slice(self) -> &'a mut [T] {
        self.slice
    }
}

impl<T: Pod> Deref for ViewMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T: Pod> DerefMut for ViewMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}
