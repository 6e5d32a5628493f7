#![no_main]
//! cargo fuzz target `load_model`: see `plt_fuzz::harness::load_model` for the input layout.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plt_fuzz::harness::load_model(data);
});
