//! Fuzzes bundle parsing: arbitrary text (lossily decoded) must never panic,
//! and anything accepted must be valid and re-encode to a line that parses
//! back to the same bundle.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orgsync_protocol::bundle::Bundle;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(bundle) = Bundle::parse(&text) {
        assert_eq!(
            bundle.validate(),
            Ok(()),
            "parse accepted an invalid bundle"
        );
        let line = bundle.to_line();
        assert_eq!(
            Bundle::parse(&line).as_ref(),
            Ok(&bundle),
            "round trip changed the bundle"
        );
    }
});
