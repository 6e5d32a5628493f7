#![no_main]
//! cargo fuzz target `chat_template`: see `plt_fuzz::harness::chat_template` for the input.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: plt_fuzz::harness::install_panic_hook(), |data: &[u8]| {
    let _ = plt_fuzz::harness::chat_template(data);
});
