//! GNU sparse files in PAX form, as GNU tar (`--format=posix --sparse`) and bsdtar write
//! them: versions 0.0 and 0.1 (map in PAX records) and 1.0 (map at the start of the data,
//! real name in `GNU.sparse.name`, a placeholder `GNUSparseFile.<pid>/<name>` in the
//! header). Read as Go's `archive/tar` reads them, which is what containerd unpacks: the
//! same records, the same version rules, the same checks of the map against the data. The
//! old GNU form (entry type `S`) is the `tar` crate's.
//!
//! The file is written with holes where the map has none of its data.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The most map entries accepted: a map is 16 bytes an entry in memory.
const MAX_FRAGMENTS: u64 = 1 << 20;
const BLOCK: usize = 512;

/// A stretch of the file that has data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Map {
    /// From the PAX records (0.0, 0.1).
    Records(Vec<Fragment>),
    /// At the start of the entry's data (1.0).
    InData,
}

/// A PAX sparse file's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sparse {
    /// The real name (`GNU.sparse.name`), when given.
    pub name: Option<Vec<u8>>,
    /// The real size, when given (else the header's size is the real size).
    pub size: Option<u64>,
    map: Map,
}

fn parse_u64(value: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("bad {what} {:?}", String::from_utf8_lossy(value)))
}

/// The sparse description in an entry's PAX records (in the order written), or `None` if
/// they describe no PAX sparse file. Unknown versions are not sparse files, as in Go.
pub(crate) fn from_pax<'a>(
    records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Option<Sparse>, String> {
    let (mut major, mut minor) = (None, None);
    let (mut name, mut size, mut real_size, mut numblocks, mut map) =
        (None, None, None, None, None::<Vec<u8>>);
    // Version 0.0 repeats GNU.sparse.offset and GNU.sparse.numbytes, in that order.
    let mut pairs: Vec<u64> = Vec::new();
    for (key, value) in records {
        match key {
            b"GNU.sparse.major" => major = Some(value),
            b"GNU.sparse.minor" => minor = Some(value),
            b"GNU.sparse.name" => name = Some(value),
            b"GNU.sparse.size" => size = Some(value),
            b"GNU.sparse.realsize" => real_size = Some(value),
            b"GNU.sparse.numblocks" => numblocks = Some(value),
            b"GNU.sparse.map" => map = Some(value.to_vec()),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let is_offset = key == b"GNU.sparse.offset";
                if is_offset != pairs.len().is_multiple_of(2) || value.contains(&b',') {
                    return Err("GNU.sparse.offset and GNU.sparse.numbytes out of order".into());
                }
                pairs.push(parse_u64(value, "GNU.sparse.offset/numbytes")?);
            }
            _ => {}
        }
    }
    if !pairs.is_empty() {
        let joined: Vec<String> = pairs.iter().map(u64::to_string).collect();
        map = Some(joined.join(",").into_bytes());
    }
    let empty = |v: Option<&[u8]>| v.is_none_or(<[u8]>::is_empty);
    let in_data = match (major.unwrap_or_default(), minor.unwrap_or_default()) {
        (b"0", b"0" | b"1") => false,
        (b"1", b"0") => true,
        _ if !empty(major) || !empty(minor) => return Ok(None),
        _ if map.as_deref().is_some_and(|m| !m.is_empty()) => false,
        _ => return Ok(None),
    };
    let size = match (size.filter(|v| !v.is_empty()), real_size) {
        (Some(v), _) | (None, Some(v)) => Some(parse_u64(v, "GNU.sparse size")?),
        (None, None) => None,
    };
    let map = if in_data {
        Map::InData
    } else {
        let count = parse_u64(numblocks.unwrap_or_default(), "GNU.sparse.numblocks")?;
        let map = map.unwrap_or_default();
        let numbers: Vec<&[u8]> = if map.is_empty() {
            Vec::new()
        } else {
            map.split(|b| *b == b',').collect()
        };
        if numbers.len() as u64 != count.saturating_mul(2) {
            return Err(format!(
                "GNU.sparse.map has {} numbers for {count} blocks",
                numbers.len()
            ));
        }
        let mut fragments = Vec::new();
        for pair in numbers.chunks(2) {
            fragments.push(Fragment {
                offset: parse_u64(pair[0], "sparse offset")?,
                length: parse_u64(pair[1], "sparse length")?,
            });
        }
        Map::Records(fragments)
    };
    Ok(Some(Sparse {
        name: name.filter(|n| !n.is_empty()).map(<[u8]>::to_vec),
        size,
        map,
    }))
}

