//! The read side of layer application: hashes the blob as fetched, checks its magic bytes,
//! decompresses it and hashes the uncompressed tar stream, all in one pass.

use std::io::{self, BufReader, Cursor, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

use sha2::{Digest as _, Sha256};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::StoreError;

/// Buffer size between the stages; large reads keep per-call overhead of the decoders and
/// the tar parser low.
const STAGE_BUFFER: usize = 256 * 1024;

/// Digests and sizes of one pass over a layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigests {
    pub compressed_digest: Digest,
    pub compressed_size: u64,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// A reader that hashes and counts everything read through it and remembers whether the
/// underlying reader failed, so that a network error is not reported as a corrupt layer.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    failure: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            failure: None,
        }
    }

    fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(e);
                Err(copy)
            }
        }
    }
}

/// Chunks in flight between the decompressing thread and the applying thread.
const CHANNEL_DEPTH: usize = 4;

type Chunk = io::Result<Vec<u8>>;

/// Reads `reader` as a layer blob compressed as `compression`, handing the uncompressed tar
/// stream to `consume`. Whatever `consume` leaves unread (the padding after the tar's end
/// marker, trailing bytes of the blob) is read and hashed too, since the digests cover the
/// whole blob.
///
/// Two threads: the caller's reads, hashes and decompresses the blob; a scoped thread
/// hashes the tar stream and runs `consume` (the file system work), so that decompression
/// and writing overlap as in `tar -xzf`, where gzip is a process of its own.
pub(crate) fn with_layer_stream<T: Send>(
    reader: &mut dyn Read,
    compression: Compression,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, StoreError> + Send,
) -> Result<(T, StreamDigests), StoreError> {
    let (tx, rx) = mpsc::sync_channel::<Chunk>(CHANNEL_DEPTH);
    let mut raw = HashingReader::new(reader);
    let (produced, consumed) = std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            let mut input = ChannelReader::new(rx);
            let value = consume(&mut input)?;
            io::copy(&mut input, &mut io::sink()).map_err(|e| {
                StoreError::invalid_stream(format!("after the end of the tar archive: {e}"))
            })?;
            let (diff_id, size) = input.finish();
            Ok::<_, StoreError>((value, diff_id, size))
        });
        let produced = produce(&mut raw, compression, tx);
        let consumed = consumer.join().unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the layer applier thread panicked".into(),
            ))
        });
        (produced, consumed)
    });
    // An error of the source stream wins over whatever the stages made of it, and a
    // decoding error over what the applier made of the broken stream.
    if let Some(source) = raw.failure.take() {
        return Err(StoreError::io("reading the layer stream", source));
    }
    produced?;
    let (value, diff_id, uncompressed_size) = consumed?;
    let (compressed_digest, compressed_size) = raw.finish();
    Ok((
        value,
        StreamDigests {
            compressed_digest,
            compressed_size,
            diff_id,
            uncompressed_size,
        },
    ))
}

/// Decompresses the blob into chunks for the applying thread. Stops early (without error)
/// if that thread is gone, which happens only when it failed.
fn produce<R: Read>(
    raw: &mut HashingReader<R>,
    compression: Compression,
    tx: SyncSender<Chunk>,
) -> Result<(), StoreError> {
    let head = read_head(raw, 4).map_err(|e| StoreError::io("reading the layer stream", e))?;
    compression.check_magic(&head)?;
    {
        let input = BufReader::with_capacity(STAGE_BUFFER, Cursor::new(head).chain(&mut *raw));
        let mut decoder = compression.decoder(input).map_err(|e| {
            StoreError::invalid_stream(format!("cannot start the {compression} decoder: {e}"))
        })?;
        loop {
            let mut chunk = vec![0u8; STAGE_BUFFER];
            let n = match fill(&mut decoder, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let message = format!("{compression} stream: {e}");
                    let _ = tx.send(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        message.clone(),
                    )));
                    return Err(StoreError::invalid_stream(message));
                }
            };
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            if tx.send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
    }
    drop(tx);
    // Bytes after the end of the compressed stream belong to the blob and its digest.
    io::copy(raw, &mut io::sink()).map_err(|e| StoreError::io("reading the layer stream", e))?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The applying thread's view of the stream: chunks from the channel, hashed on arrival
/// (the diff_id). A closed channel is the end of the stream.
struct ChannelReader {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    bytes: u64,
}

impl ChannelReader {
    fn new(rx: Receiver<Chunk>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.bytes)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    self.bytes += chunk.len() as u64;
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads up to `n` bytes (fewer only at end of stream).
fn read_head(reader: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(r: &mut dyn Read) -> Result<Vec<u8>, StoreError> {
        let mut first = vec![0u8; 10];
        r.read_exact(&mut first)
            .map_err(|e| StoreError::io("test", e))?;
        Ok(first)
    }

    #[test]
    fn digests_cover_the_whole_blob_even_when_the_consumer_stops_early() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for (compression, blob) in [
            (Compression::None, data.clone()),
            (Compression::Gzip, gzip(&data)),
            (Compression::Zstd, zstd::encode_all(&data[..], 3).unwrap()),
        ] {
            let (first, d) = with_layer_stream(&mut &blob[..], compression, read_all).unwrap();
            assert_eq!(first, data[..10]);
            assert_eq!(d.diff_id, Digest::of_bytes(&data), "{compression}");
            assert_eq!(
                d.compressed_digest,
                Digest::of_bytes(&blob),
                "{compression}"
            );
            assert_eq!(d.uncompressed_size, data.len() as u64);
            assert_eq!(d.compressed_size, blob.len() as u64);
        }
    }

    #[test]
    fn multi_member_gzip_is_one_stream() {
        let mut blob = gzip(b"hello ");
        blob.extend(gzip(b"world, more than ten bytes"));
        let (_, d) = with_layer_stream(&mut &blob[..], Compression::Gzip, read_all).unwrap();
        assert_eq!(
            d.diff_id,
            Digest::of_bytes(b"hello world, more than ten bytes")
        );
    }

    #[test]
    fn wrong_magic_and_corrupt_data_are_content_errors() {
        let data = vec![7u8; 1000];
        let err =
            with_layer_stream(&mut &gzip(&data)[..], Compression::Zstd, read_all).unwrap_err();
        assert!(
            matches!(err, StoreError::CompressionMismatch { .. }),
            "{err}"
        );
        let mut corrupt = gzip(&data);
        let n = corrupt.len();
        corrupt[n - 6] ^= 0xff; // CRC trailer
        let err = with_layer_stream(&mut &corrupt[..], Compression::Gzip, read_all).unwrap_err();
        assert!(err.is_bad_content(), "{err}");
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ))
        }
    }

    #[test]
    fn source_errors_are_io_errors() {
        let mut src = Cursor::new(gzip(&[1u8; 100])).take(5).chain(Failing);
        let err = with_layer_stream(&mut src, Compression::Gzip, read_all).unwrap_err();
        match err {
            StoreError::Io { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset)
            }
            other => panic!("expected Io, got {other}"),
        }
    }
}
