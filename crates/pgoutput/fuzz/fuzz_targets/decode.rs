//! `cargo +nightly fuzz run decode` (from crates/pgoutput): the decoder must return a
//! message or an error for any input, inside or outside a stream, and whatever it decodes
//! must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgoutput::{encode, Decoder, Message, StreamStart};

fuzz_target!(|data: &[u8]| {
    let (streamed, body) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => return,
    };
    let mut d = Decoder::new(4);
    if streamed {
        let _ = d.decode(encode(&Message::StreamStart(StreamStart { xid: 1, first_segment: true })));
    }
    if let Ok(m) = d.decode(bytes::Bytes::copy_from_slice(body)) {
        assert_eq!(&encode(&m)[..], body, "decode/encode must round trip");
    }
});
