//! GNU sparse files: the map of where the data is, in every form Go's `archive/tar` reads
//! (old GNU `S` headers, PAX 0.0/0.1 records, PAX 1.0 map at the start of the data; module
//! `archive` finds them), checked as Go checks it, and the file written with holes where the
//! map has none of its data.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Go's bound on map entries, and on the bytes a map may take in the data.
pub(crate) const MAX_ENTRIES: usize = 1 << 20;
const MAX_MAP_BYTES: usize = 1 << 20;
const BLOCK: usize = 512;

/// A stretch of the file that has data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub offset: i64,
    pub length: i64,
}

impl Fragment {
    fn end(&self) -> i64 {
        self.offset.saturating_add(self.length)
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
fn parse_i64(value: &[u8], what: &str) -> Result<i64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("bad {what} {:?}", String::from_utf8_lossy(value)))
}

fn entry_count(value: &[u8]) -> Result<usize, String> {
    let n = parse_i64(value, "sparse map size")?;
    usize::try_from(n)
        .ok()
        .filter(|n| n.checked_mul(2).is_some())
        .ok_or_else(|| format!("bad sparse map size {n}"))
}

fn push(fragments: &mut Vec<Fragment>, fragment: Fragment) -> Result<(), String> {
    if fragments.len() >= MAX_ENTRIES {
        return Err("the sparse map is too long".into());
    }
    fragments.push(fragment);
    Ok(())
}

/// PAX 0.0/0.1: `GNU.sparse.numblocks` pairs in `GNU.sparse.map` (`offset,length,...`).
pub(crate) fn map_0x1(numblocks: &[u8], map: &[u8]) -> Result<Vec<Fragment>, String> {
    let count = entry_count(numblocks)?;
    let numbers: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|b| *b == b',').collect()
    };
    if numbers.len() != count * 2 {
        return Err(format!(
            "GNU.sparse.map has {} numbers for {count} blocks",
            numbers.len()
        ));
    }
    let mut fragments = Vec::new();
    for pair in numbers.chunks(2) {
        let fragment = Fragment {
            offset: parse_i64(pair[0], "sparse offset")?,
            length: parse_i64(pair[1], "sparse length")?,
        };
        push(&mut fragments, fragment)?;
    }
    Ok(fragments)
}

/// PAX 1.0: the map at the start of the data, newline-terminated decimal numbers (the
/// count, then offset and length per entry), in whole 512-byte blocks.
pub(crate) fn read_map_1x0(data: &mut impl Read) -> Result<Vec<Fragment>, String> {
    let mut text: Vec<u8> = Vec::new();
    let mut newlines = 0usize;
    let mut feed = |text: &mut Vec<u8>, wanted: usize| -> Result<(), String> {
        let mut block = [0u8; BLOCK];
        while newlines < wanted {
            if text.len() + BLOCK > MAX_MAP_BYTES {
                return Err("the sparse map is too long".into());
            }
            data.read_exact(&mut block)
                .map_err(|e| format!("reading the sparse map: {e}"))?;
            newlines += block.iter().filter(|b| **b == b'\n').count();
            text.extend_from_slice(&block);
        }
        Ok(())
    };
    feed(&mut text, 1)?;
    let mut tokens = text.split(|b| *b == b'\n');
    let count = entry_count(tokens.next().unwrap_or_default())?;
    feed(&mut text, count.saturating_mul(2).saturating_add(1))?;
    let mut tokens = text.split(|b| *b == b'\n').skip(1);
    let mut fragments = Vec::new();
    for _ in 0..count {
        let offset = parse_i64(tokens.next().unwrap_or_default(), "sparse offset")?;
        let length = parse_i64(tokens.next().unwrap_or_default(), "sparse length")?;
        push(&mut fragments, Fragment { offset, length })?;
    }
    Ok(fragments)
}

/// Go's `validateSparseEntries`: forward, no overlaps, within the file's size.
pub(crate) fn valid(fragments: &[Fragment], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut end = 0i64;
    for f in fragments {
        if f.offset < 0 || f.length < 0 || f.offset > i64::MAX - f.length {
            return false;
        }
        if f.end() > size || end > f.offset {
            return false;
        }
        end = f.end();
    }
    true
}

