//! Fuzz the frame decoder and the envelope-plaintext decoders with arbitrary
//! bytes: nothing may panic, and decoding a stream in arbitrary pieces must
//! give exactly what decoding it in one piece gives.
//!
//! Input layout: the first byte seeds the chunk sizes used to feed the
//! streaming decoder; the rest is the byte stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orgsync_protocol::codec::{self, decode_frame, encode_frame, FrameDecoder};
use orgsync_protocol::wire::{decode_blob_chunk, decode_change_batch, Message};

/// Messages of a whole buffer decoded frame by frame, and the error that
/// ended it (None if the buffer ended cleanly or on a partial frame).
fn one_shot(mut rest: &[u8]) -> (Vec<Message>, Option<codec::CodecError>) {
    let mut out = Vec::new();
    loop {
        match decode_frame(rest) {
            Ok(Some((msg, used))) => {
                assert!(used > 0 && used <= rest.len(), "bad consumed length {used}");
                // A decoded message is valid, so it can be sent again and
                // reads back identically.
                let again = encode_frame(&msg).expect("valid message re-encodes");
                let (back, n) = decode_frame(&again)
                    .expect("re-decodes")
                    .expect("whole frame");
                assert_eq!(back, msg);
                assert_eq!(n, again.len());
                out.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn streamed(seed: u8, mut rest: &[u8]) -> (Vec<Message>, Option<codec::CodecError>) {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    let mut state = u32::from(seed) | 1;
    while !rest.is_empty() {
        // xorshift: cheap, deterministic chunk sizes from 1 to 64 bytes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 64 + 1).min(rest.len());
        if let Err(e) = dec.push(&rest[..n]) {
            return (out, Some(e));
        }
        rest = &rest[n..];
        loop {
            match dec.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };

    let (whole, whole_err) = one_shot(stream);
    let (pieces, pieces_err) = streamed(seed, stream);
    assert_eq!(
        whole, pieces,
        "streamed decoding differs from one-shot decoding"
    );
    // The streaming decoder sees a bad header as soon as it arrives, the
    // one-shot decoder too; both must agree on whether the stream failed
    // and why.
    assert_eq!(whole_err, pieces_err);

    // The same bytes as an opened envelope's plaintext.
    if let Ok(batch) = decode_change_batch(stream) {
        assert_eq!(batch.validate(), Ok(()));
    }
    if let Ok(chunk) = decode_blob_chunk(stream) {
        assert_eq!(chunk.validate(), Ok(()));
    }
});
