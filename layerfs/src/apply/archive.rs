//! Reading a layer's tar archive entry by entry, as Go's `archive/tar` reads it (its
//! `Reader.next`): containerd, CRI-O and Docker all read layers with it, so every stream
//! parses here into the entries it gives them, in the same places.
//!
//! What that means, where other readers differ:
//! - Links, symlinks, devices, directories and FIFOs have no data, whatever their size
//!   field (or PAX `size`) says: the next header follows theirs directly.
//! - PAX records (`x`) and GNU long names (`L`, `K`, at most 1 MiB each) apply to the next
//!   entry; a later one of a kind replaces an earlier; a record with an empty value leaves
//!   the header's field as it is; a PAX `size` always wins over the header's.
//! - A type `\0` entry whose name ends with `/` is a directory; any other is a file.
//! - A PAX global header (`g`) is an entry of its own; its records apply to nothing.
//! - Sparse files: the old GNU form (`S`, with extension blocks before the data) and the
//!   PAX 0.0, 0.1 and 1.0 forms; the map is read (for 1.0, from the data) and checked
//!   before the entry is handed on.
//! - The archive ends at two zero blocks, at one zero block and the end of the stream, at
//!   the end of the stream where a header would start, or inside the padding after an
//!   entry's data (umoci 0.4.7's `insert` writes layers without end-of-archive blocks and
//!   without that padding; KIWI builds openSUSE's images with it), even if PAX records or
//!   a long name were waiting for their entry. A zero block followed by anything but a
//!   zero block, an end inside a header or inside an entry's data are errors: a truncated
//!   layer is never taken as complete.
//!
//! Only the reading stops early: the digests cover the stream as it is, byte for byte.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::header::{self, BLOCK, Format, Time, is_header_only, kind};
use super::sparse::{self, Fragment};
use crate::error::StoreError;

/// Go's bound on a PAX header's or a GNU long name's data.
const MAX_SPECIAL: u64 = 1 << 20;

/// An entry's header after PAX records, long names and sparse maps: Go's `tar.Header`.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    /// The file's size (for a sparse file, its real size).
    pub size: i64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub devmajor: i64,
    pub devminor: i64,
    /// The PAX records of the entry (the last value of each key).
    pub pax: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Where a sparse file has data.
    pub sparse: Option<Vec<Fragment>>,
}

impl Header {
    /// The name, for messages.
    pub(crate) fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// One entry: its header and the rest of its data.
pub(crate) struct Entry<'a, R> {
    pub header: Header,
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Entry<'_, R> {
    /// Bytes of data left to read (for a sparse file, of its map's data).
    pub(crate) fn remaining(&self) -> u64 {
        self.reader.remaining
    }
}

impl<R: Read> Read for Entry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

/// How the archive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// End-of-archive blocks, or the end of the stream where a header would start.
    Archive,
    /// The end of the stream inside the padding after an entry's data.
    InPadding,
}

#[derive(Debug)]
enum ReadError {
    /// Not a well-formed archive, as Go's reader would refuse it.
    Format(String),
    /// The stream ended where more was needed.
    Truncated(&'static str),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl ReadError {
    fn into_store(self) -> StoreError {
        match self {
            ReadError::Format(m) => {
                StoreError::invalid_stream(format!("reading the tar archive: {m}"))
            }
            ReadError::Truncated(what) => StoreError::invalid_stream(format!(
                "reading the tar archive: the layer stream ends inside {what}"
            )),
            ReadError::Io(e) => StoreError::invalid_stream(format!("reading the tar archive: {e}")),
        }
    }
}

fn format_error(message: impl Into<String>) -> ReadError {
    ReadError::Format(message.into())
}

struct TarReader<R> {
    r: R,
    /// Data of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> TarReader<R> {
    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the layer stream ends inside this entry's data",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads and drops the rest of the current entry's data.
    fn skip_data(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while self.remaining > 0 {
            self.read_data(&mut buf)?;
        }
        Ok(())
    }

