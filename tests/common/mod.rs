//! Helpers shared by integration tests.

#![allow(dead_code)] // each test binary uses a subset

#[allow(unused_imports)] // each test binary uses a subset
pub use testsupport::python::{python, run_python};
#[allow(unused_imports)] // each test binary uses a subset
pub use testsupport::testdata;
