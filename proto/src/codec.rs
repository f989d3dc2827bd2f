//! The codec of the generated clients and servers: prost's, with tonic's per-stream buffers
//! sized for this API.
//!
//! tonic allocates an encode and a decode buffer per stream up front (8 KB each by default)
//! and keeps them as long as the stream lives, grown to the largest message it carried. A
//! controller holds thousands of config streams, so both start small: what it receives is a
//! Hello and ACKs of a few dozen bytes, and what it sends goes out in parts sized to fit
//! [`ENCODE_BUFFER`] (`controller/src/config/parts.rs`). With 2000 proxies the two buffers
//! took 18 MB at tonic's defaults and take 5 MB so (`controller/benches/scale.rs`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The decode buffer a stream starts with.
pub const DECODE_BUFFER: usize = 512;
/// The encode buffer a stream starts with; the controller's update parts fit in it.
pub const ENCODE_BUFFER: usize = 2 * 1024;
/// Encoded messages gathered before tonic hands them to HTTP/2 (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost encoding with the buffers above; `T` is encoded, `U` decoded.
#[derive(Debug)]
pub struct MeshCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for MeshCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for MeshCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
    }
}