    /// The data of a PAX header or long name (Go's `readSpecialFile`).
    fn read_special(&mut self) -> Result<Vec<u8>, ReadError> {
        if self.remaining > MAX_SPECIAL {
            return Err(format_error("a PAX header or GNU long name is over 1 MiB"));
        }
        let mut data = vec![0u8; usize::try_from(self.remaining).unwrap_or(0)];
        let mut filled = 0;
        while filled < data.len() {
            match self.read_data(&mut data[filled..]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ReadError::Truncated("a PAX header or GNU long name"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(data)
    }

    /// Sets up the data of an entry of `typeflag` and `size` (Go's `handleRegularFile`).
    fn start_data(&mut self, typeflag: u8, size: i64) -> Result<(), ReadError> {
        let size = if is_header_only(typeflag) { 0 } else { size };
        let size = u64::try_from(size).map_err(|_| format_error("negative size"))?;
        self.remaining = size;
        self.pad = size.next_multiple_of(BLOCK as u64) - size;
        Ok(())
    }

    /// The next header block; `Err(end)` where the archive ends.
    fn header_block(&mut self) -> Result<Result<[u8; BLOCK], End>, ReadError> {
        let mut pad = [0u8; BLOCK];
        let pad_len = usize::try_from(self.pad).unwrap_or(0);
        self.pad = 0;
        if read_full(&mut self.r, &mut pad[..pad_len])? < pad_len {
            return Ok(Err(End::InPadding));
        }
        let mut block = [0u8; BLOCK];
        match read_full(&mut self.r, &mut block)? {
            0 => return Ok(Err(End::Archive)),
            BLOCK => {}
            _ => return Err(ReadError::Truncated("a header")),
        }
        if block.iter().any(|b| *b != 0) {
            return Ok(Ok(block));
        }
        match read_full(&mut self.r, &mut block)? {
            0 => Ok(Err(End::Archive)),
            BLOCK if block.iter().all(|b| *b == 0) => Ok(Err(End::Archive)),
            BLOCK => Err(format_error("a zero block followed by a header")),
            _ => Err(ReadError::Truncated("the end-of-archive blocks")),
        }
    }

    /// Go's `Reader.next`.
    fn next(&mut self) -> Result<Result<Header, End>, ReadError> {
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            self.skip_data().map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => ReadError::Truncated("an entry's data"),
                _ => ReadError::Io(e),
            })?;
            let block = match self.header_block()? {
                Ok(block) => block,
                Err(end) => return Ok(Err(end)),
            };
            let raw = header::parse(&block).map_err(|e| format_error(e.0))?;
            self.start_data(raw.typeflag, raw.size)?;
            match raw.typeflag {
                kind::PAX | kind::PAX_GLOBAL => {
                    pax = parse_pax(&self.read_special()?)?;
                    if raw.typeflag == kind::PAX_GLOBAL {
                        return Ok(Ok(global(raw, pax)));
                    }
                }
                kind::GNU_LONG_NAME => {
                    long_name = Some(header::c_string(&self.read_special()?).to_vec());
                }
                kind::GNU_LONG_LINK => {
                    long_link = Some(header::c_string(&self.read_special()?).to_vec());
                }
                _ => {
                    let mut h = merge_pax(raw.clone(), pax)?;
                    if let Some(name) = long_name.filter(|n| !n.is_empty()) {
                        h.name = name;
                    }
                    if let Some(link) = long_link.filter(|n| !n.is_empty()) {
                        h.linkname = link;
                    }
                    if h.typeflag == kind::REG_A {
                        h.typeflag = if h.name.ends_with(b"/") {
                            kind::DIR
                        } else {
                            kind::REG
                        };
                    }
                    self.start_data(h.typeflag, h.size)?;
                    self.sparse(&mut h, &block, raw.format)?;
                    return Ok(Ok(h));
                }
            }
        }
    }

