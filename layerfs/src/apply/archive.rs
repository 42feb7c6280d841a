//! Walking a layer's tar archive entry by entry, and deciding where it ends.
//!
//! Go's `archive/tar`, which containerd, CRI-O and Docker read layers with, ends an archive
//! cleanly at end of stream where a header block or the padding after an entry's data
//! would start. umoci 0.4.7's `insert` (used by KIWI, which builds openSUSE's images) writes
//! such layers: no end-of-archive blocks, and no padding after the last entry's data. The
//! `tar` crate reads that padding while skipping to the next header and fails on it, so the
//! stream is watched here: an end of stream inside the padding after a complete entry is
//! the end of the archive. An end of stream inside an entry's data or inside a header stays
//! an error, as in Go: a truncated layer is never taken as complete. (Go also ends cleanly
//! after a PAX or GNU long-name header whose member is missing; the `tar` crate refuses
//! that, which is kept: such a stream lost a member.)
//!
//! Only the reading stops early: the digests cover the stream as it is, byte for byte.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::StoreError;

const BLOCK: u64 = 512;

/// What the tar parser has read so far, shared between the reader it owns and the walk.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes read.
    pos: Cell<u64>,
    /// The stream ended (a read returned 0 for a non-empty buffer).
    ended: Cell<bool>,
}

/// The tar parser's reader: the stream, counted.
pub(crate) struct Watched<R> {
    inner: R,
    progress: Rc<Progress>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.progress.ended.set(true);
        }
        self.progress.pos.set(self.progress.pos.get() + n as u64);
        Ok(n)
    }
}

/// How the archive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// An end-of-archive block, or the end of the stream where a header would start.
    Archive,
    /// The end of the stream inside the padding after the last entry's data.
    InPadding,
}

/// Hands every entry of the tar archive in `stream` to `each`, in order. Whatever of an
/// entry's data `each` leaves unread is read afterwards, so that a truncated entry fails
/// the walk at that entry.
pub(crate) fn for_each_entry<R: Read>(
    stream: R,
    mut each: impl FnMut(&mut tar::Entry<'_, Watched<R>>) -> Result<(), StoreError>,
) -> Result<End, StoreError> {
    let progress = Rc::new(Progress::default());
    let mut archive = tar::Archive::new(Watched {
        inner: stream,
        progress: progress.clone(),
    });
    let mut entries = archive
        .entries()
        .map_err(|e| StoreError::invalid_stream(format!("reading the tar archive: {e}")))?;
    // Where the data of the last complete entry ends.
    let mut data_end = 0u64;
    loop {
        let mut entry = match entries.next() {
            None => return Ok(End::Archive),
            Some(Ok(entry)) => entry,
            // Nothing is read after an entry's data but its padding before the next header,
            // so an end of stream before the next block boundary was met in the padding.
            Some(Err(_))
                if progress.ended.get()
                    && progress.pos.get() < data_end.next_multiple_of(BLOCK) =>
            {
                return Ok(End::InPadding);
            }
            Some(Err(e)) => {
                return Err(StoreError::invalid_stream(format!(
                    "reading the tar archive: {e}"
                )));
            }
        };
        each(&mut entry)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        io::copy(&mut entry, &mut io::sink())
            .map_err(|e| StoreError::invalid(&name, format!("reading the entry's data: {e}")))?;
        // The parser never asks for more than the entry's data, so the stream cannot have
        // ended unless the data was cut short.
        if progress.ended.get() {
            return Err(StoreError::invalid(
                &name,
                "the layer stream ends inside this entry's data",
            ));
        }
        data_end = progress.pos.get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TarEnd, dir, file, symlink, tar, tar_ending};

    /// Name and data of an entry.
    type Seen = (String, Vec<u8>);

    /// The names and data of every entry, and how the archive ended.
    fn walk(data: &[u8]) -> Result<(Vec<Seen>, End), StoreError> {
        let mut seen = Vec::new();
        let end = for_each_entry(data, |entry| {
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            seen.push((name, bytes));
            Ok(())
        })?;
        Ok((seen, end))
    }

    fn unterminated(entries: &[crate::testutil::E]) -> Vec<u8> {
        tar_ending(entries, TarEnd::NoBlocks)
    }

    #[test]
    fn ends_at_end_of_archive_blocks_or_at_a_block_boundary() {
        let data = tar(&[dir("d"), file("d/f", b"hello")]);
        let (seen, end) = walk(&data).unwrap();
        assert_eq!(end, End::Archive);
        assert_eq!(seen[1], ("d/f".to_string(), b"hello".to_vec()));
        // No end-of-archive blocks at all (umoci): the end of the stream is the end.
        let (seen, end) = walk(&unterminated(&[dir("d"), file("d/f", b"hello")])).unwrap();
        assert_eq!((seen.len(), end), (2, End::Archive));
        // One zero block only, as Go accepts.
        let mut one_block = unterminated(&[file("f", b"x")]);
        one_block.extend_from_slice(&[0u8; 512]);
        assert_eq!(walk(&one_block).unwrap().1, End::Archive);
        assert_eq!(walk(&[]).unwrap(), (vec![], End::Archive));
    }

    #[test]
    fn the_last_entry_may_lack_its_padding() {
        for size in [1usize, 5, 511, 513, 1000, 70_000] {
            let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut data = unterminated(&[symlink("l", "t"), file("f", &body)]);
            let header_and_data = 512 * 2 + size;
            data.truncate(header_and_data);
            let (seen, end) = walk(&data).unwrap();
            assert_eq!(end, End::InPadding, "size {size}");
            assert_eq!(seen[1].1, body, "size {size}");
            // Part of the padding is there.
            if size % 512 < 511 {
                let mut partial = unterminated(&[file("f", &body)]);
                partial.truncate(512 + size + 1);
                assert_eq!(walk(&partial).unwrap().1, End::InPadding, "size {size}");
            }
        }
    }

    #[test]
    fn an_end_inside_data_or_a_header_is_an_error() {
        let body = vec![7u8; 1500];
        let full = unterminated(&[file("a", b"first"), file("big", &body)]);
        // a: header 0..512, data 512..517, padding to 1024; big: header 1024..1536, data
        // 1536..3036, padding to 3072.
        for cut in [1536, 1537, 2048, 3035] {
            let err = walk(&full[..cut]).unwrap_err();
            match err {
                StoreError::InvalidLayer { ref entry, .. } => {
                    assert_eq!(entry.as_deref(), Some("big"), "{cut}")
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        for cut in [1, 511, 1025, 1535] {
            let err = walk(&full[..cut]).unwrap_err();
            assert!(err.is_bad_content(), "cut at {cut}: {err}");
        }
        // Cuts in a's padding are the end of an archive that holds only a.
        for cut in [517, 600, 1023] {
            let (seen, end) = walk(&full[..cut]).unwrap();
            assert_eq!((seen.len(), end), (1, End::InPadding), "cut at {cut}");
        }
        assert_eq!(walk(&full[..1024]).unwrap().1, End::Archive);
    }

    #[test]
    fn unread_data_is_read_and_checked_after_each_entry() {
        let full = unterminated(&[file("big", &[1u8; 4000])]);
        let mut names = Vec::new();
        let err = for_each_entry(&full[..2000], |entry| {
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLayer { ref entry, .. } if entry.as_deref() == Some("big"))
        );
        assert_eq!(names, ["big"]);
    }
}
