//! Fuzz target `config_parse`: the invariants are in `fuzz/checks.rs` (shared with
//! the CI test `tests/e2e/fuzz_corpus.rs`); seed corpus in `fuzz/corpus/config_parse/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::config_parse(data));