    /// Go's `handleSparseFile`.
    fn sparse(
        &mut self,
        h: &mut Header,
        block: &[u8; BLOCK],
        format: Format,
    ) -> Result<(), ReadError> {
        let fragments = if h.typeflag == kind::GNU_SPARSE {
            Some(self.old_gnu_sparse(h, block, format)?)
        } else {
            self.pax_sparse(h)?
        };
        let Some(fragments) = fragments else {
            return Ok(());
        };
        if is_header_only(h.typeflag) || !sparse::valid(&fragments, h.size) {
            return Err(format_error(format!(
                "bad sparse map for {:?}",
                h.display_name()
            )));
        }
        h.sparse = Some(fragments);
        Ok(())
    }

    /// Go's `readOldGNUSparseMap`: entries in the header, then in extension blocks read
    /// from the stream before the data.
    fn old_gnu_sparse(
        &mut self,
        h: &mut Header,
        block: &[u8; BLOCK],
        format: Format,
    ) -> Result<Vec<Fragment>, ReadError> {
        if format != Format::Gnu {
            return Err(format_error(
                "a sparse (S) entry in a header that is not GNU",
            ));
        }
        h.size = header::gnu_real_size(block).ok_or_else(|| format_error("bad realsize field"))?;
        let mut fragments = Vec::new();
        let mut area = header::gnu_sparse(block).to_vec();
        let mut total = area.len() as u64;
        while total < MAX_SPECIAL {
            let entries = area.len() / 24;
            for i in 0..entries {
                let entry = &area[i * 24..i * 24 + 24];
                if entry[0] == 0 {
                    break;
                }
                let number = |field: &[u8]| {
                    header::parse_numeric(field).ok_or_else(|| format_error("bad sparse map entry"))
                };
                let fragment = Fragment {
                    offset: number(&entry[..12])?,
                    length: number(&entry[12..])?,
                };
                if fragments.len() >= sparse::MAX_ENTRIES {
                    return Err(format_error("the sparse map is too long"));
                }
                fragments.push(fragment);
            }
            if area[entries * 24] == 0 {
                return Ok(fragments);
            }
            let mut ext = [0u8; BLOCK];
            if read_full(&mut self.r, &mut ext)? < BLOCK {
                return Err(ReadError::Truncated("a sparse map"));
            }
            area = ext.to_vec();
            total += area.len() as u64;
        }
        Err(format_error("the sparse map is too long"))
    }