/// Reads version 1.0's map from the start of `data`: newline-terminated decimal numbers
/// (the count, then offset and length per entry), in whole 512-byte blocks.
fn read_map_in_data(data: &mut impl Read) -> Result<Vec<Fragment>, String> {
    let mut numbers: Vec<u64> = Vec::new();
    let mut wanted: Option<u64> = None;
    let mut current: Vec<u8> = Vec::new();
    let mut block = [0u8; BLOCK];
    loop {
        data.read_exact(&mut block)
            .map_err(|e| format!("reading the sparse map: {e}"))?;
        for &byte in &block {
            if wanted.is_some_and(|w| numbers.len() as u64 == w) {
                break;
            }
            if byte != b'\n' {
                current.push(byte);
                if current.len() > 20 {
                    return Err("a number of the sparse map is too long".into());
                }
                continue;
            }
            let n = parse_u64(&current, "sparse map number")?;
            current.clear();
            match wanted {
                None if n > MAX_FRAGMENTS => {
                    return Err(format!("a sparse map of {n} entries is too big"));
                }
                None => wanted = Some(2 * n),
                Some(_) => numbers.push(n),
            }
        }
        if let Some(w) = wanted
            && numbers.len() as u64 == w
        {
            break;
        }
    }
    Ok(numbers
        .chunks(2)
        .map(|p| Fragment {
            offset: p[0],
            length: p[1],
        })
        .collect())
}

/// The map must go forward without overlaps and stay within the file's size.
fn check_map(fragments: &[Fragment], size: u64) -> Result<(), String> {
    let mut end = 0u64;
    for f in fragments {
        let f_end = f
            .offset
            .checked_add(f.length)
            .ok_or("a sparse map entry overflows")?;
        if f.offset < end || f_end > size {
            return Err(format!(
                "sparse map entry {}+{} overlaps another or passes the size {size}",
                f.offset, f.length
            ));
        }
        end = f_end;
    }
    Ok(())
}

