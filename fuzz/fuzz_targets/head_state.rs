#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferray_fuzz::head_state(data));
