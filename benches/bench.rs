//! The benchmark program (see README.md).

fn main() {}
