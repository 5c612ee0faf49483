//! Fuzz target `import_line`: the invariants are in `fuzz/checks.rs` (shared with
//! the CI test `tests/e2e/fuzz_corpus.rs`); seed corpus in `fuzz/corpus/import_line/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::import_line(data));