    /// Go's `readGNUSparsePAXHeaders`: `None` if the records describe no sparse file (or
    /// one of a version Go does not know).
    fn pax_sparse(&mut self, h: &mut Header) -> Result<Option<Vec<Fragment>>, ReadError> {
        let get = |key: &str| {
            h.pax
                .get(key.as_bytes())
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let is_1x0 = match (get("GNU.sparse.major"), get("GNU.sparse.minor")) {
            (b"0", b"0" | b"1") => false,
            (b"1", b"0") => true,
            (major, minor) if !major.is_empty() || !minor.is_empty() => return Ok(None),
            _ if !get("GNU.sparse.map").is_empty() => false,
            _ => return Ok(None),
        };
        let name = get("GNU.sparse.name").to_vec();
        let mut size = get("GNU.sparse.size").to_vec();
        if size.is_empty() {
            size = get("GNU.sparse.realsize").to_vec();
        }
        let numblocks = get("GNU.sparse.numblocks").to_vec();
        let map = get("GNU.sparse.map").to_vec();
        if !name.is_empty() {
            h.name = name;
        }
        if !size.is_empty() {
            h.size = std::str::from_utf8(&size)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| format_error("bad GNU.sparse size"))?;
        }
        let fragments = if is_1x0 {
            let mut data = DataReader { reader: self };
            sparse::read_map_1x0(&mut data).map_err(format_error)?
        } else {
            sparse::map_0x1(&numblocks, &map).map_err(format_error)?
        };
        Ok(Some(fragments))
    }
}

/// The entry's data as a plain reader (for the PAX 1.0 sparse map).
struct DataReader<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

/// A PAX global header, as Go returns it: its name and records, nothing else.
fn global(raw: header::Raw, pax: BTreeMap<Vec<u8>, Vec<u8>>) -> Header {
    Header {
        typeflag: kind::PAX_GLOBAL,
        name: raw.name,
        linkname: Vec::new(),
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: Time::new(0, 0),
        atime: None,
        devmajor: 0,
        devminor: 0,
        pax,
        sparse: None,
    }
}

/// Go's `parsePAX` and `parsePAXRecord`: `"<len> <key>=<value>\n"` records; GNU sparse 0.0
/// `offset`/`numbytes` pairs become a `GNU.sparse.map`.
fn parse_pax(data: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ReadError> {
    let bad = || format_error("bad PAX record");
    let mut records = BTreeMap::new();
    let mut sparse_map: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|n| *n >= 5)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= rest.len() && *n > space + 1)
            .ok_or_else(bad)?;
        let record = &rest[space + 1..len];
        rest = &rest[len..];
        let Some((b'\n', body)) = record.split_last() else {
            return Err(bad());
        };
        let eq = body.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        let nul_in_value =
            matches!(key, b"path" | b"linkpath" | b"uname" | b"gname") && value.contains(&0);
        if key.is_empty() || key.contains(&0) || nul_in_value {
            return Err(bad());
        }
        match key {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let expect_offset = sparse_map.len().is_multiple_of(2);
                if (key == b"GNU.sparse.offset") != expect_offset || value.contains(&b',') {
                    return Err(format_error("GNU.sparse.offset and numbytes out of order"));
                }
                sparse_map.push(value.to_vec());
            }
            _ => {
                records.insert(key.to_vec(), value.to_vec());
            }
        }
    }
    if !sparse_map.is_empty() {
        records.insert(b"GNU.sparse.map".to_vec(), sparse_map.join(&b","[..]));
    }
    Ok(records)
}