/// Writes the sparse file to `file` from the entry's data `data` (`physical` bytes, which
/// is also the real size unless the records give one).
pub(crate) fn write(
    sparse: &Sparse,
    data: &mut impl Read,
    physical: u64,
    file: &mut File,
    buf: &mut [u8],
) -> Result<(), String> {
    let size = sparse.size.unwrap_or(physical);
    let mut counted = CountingReader {
        inner: data,
        read: 0,
    };
    let fragments = match &sparse.map {
        Map::Records(f) => f.clone(),
        Map::InData => read_map_in_data(&mut counted)?,
    };
    check_map(&fragments, size)?;
    let stored: u64 = fragments.iter().map(|f| f.length).sum();
    if counted.read.checked_add(stored) != Some(physical) {
        return Err(format!(
            "the sparse map names {stored} bytes of data, the entry holds {}",
            physical.saturating_sub(counted.read)
        ));
    }
    for f in &fragments {
        file.seek(SeekFrom::Start(f.offset))
            .map_err(|e| format!("seeking: {e}"))?;
        let mut left = f.length;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match counted.read(&mut buf[..want]) {
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
    file.set_len(size).map_err(|e| format!("sizing: {e}"))?;
    Ok(())
}

struct CountingReader<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(list: &[(&str, &str)]) -> Result<Option<Sparse>, String> {
        from_pax(list.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    fn frags(list: &[(u64, u64)]) -> Map {
        Map::Records(
            list.iter()
                .map(|&(offset, length)| Fragment { offset, length })
                .collect(),
        )
    }

    #[test]
    fn versions_are_told_as_go_tells_them() {
        assert_eq!(records(&[("path", "x"), ("mtime", "1")]).unwrap(), None);
        // Unknown versions are not sparse files.
        assert_eq!(
            records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]).unwrap(),
            None
        );
        let v10 = records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "real"),
            ("GNU.sparse.realsize", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(v10.name.as_deref(), Some(&b"real"[..]));
        assert_eq!(v10.size, Some(100));
        assert_eq!(v10.map, Map::InData);
        let v01 = records(&[
            ("GNU.sparse.size", "50"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.map", "0,5,40,10"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(v01.map, frags(&[(0, 5), (40, 10)]));
        assert_eq!(v01.size, Some(50));
        assert_eq!(v01.name, None);
        let v00 = records(&[
            ("GNU.sparse.size", "50"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "5"),
            ("GNU.sparse.offset", "40"),
            ("GNU.sparse.numbytes", "10"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(v00.map, v01.map);
    }

    #[test]
    fn malformed_maps_are_errors() {
        for bad in [
            vec![("GNU.sparse.numblocks", "2"), ("GNU.sparse.map", "0,5,40")],
            vec![("GNU.sparse.numblocks", "x"), ("GNU.sparse.map", "0,5")],
            vec![
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.numbytes", "5"),
                ("GNU.sparse.offset", "0"),
            ],
            vec![("GNU.sparse.numblocks", "1"), ("GNU.sparse.map", "0,-5")],
            vec![
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "big"),
            ],
        ] {
            assert!(records(&bad).is_err(), "{bad:?}");
        }
        assert!(
            check_map(
                &[Fragment {
                    offset: 0,
                    length: 11
                }],
                10
            )
            .is_err()
        );
        assert!(
            check_map(
                &[
                    Fragment {
                        offset: 5,
                        length: 5
                    },
                    Fragment {
                        offset: 8,
                        length: 1
                    }
                ],
                20
            )
            .is_err()
        );
        assert!(
            check_map(
                &[Fragment {
                    offset: u64::MAX,
                    length: 2
                }],
                u64::MAX
            )
            .is_err()
        );
        assert!(
            check_map(
                &[
                    Fragment {
                        offset: 0,
                        length: 5
                    },
                    Fragment {
                        offset: 20,
                        length: 0
                    }
                ],
                20
            )
            .is_ok()
        );
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
        let map = read_map_in_data(&mut r).unwrap();
        assert_eq!(
            map,
            [
                Fragment {
                    offset: 0,
                    length: 5
                },
                Fragment {
                    offset: 40,
                    length: 10
                }
            ]
        );
        assert_eq!(r, b"helloworldworld");
        // A map spanning blocks.
        let long: String = std::iter::once("100\n".to_string())
            .chain((0..100).map(|i| format!("{}\n1\n", i * 10)))
            .collect();
        let mut data = map_block(&long);
        let blocks = data.len();
        assert!(blocks > BLOCK);
        data.extend_from_slice(&[1u8; 100]);
        let mut r = &data[..];
        assert_eq!(read_map_in_data(&mut r).unwrap().len(), 100);
        assert_eq!(r.len(), 100);
        for bad in ["x\n", "1\n5\n", "2000000\n"] {
            let data = map_block(bad);
            assert!(read_map_in_data(&mut &data[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_holes_and_data_and_checks_the_amount() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = Sparse {
            name: None,
            size: Some(3 << 20),
            map: Map::InData,
        };
        let mut data = map_block("2\n4096\n5\n2097152\n3\n");
        let map_len = data.len() as u64;
        data.extend_from_slice(b"helloabc");
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let mut buf = vec![0u8; 4];
        write(&sparse, &mut &data[..], map_len + 8, &mut file, &mut buf).unwrap();
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
        for physical in [map_len + 7, map_len + 9] {
            let mut file = File::create(dir.path().join("g")).unwrap();
            let mut extra = data.clone();
            extra.push(b'x');
            assert!(write(&sparse, &mut &extra[..], physical, &mut file, &mut buf).is_err());
        }
    }
}
