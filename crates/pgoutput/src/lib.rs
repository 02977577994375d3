//! pgoutput message decoding: the bytes of one XLogData payload in, a [`Message`] out.
//! No I/O, no allocation for values (they are slices of the input `Bytes`), and no panic on
//! any input: malformed bytes give an [`Error`].
//!
//! Protocol versions: 1 (the base messages), 2 (streaming of in-progress transactions: the
//! stream messages, and an xid before the changes inside a stream), 3 (two-phase commit),
//! 4 (parallel apply of streams: abort LSN and time in Stream Abort). A [`Decoder`] keeps the
//! little state the format needs (whether a stream is open, the protocol version).

mod decode;
mod encode;
mod message;

pub use decode::{Decoder, Error};
pub use encode::encode;
pub use message::*;
