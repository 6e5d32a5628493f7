#![no_main]
//! cargo fuzz target `gguf`: see `plt_fuzz::harness::gguf` for the input layout.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: plt_fuzz::harness::install_panic_hook(), |data: &[u8]| {
    let _ = plt_fuzz::harness::gguf(data);
});
