//! Frames over QUIC streams.
//!
//! Writes never wait for the peer's acknowledgement of the stream
//! (`SendStream::stopped` would wait for a delayed ACK, ~25 ms): the sync
//! protocol acknowledges at the application level.

use orgsync_protocol::codec::{encode_frame_into, FrameDecoder};
use orgsync_protocol::wire::Message;

use super::TransportError;

/// Largest read from a stream at once; the decoder's buffer holds one whole
/// frame plus this much.
const READ_CHUNK: usize = 64 * 1024;

/// Reads whole, validated messages from a receive stream.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// Wraps a receive stream.
    pub fn new(recv: quinn::RecvStream) -> FrameReader {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(),
        }
    }

    /// The next message, or `None` when the peer finished the stream
    /// cleanly between frames. A malformed or oversized frame, or a stream
    /// that ends inside a frame, is an error.
    pub async fn next(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some(msg) = self.decoder.next_message().map_err(TransportError::Frame)? {
                return Ok(Some(msg));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await? {
                Some(chunk) => self
                    .decoder
                    .push(&chunk.bytes)
                    .map_err(TransportError::Frame)?,
                None if self.decoder.buffered() == 0 => return Ok(None),
                None => {
                    return Err(TransportError::Truncated {
                        buffered: self.decoder.buffered(),
                    })
                }
            }
        }
    }
}

/// Writes messages as frames to a send stream, reusing one buffer.
#[derive(Debug)]
pub struct FrameWriter {
    send: quinn::SendStream,
    buf: Vec<u8>,
}

impl FrameWriter {
    /// Wraps a send stream.
    pub fn new(send: quinn::SendStream) -> FrameWriter {
        FrameWriter {
            send,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Writes one message. Waits only for flow control (backpressure),
    /// never for the peer to acknowledge.
    pub async fn write(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.buf.clear();
        encode_frame_into(msg, &mut self.buf).map_err(TransportError::Frame)?;
        self.send.write_all(&self.buf).await?;
        Ok(())
    }

    /// Writes an already encoded frame.
    pub async fn write_raw(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.send.write_all(frame).await?;
        Ok(())
    }

    /// Ends the stream after what was written (does not wait for delivery).
    pub fn finish(&mut self) {
        // Finishing an already finished or reset stream has nothing left to do.
        let _ = self.send.finish();
    }
}
