//! SPDY/3.1 frames: parsing and writing, with the zlib-compressed header blocks.
//!
//! Only what the Kubernetes clients (moby/spdystream) use: SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE and DATA. spdystream does no flow control,
//! so WINDOW_UPDATE and SETTINGS are parsed and ignored. Unknown control frames are skipped,
//! as the protocol asks.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// Largest frame payload accepted (the format's own limit is 2^24 - 1).
pub const MAX_FRAME: usize = (1 << 24) - 1;
/// Largest decompressed header block accepted: a handful of short headers is what clients send.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
const MAX_HEADERS: usize = 256;

/// Header name/value pairs; names are lowercase, a value may hold several NUL-separated parts.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name`.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this side does not know (skipped).
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SPDY {0} frame")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

/// Decodes frames from a byte buffer, holding the connection's header decompressor.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
        }
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` until a whole frame is there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(8 + len).freeze();
        let word = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        if word & 0x8000_0000 == 0 {
            let stream_id = word & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::Malformed("DATA (stream 0)"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: frame,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let kind = (word & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let mut p = frame;
        let need = |p: &Bytes, n: usize, what: &'static str| {
            if p.remaining() < n {
                Err(FrameError::Malformed(what))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                if stream_id == 0 {
                    return Err(FrameError::Malformed("SYN_STREAM (stream 0)"));
                }
                let headers = self.headers(&p)?;
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY => {
                need(&p, 4, "SYN_REPLY")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&p)?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            }
            HEADERS => {
                need(&p, 4, "HEADERS")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&p)?;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
            RST_STREAM => {
                need(&p, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                need(&p, 4, "GOAWAY")?;
                let last_good = p.get_u32() & 0x7fff_ffff;
                let status = if p.remaining() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            WINDOW_UPDATE => {
                need(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        }))
    }

    /// Inflates one header block (the connection's zlib stream goes on across blocks).
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let res = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            input = &input[used..];
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if used == 0 && produced == 0 && out.len() < out.capacity() {
                        return Err(FrameError::HeaderBlock("inflate made no progress".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.inflate
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| FrameError::HeaderBlock(e.to_string()))?;
                    }
                    None => return Err(FrameError::HeaderBlock(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlock("header block too large".into()));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    let bad = |m: &str| FrameError::HeaderBlock(m.to_string());
    if b.remaining() < 4 {
        return Err(bad("truncated"));
    }
    let n = b.get_u32() as usize;
    if n > MAX_HEADERS {
        return Err(bad("too many headers"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let field = |b: &mut &[u8]| -> Result<String, FrameError> {
            if b.remaining() < 4 {
                return Err(bad("truncated"));
            }
            let len = b.get_u32() as usize;
            if b.remaining() < len {
                return Err(bad("truncated"));
            }
            let s = String::from_utf8_lossy(&b[..len]).into_owned();
            b.advance(len);
            Ok(s)
        };
        let name = field(&mut b)?.to_ascii_lowercase();
        let value = field(&mut b)?;
        out.push((name, value));
    }
    Ok(out)
}

/// Encodes frames, holding the connection's header compressor.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh zlib stream takes a preset dictionary; it cannot fail.
        let _ = deflate.set_dictionary(&DICTIONARY);
        Self { deflate }
    }

    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME {
                    return Err(FrameError::TooLarge(data.len()));
                }
                out.reserve(8 + data.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let block = self.header_block(headers)?;
                control(out, SYN_STREAM, *flags, 10 + block.len());
                out.put_u32(*stream_id);
                out.put_u32(*associated);
                out.put_u8(priority << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.header_block(headers)?;
                control(out, SYN_REPLY, *flags, 4 + block.len());
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.header_block(headers)?;
                control(out, HEADERS, *flags, 4 + block.len());
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Settings => {
                control(out, SETTINGS, 0, 4);
                out.put_u32(0);
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway { last_good, status } => {
                control(out, GOAWAY, 0, 8);
                out.put_u32(*last_good);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, WINDOW_UPDATE, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*delta);
            }
            Frame::Unknown { .. } => return Err(FrameError::Malformed("unknown")),
        }
        Ok(())
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::HeaderBlock(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once all input is in and the sync flush fit in the space given.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.reserve(8 + len);
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut buf).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty());
        out
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn frames_round_trip_and_header_state_carries_across_blocks() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: hdrs(&[("streamtype", "stdout"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 100,
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut enc = Encoder::new();
        let mut whole = BytesMut::new();
        enc.encode(
            &Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[("streamtype", "data"), ("requestid", "0")]),
            },
            &mut whole,
        )
        .unwrap();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut dec = Decoder::new();
        // version 2
        let mut b = BytesMut::from(&[0x80, 2, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut b), Err(FrameError::Version(2)));
        // SYN_STREAM too short
        let mut b = BytesMut::from(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0][..]);
        assert!(dec.decode(&mut b).is_err());
        // header block that is not zlib
        let mut b = BytesMut::from(&[0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(matches!(
            Decoder::new().decode(&mut b),
            Err(FrameError::HeaderBlock(_))
        ));
        // data on stream 0
        let mut b = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(dec.decode(&mut b).is_err());
    }

    #[test]
    fn header_lookup_takes_the_first_value() {
        let h = hdrs(&[("port", "80\u{0}81"), ("streamtype", "data")]);
        assert_eq!(header(&h, "port"), Some("80"));
        assert_eq!(header(&h, "streamtype"), Some("data"));
        assert_eq!(header(&h, "nope"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut dec = Decoder::new();
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }

        #[test]
        fn control_frames_with_arbitrary_header_blocks_never_panic(
            kind in 1u16..10,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut b = BytesMut::new();
            b.put_u16(0x8003);
            b.put_u16(kind);
            b.put_u32(body.len() as u32);
            b.put_slice(&body);
            let _ = Decoder::new().decode(&mut b);
        }

        #[test]
        fn headers_round_trip(pairs in proptest::collection::vec(("[a-z-]{1,20}", "[ -~]{0,40}"), 0..20)) {
            let h: Headers = pairs;
            let f = Frame::SynReply { stream_id: 9, flags: 0, headers: h.clone() };
            let got = round_trip(&[f.clone(), f.clone()]);
            proptest::prop_assert_eq!(got, vec![f.clone(), f]);
        }
    }
}