/// Writes the sparse file of `size` bytes to `file` from the entry's remaining data `data`
/// (`physical` bytes), which must be exactly the map's data.
pub(crate) fn write(
    fragments: &[Fragment],
    size: i64,
    data: &mut impl Read,
    physical: u64,
    file: &mut File,
    buf: &mut [u8],
) -> Result<(), String> {
    let stored: i64 = fragments.iter().map(|f| f.length).sum();
    if u64::try_from(stored).ok() != Some(physical) {
        return Err(format!(
            "the sparse map names {stored} bytes of data, the entry holds {physical}"
        ));
    }
    for f in fragments {
        file.seek(SeekFrom::Start(f.offset as u64))
            .map_err(|e| format!("seeking: {e}"))?;
        let mut left = f.length as u64;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => return Err("the entry's data ends inside the sparse data".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading file data: {e}")),
            };
            file.write_all(&buf[..n])
                .map_err(|e| format!("writing: {e}"))?;
            left -= n as u64;
        }
    }
    file.set_len(size as u64)
        .map_err(|e| format!("sizing: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frags(list: &[(i64, i64)]) -> Vec<Fragment> {
        list.iter()
            .map(|&(offset, length)| Fragment { offset, length })
            .collect()
    }

    #[test]
    fn maps_in_records_are_read_as_go_reads_them() {
        assert_eq!(
            map_0x1(b"2", b"0,5,40,10").unwrap(),
            frags(&[(0, 5), (40, 10)])
        );
        assert_eq!(map_0x1(b"0", b"").unwrap(), frags(&[]));
        for (n, map) in [
            ("2", "0,5,40"),
            ("x", "0,5"),
            ("-1", ""),
            ("1", "0,x"),
            ("", "0,5"),
        ] {
            assert!(map_0x1(n.as_bytes(), map.as_bytes()).is_err(), "{n} {map}");
        }
        // Negative numbers parse (as in Go) and fail the checks.
        let neg = map_0x1(b"1", b"0,-5").unwrap();
        assert!(!valid(&neg, 10));
    }

    #[test]
    fn the_checks_are_gos() {
        assert!(valid(&frags(&[(0, 5), (20, 0)]), 20));
        assert!(!valid(&frags(&[(0, 11)]), 10));
        assert!(!valid(&frags(&[(5, 5), (8, 1)]), 20));
        assert!(!valid(&frags(&[(i64::MAX, 2)]), i64::MAX));
        assert!(!valid(&frags(&[]), -1));
    }

    fn map_block(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.resize(v.len().next_multiple_of(BLOCK), 0);
        v
    }

    #[test]
    fn the_map_in_data_takes_whole_blocks() {
        let mut data = map_block("2\n0\n5\n40\n10\n");
        data.extend_from_slice(b"helloworldworld");
        let mut r = &data[..];
        assert_eq!(read_map_1x0(&mut r).unwrap(), frags(&[(0, 5), (40, 10)]));
        assert_eq!(r, b"helloworldworld");
        // A map spanning blocks.
        let long: String = std::iter::once("100\n".to_string())
            .chain((0..100).map(|i| format!("{}\n1\n", i * 10)))
            .collect();
        let mut data = map_block(&long);
        assert!(data.len() > BLOCK);
        data.extend_from_slice(&[1u8; 100]);
        let mut r = &data[..];
        assert_eq!(read_map_1x0(&mut r).unwrap().len(), 100);
        assert_eq!(r.len(), 100);
        for bad in ["x\n", "1\n5\n", "2000000\n", "-1\n"] {
            let data = map_block(bad);
            assert!(read_map_1x0(&mut &data[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_holes_and_data_and_checks_the_amount() {
        let dir = tempfile::tempdir().unwrap();
        let fragments = frags(&[(4096, 5), (2097152, 3)]);
        let data = b"helloabc";
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let mut buf = vec![0u8; 4];
        write(&fragments, 3 << 20, &mut &data[..], 8, &mut file, &mut buf).unwrap();
        drop(file);
        let content = std::fs::read(&path).unwrap();
        assert_eq!(content.len(), 3 << 20);
        assert_eq!(&content[4096..4101], b"hello");
        assert_eq!(&content[2097152..2097155], b"abc");
        assert_eq!(content.iter().filter(|b| **b != 0).count(), 8);
        // Holes: far fewer blocks allocated than the size.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        assert!(blocks * 512 < 1 << 20, "{blocks} blocks");
        // More or less data than the map names.
        for physical in [7, 9] {
            let mut file = File::create(dir.path().join("g")).unwrap();
            assert!(
                write(
                    &fragments,
                    3 << 20,
                    &mut &data[..],
                    physical,
                    &mut file,
                    &mut buf
                )
                .is_err()
            );
        }
    }
}