/// Go's `parsePAXTime`: decimal seconds with an optional fraction.
pub(crate) fn parse_pax_time(value: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(value).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    if frac.is_empty() {
        return Some(Time::new(secs, 0));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = frac.as_bytes()[..frac.len().min(9)].to_vec();
    digits.resize(9, b'0');
    let nanos: i64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    Some(if whole.starts_with('-') {
        Time::new(secs, -nanos)
    } else {
        Time::new(secs, nanos)
    })
}

fn parse_int(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Go's `mergePAX`.
fn merge_pax(raw: header::Raw, pax: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Header, ReadError> {
    let mut h = Header {
        typeflag: raw.typeflag,
        name: raw.name,
        linkname: raw.linkname,
        mode: raw.mode,
        uid: raw.uid,
        gid: raw.gid,
        size: raw.size,
        mtime: raw.mtime,
        atime: raw.atime,
        devmajor: raw.devmajor,
        devminor: raw.devminor,
        pax: BTreeMap::new(),
        sparse: None,
    };
    for (key, value) in &pax {
        if value.is_empty() {
            continue;
        }
        let bad = || format_error(format!("bad PAX record {}", String::from_utf8_lossy(key)));
        match key.as_slice() {
            b"path" => h.name = value.clone(),
            b"linkpath" => h.linkname = value.clone(),
            b"uid" => h.uid = parse_int(value).ok_or_else(bad)?,
            b"gid" => h.gid = parse_int(value).ok_or_else(bad)?,
            b"size" => h.size = parse_int(value).ok_or_else(bad)?,
            b"mtime" => h.mtime = parse_pax_time(value).ok_or_else(bad)?,
            b"atime" => h.atime = Some(parse_pax_time(value).ok_or_else(bad)?),
            b"ctime" => {
                parse_pax_time(value).ok_or_else(bad)?;
            }
            _ => {}
        }
    }
    h.pax = pax;
    Ok(h)
}

/// Hands every entry of the tar archive in `stream` to `each`, in order. Whatever of an
/// entry's data `each` leaves unread is read afterwards, so that a truncated entry fails
/// the walk at that entry.
pub(crate) fn for_each_entry<R: Read>(
    stream: R,
    mut each: impl FnMut(&mut Entry<'_, R>) -> Result<(), StoreError>,
) -> Result<End, StoreError> {
    let mut reader = TarReader {
        r: stream,
        remaining: 0,
        pad: 0,
    };
    loop {
        let header = match reader.next().map_err(ReadError::into_store)? {
            Ok(header) => header,
            Err(end) => return Ok(end),
        };
        let name = header.display_name();
        let mut entry = Entry {
            header,
            reader: &mut reader,
        };
        each(&mut entry)?;
        reader
            .skip_data()
            .map_err(|e| StoreError::invalid(&name, format!("reading the entry's data: {e}")))?;
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
            let name = entry.header.display_name();
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| StoreError::invalid(&name, e.to_string()))?;
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
        // Anything after the end-of-archive blocks is not read.
        let mut trailing = tar(&[file("f", b"x")]);
        trailing.extend_from_slice(b"trailing garbage");
        assert_eq!(walk(&trailing).unwrap().0.len(), 1);
        // A zero block, then a header, or part of a block: refused, as in Go.
        let mut zero_then_header = unterminated(&[file("f", b"x")]);
        zero_then_header.extend_from_slice(&[0u8; 512]);
        zero_then_header.extend_from_slice(&tar(&[file("g", b"y")]));
        assert!(walk(&zero_then_header).unwrap_err().is_bad_content());
        let mut zero_then_part = unterminated(&[file("f", b"x")]);
        zero_then_part.extend_from_slice(&[0u8; 700]);
        assert!(walk(&zero_then_part).unwrap_err().is_bad_content());
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
            assert!(err.is_bad_content(), "cut at {cut}: {err}");
            // Left unread by the caller: the walk names the entry.
            let err = for_each_entry(&full[..cut], |_| Ok(())).unwrap_err();
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

    /// A raw header block: `name`, type, size field, optional link name; USTAR.
    fn block(name: &str, typeflag: u8, size: u64, link: &str) -> Vec<u8> {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[136..147].copy_from_slice(b"14712345670");
        b[156] = typeflag;
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|c| u32::from(*c)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b.to_vec()
    }

    /// A PAX record, `"<len> <key>=<value>\n"`.
    fn rec(key: &str, value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut len = body + body.to_string().len();
        if len.to_string().len() + body != len {
            len = body + len.to_string().len();
        }
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    fn with_pax(records: &[u8], rest: &[Vec<u8>]) -> Vec<u8> {
        let mut data = block("PaxHeader", kind::PAX, records.len() as u64, "");
        data.extend(padded(records.to_vec()));
        for r in rest {
            data.extend_from_slice(r);
        }
        data
    }

    fn padded(mut data: Vec<u8>) -> Vec<u8> {
        data.resize(data.len().next_multiple_of(BLOCK), 0);
        data
    }

    fn types_and_names(data: &[u8]) -> Vec<(u8, String, Vec<u8>)> {
        let mut seen = Vec::new();
        for_each_entry(data, |entry| {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            seen.push((entry.header.typeflag, entry.header.display_name(), bytes));
            Ok(())
        })
        .unwrap();
        seen
    }

    /// Links, symlinks, directories, devices and FIFOs have no data, whatever their size
    /// says: the next header follows theirs, as Go reads it.
    #[test]
    fn header_only_types_have_no_data_whatever_their_size() {
        for typeflag in [
            kind::LINK,
            kind::SYMLINK,
            kind::DIR,
            kind::CHAR,
            kind::BLOCK,
            kind::FIFO,
        ] {
            let mut data = block("x", typeflag, 1000, "t");
            data.extend(block("next", kind::REG, 3, ""));
            data.extend(padded(b"abc".to_vec()));
            data.extend([0u8; 1024]);
            let seen = types_and_names(&data);
            assert_eq!(
                seen,
                vec![
                    (typeflag, "x".to_string(), vec![]),
                    (kind::REG, "next".to_string(), b"abc".to_vec())
                ],
                "type {}",
                typeflag as char
            );
        }
        // A PAX size does not give them data either.
        let data = with_pax(
            &rec("size", b"700"),
            &[
                block("l", kind::SYMLINK, 0, "t"),
                block("next", kind::REG, 0, ""),
                vec![0u8; 1024],
            ],
        );
        let seen = types_and_names(&data);
        assert_eq!(seen.len(), 2);
        // A regular file's PAX size wins over its header's.
        let data = with_pax(
            &rec("size", b"3"),
            &[
                block("f", kind::REG, 700, ""),
                padded(b"xyz".to_vec()),
                block("next", kind::REG, 0, ""),
                vec![0u8; 1024],
            ],
        );
        let seen = types_and_names(&data);
        assert_eq!(seen[0].2, b"xyz");
        assert_eq!(seen[1].1, "next");
    }

    #[test]
    fn old_style_types_and_names() {
        // Type `\0`: a directory if the name ends with `/` (type `0` never is).
        let mut data = block("d/", kind::REG_A, 0, "");
        data.extend(block("f", kind::REG_A, 0, ""));
        data.extend(block("g/", kind::REG, 0, ""));
        data.extend([0u8; 1024]);
        let seen: Vec<(u8, String)> = types_and_names(&data)
            .into_iter()
            .map(|(t, n, _)| (t, n))
            .collect();
        assert_eq!(
            seen,
            vec![
                (kind::DIR, "d/".into()),
                (kind::REG, "f".into()),
                (kind::REG, "g/".into())
            ]
        );
    }

    #[test]
    fn pax_records_and_long_names_apply_to_the_next_entry() {
        let long = "l".repeat(300);
        let mut data = block(
            "././@LongLink",
            kind::GNU_LONG_NAME,
            long.len() as u64 + 1,
            "",
        );
        data.extend(padded(format!("{long}\0").into_bytes()));
        let records = [
            rec("path", b"from-pax"),
            rec("linkpath", b"tgt2"),
            rec("uid", b""),
        ]
        .concat();
        data.extend(with_pax(
            &records,
            &[block("short", kind::SYMLINK, 0, "tgt")],
        ));
        // The next entry gets none of them.
        data.extend(block("plain", kind::REG, 0, ""));
        // A global header is an entry of its own.
        let comment = rec("comment", b"abcd");
        data.extend(block(
            "pax_global_header",
            kind::PAX_GLOBAL,
            comment.len() as u64,
            "",
        ));
        data.extend(padded(comment));
        data.extend([0u8; 1024]);
        let mut seen = Vec::new();
        for_each_entry(&data[..], |entry| {
            seen.push(entry.header.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        // The GNU long name wins over the PAX path, as in Go.
        assert_eq!(seen[0].name, long.as_bytes());
        assert_eq!(seen[0].linkname, b"tgt2");
        assert_eq!(seen[0].uid, 0);
        assert_eq!(seen[1].name, b"plain");
        assert!(seen[1].pax.is_empty());
        assert_eq!(seen[2].typeflag, kind::PAX_GLOBAL);
        assert_eq!(
            seen[2].pax.get(&b"comment"[..]).map(Vec::as_slice),
            Some(&b"abcd"[..])
        );
    }

    #[test]
    fn bad_pax_records_are_refused() {
        let raw: [&[u8]; 5] = [
            b"3 a\n",
            b"12 path=xy\n",
            b"x path=x\n",
            b"10 path=xy",
            b"9 pathxy\n",
        ];
        let mut cases: Vec<Vec<u8>> = raw.iter().map(|r| r.to_vec()).collect();
        cases.extend([
            rec("", b"value"),
            rec("path", b"a\0b"),
            rec("mtime", b"1.x5"),
            rec("uid", b"-x"),
            rec("size", b"abc"),
            [
                rec("GNU.sparse.numbytes", b"5"),
                rec("GNU.sparse.offset", b"0"),
            ]
            .concat(),
        ]);
        for records in cases {
            let data = with_pax(&records, &[block("f", kind::REG, 0, ""), vec![0u8; 1024]]);
            assert!(
                walk(&data).unwrap_err().is_bad_content(),
                "{:?}",
                String::from_utf8_lossy(&records)
            );
        }
        // A NUL in another key's value is fine.
        let data = with_pax(
            &rec("SCHILY.xattr.user.a", b"\0"),
            &[block("f", kind::REG, 0, ""), vec![0u8; 1024]],
        );
        assert_eq!(walk(&data).unwrap().0.len(), 1);
    }

    /// A PAX header or long name whose entry never comes: the archive ends there, as Go's
    /// reader ends it (the digests still cover every byte).
    #[test]
    fn a_stream_may_end_after_records_waiting_for_their_entry() {
        let mut data = tar_ending(&[file("f", b"x")], TarEnd::NoBlocks);
        data.extend(with_pax(&rec("uid", b"5"), &[]));
        assert_eq!(walk(&data).unwrap().0.len(), 1);
        let mut cut = data.clone();
        cut.truncate(cut.len() - 503);
        assert_eq!(walk(&cut).unwrap().1, End::InPadding);
    }

    #[test]
    fn pax_times_as_go_parses_them() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.secs, t.nanos));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("-0.5"), Some((-1, 500_000_000)));
        assert_eq!(t("1.1234567899"), Some((1, 123_456_789)));
        assert_eq!(t("x"), None);
        assert_eq!(t(".5"), None);
        assert_eq!(t("1.-5"), None);
    }

    #[test]
    fn unread_data_is_read_and_checked_after_each_entry() {
        let full = unterminated(&[file("big", &[1u8; 4000])]);
        let mut names = Vec::new();
        let err = for_each_entry(&full[..2000], |entry| {
            names.push(entry.header.display_name());
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLayer { ref entry, .. } if entry.as_deref() == Some("big"))
        );
        assert_eq!(names, ["big"]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Kind {
            File(Vec<u8>),
            Dir,
            Symlink(String),
            Link(String),
            Fifo,
        }

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z]{1,8}(/[a-z.]{1,8}){0,3}",
                // Long enough for GNU long names or USTAR prefixes.
                "[a-z]{60,90}/[a-z]{60,90}(/[a-z]{1,40})?",
            ]
        }

        fn entry() -> impl Strategy<Value = (String, Kind, u32, u64, u64)> {
            let kind = prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..1500).prop_map(Kind::File),
                Just(Kind::Dir),
                name().prop_map(Kind::Symlink),
                name().prop_map(Kind::Link),
                Just(Kind::Fifo),
            ];
            (
                name(),
                kind,
                0..0o7777u32,
                0..70_000u64,
                0..2_000_000_000u64,
            )
        }

        /// What a reader saw of an entry: type, name, link name, mode, uid, mtime, data.
        type Seen = (u8, Vec<u8>, Vec<u8>, u32, u64, i64, Vec<u8>);

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            /// For archives the `tar` crate writes (GNU and USTAR headers, GNU long names and
            /// links), this reader sees what the `tar` crate's reader sees.
            #[test]
            fn reads_well_formed_archives_as_the_tar_crate_does(
                entries in proptest::collection::vec(entry(), 1..12),
                gnu in any::<bool>(),
            ) {
                let mut builder = tar::Builder::new(Vec::new());
                for (path, kind, mode, uid, mtime) in &entries {
                    let mut h = if gnu { tar::Header::new_gnu() } else { tar::Header::new_ustar() };
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    h.set_mtime(*mtime);
                    let result = match kind {
                        Kind::File(data) => {
                            h.set_entry_type(tar::EntryType::Regular);
                            h.set_size(data.len() as u64);
                            builder.append_data(&mut h, path, data.as_slice())
                        }
                        Kind::Dir | Kind::Fifo => {
                            h.set_entry_type(if matches!(kind, Kind::Dir) {
                                tar::EntryType::Directory
                            } else {
                                tar::EntryType::Fifo
                            });
                            h.set_size(0);
                            builder.append_data(&mut h, path, io::empty())
                        }
                        Kind::Symlink(t) | Kind::Link(t) => {
                            h.set_entry_type(if matches!(kind, Kind::Link(_)) {
                                tar::EntryType::Link
                            } else {
                                tar::EntryType::Symlink
                            });
                            h.set_size(0);
                            builder.append_link(&mut h, path, t)
                        }
                    };
                    // Names the writer cannot put in a USTAR header are not the point here.
                    if result.is_err() {
                        return Ok(());
                    }
                }
                let data = builder.into_inner().unwrap();
                let mut theirs: Vec<Seen> = Vec::new();
                let mut archive = tar::Archive::new(&data[..]);
                for e in archive.entries().unwrap() {
                    let mut e = e.unwrap();
                    let h = e.header().clone();
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes).unwrap();
                    theirs.push((
                        h.entry_type().as_byte(),
                        e.path_bytes().into_owned(),
                        e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default(),
                        h.mode().unwrap(),
                        h.uid().unwrap(),
                        h.mtime().unwrap() as i64,
                        bytes,
                    ));
                }
                let mut ours: Vec<Seen> = Vec::new();
                for_each_entry(&data[..], |e| {
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes).unwrap();
                    let h = &e.header;
                    ours.push((
                        h.typeflag,
                        h.name.clone(),
                        h.linkname.clone(),
                        h.mode as u32,
                        h.uid as u64,
                        h.mtime.secs,
                        bytes,
                    ));
                    Ok(())
                })
                .unwrap();
                prop_assert_eq!(ours, theirs);
            }

            /// Whatever bytes a layer holds, the reader ends (or fails) without panicking,
            /// and never hands out more data than the stream had.
            #[test]
            fn never_panics_on_mutated_archives(
                entries in proptest::collection::vec(entry(), 1..6),
                mutations in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
                cut in any::<proptest::sample::Index>(),
            ) {
                let mut builder = tar::Builder::new(Vec::new());
                for (path, kind, mode, _, _) in &entries {
                    let mut h = tar::Header::new_gnu();
                    h.set_mode(*mode);
                    let data: &[u8] = match kind {
                        Kind::File(d) => d,
                        _ => &[],
                    };
                    h.set_size(data.len() as u64);
                    let _ = builder.append_data(&mut h, path, data);
                }
                let mut data = builder.into_inner().unwrap();
                for (at, byte, fix) in &mutations {
                    let i = at.index(data.len());
                    data[i] = *byte;
                    if *fix {
                        // Keep the block's checksum right, so the header is parsed further.
                        let start = i - i % BLOCK;
                        let block = &mut data[start..start + BLOCK];
                        block[148..156].fill(b' ');
                        let sum: u32 = block.iter().map(|c| u32::from(*c)).sum();
                        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                    }
                }
                data.truncate(cut.index(data.len() + 1));
                let mut total = 0usize;
                let _ = for_each_entry(&data[..], |e| {
                    let mut bytes = Vec::new();
                    let _ = e.read_to_end(&mut bytes);
                    total += bytes.len();
                    Ok(())
                });
                prop_assert!(total <= data.len());
            }
        }
    }
}
