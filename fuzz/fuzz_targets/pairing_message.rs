//! Pairing messages (`orgsync-keytool invite`/`join`) arrive from an
//! unauthenticated peer: decoding arbitrary bytes must never panic, and
//! whatever decodes must re-encode to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgsync_keytool::pairing::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        let again = Message::decode(&msg.encode()).expect("a decoded message re-encodes");
        assert_eq!(format!("{msg:?}"), format!("{again:?}"));
    }
});
