//! One 512-byte tar header block, decoded as Go's `archive/tar` decodes it (`readHeader`,
//! `getFormat`, `parseNumeric`): the same checksum rule (unsigned or signed sum), the same
//! format guess from the magic, the same fields per format, the same number syntax (octal
//! with spaces and NULs trimmed, or base-256). containerd, CRI-O and Docker all read layers
//! with it, so a header means here what it means to them.

use std::fmt;

pub(crate) const BLOCK: usize = 512;

/// Entry types (`Typeflag`).
pub(crate) mod kind {
    pub const REG: u8 = b'0';
    /// Pre-POSIX regular file; a directory if the name ends with `/`.
    pub const REG_A: u8 = 0;
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const CONT: u8 = b'7';
    pub const PAX: u8 = b'x';
    pub const PAX_GLOBAL: u8 = b'g';
    pub const GNU_LONG_NAME: u8 = b'L';
    pub const GNU_LONG_LINK: u8 = b'K';
    pub const GNU_SPARSE: u8 = b'S';
}

/// Types that have no data, whatever their size field says: Go reads the next header right
/// after theirs.
pub(crate) fn is_header_only(typeflag: u8) -> bool {
    matches!(
        typeflag,
        kind::LINK | kind::SYMLINK | kind::CHAR | kind::BLOCK | kind::DIR | kind::FIFO
    )
}

/// What a header block is, judged by its checksum and magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The checksum does not match: not a header.
    Unknown,
    V7,
    /// `ustar\0`: USTAR or PAX.
    Ustar,
    /// `ustar  \0`: old GNU.
    Gnu,
    /// `ustar\0` with the `tar\0` trailer.
    Star,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderError(pub String);

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: &str) -> HeaderError {
    HeaderError(format!("invalid tar header: bad {what} field"))
}

/// A time as seconds and nanoseconds (`0..1e9`) since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Time {
    pub secs: i64,
    pub nanos: i64,
}

impl Time {
    /// Go's `time.Unix(secs, nanos)`: `nanos` may be out of range and is carried.
    pub(crate) fn new(secs: i64, nanos: i64) -> Time {
        Time {
            secs: secs.saturating_add(nanos.div_euclid(1_000_000_000)),
            nanos: nanos.rem_euclid(1_000_000_000),
        }
    }
}

/// The fields of a header block (before PAX records and GNU long names apply).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub format: Format,
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub size: i64,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub devmajor: i64,
    pub devminor: i64,
}

/// The bytes of a string field up to its first NUL.
pub(crate) fn c_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|b| *b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Octal, with leading and trailing spaces and NULs trimmed; empty is 0.
fn parse_octal(field: &[u8]) -> Option<i64> {
    let start = field.iter().position(|b| *b != b' ' && *b != 0);
    let Some(start) = start else {
        return Some(0);
    };
    let end = field
        .iter()
        .rposition(|b| *b != b' ' && *b != 0)
        .unwrap_or(start);
    let digits = c_string(&field[start..=end]);
    let text = std::str::from_utf8(digits).ok()?;
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok().map(|v| v as i64)
}

/// Octal, or base-256 (two's complement, big-endian) when the first bit is set.
pub(crate) fn parse_numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &byte) in field.iter().enumerate() {
        let mut c = byte ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 > 0 {
            return None;
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 > 0 {
        return None;
    }
    Some(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// The format of `block` (`Unknown` if its checksum is wrong).
pub(crate) fn format(block: &[u8; BLOCK]) -> Format {
    let Some(value) = parse_octal(&block[148..156]) else {
        return Format::Unknown;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    if value != unsigned && value != signed {
        return Format::Unknown;
    }
    let magic = &block[257..263];
    let version = &block[263..265];
    let trailer = &block[508..512];
    match () {
        _ if magic == b"ustar\0" && trailer == b"tar\0" => Format::Star,
        _ if magic == b"ustar\0" => Format::Ustar,
        _ if magic == b"ustar " && version == b" \0" => Format::Gnu,
        _ => Format::V7,
    }
}

/// Decodes a header block (not all zeros).
pub(crate) fn parse(block: &[u8; BLOCK]) -> Result<Raw, HeaderError> {
    let format = format(block);
    if format == Format::Unknown {
        return Err(HeaderError(
            "invalid tar header: the checksum does not match".into(),
        ));
    }
    let num = |range: std::ops::Range<usize>, what: &str| {
        parse_numeric(&block[range]).ok_or_else(|| bad(what))
    };
    let mut raw = Raw {
        format,
        typeflag: block[156],
        name: c_string(&block[0..100]).to_vec(),
        linkname: c_string(&block[157..257]).to_vec(),
        size: num(124..136, "size")?,
        mode: num(100..108, "mode")?,
        uid: num(108..116, "uid")?,
        gid: num(116..124, "gid")?,
        mtime: Time::new(num(136..148, "mtime")?, 0),
        atime: None,
        devmajor: 0,
        devminor: 0,
    };
    if format == Format::V7 {
        return Ok(raw);
    }
    raw.devmajor = num(329..337, "devmajor")?;
    raw.devminor = num(337..345, "devminor")?;
    let prefix: &[u8] = match format {
        Format::Ustar => c_string(&block[345..500]),
        Format::Star => {
            raw.atime = Some(Time::new(num(476..488, "atime")?, 0));
            c_string(&block[345..476])
        }
        _ => {
            // GNU: access and change times, if set. Go before 1.8 wrote a USTAR prefix
            // there; one that does not parse as times is taken for that prefix.
            let atime = &block[345..357];
            let ctime = &block[357..369];
            let parsed_atime = (atime[0] != 0).then(|| parse_numeric(atime));
            let ctime_ok = ctime[0] == 0 || parse_numeric(ctime).is_some();
            match parsed_atime {
                Some(None) => old_go_prefix(block),
                _ if !ctime_ok => old_go_prefix(block),
                Some(Some(secs)) => {
                    raw.atime = Some(Time::new(secs, 0));
                    &[]
                }
                None => &[],
            }
        }
    };
    if !prefix.is_empty() {
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(&raw.name);
        raw.name = name;
    }
    Ok(raw)
}

fn old_go_prefix(block: &[u8; BLOCK]) -> &[u8] {
    let prefix = c_string(&block[345..500]);
    if prefix.is_ascii() { prefix } else { &[] }
}

/// The sparse map of an old GNU (`S`) header: up to four entries at 386, the "extended"
/// flag at 482, the real size at 483.
pub(crate) fn gnu_sparse(block: &[u8; BLOCK]) -> &[u8] {
    &block[386..386 + 4 * 24 + 1]
}

pub(crate) fn gnu_real_size(block: &[u8; BLOCK]) -> Option<i64> {
    parse_numeric(&block[483..495])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block for `name`, with a correct checksum.
    pub(crate) fn block(name: &str, typeflag: u8, size: &str) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..124 + size.len()].copy_from_slice(size.as_bytes());
        b[136..147].copy_from_slice(b"14712345670");
        b[156] = typeflag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        fix_checksum(&mut b);
        b
    }

    pub(crate) fn fix_checksum(b: &mut [u8; BLOCK]) {
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|c| u32::from(*c)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn numbers_are_octal_or_base256_as_in_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644  \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"        "), Some(0));
        assert_eq!(parse_numeric(b"12\x0034"), Some(0o12));
        assert_eq!(parse_numeric(b"0008"), None);
        assert_eq!(parse_numeric(b"+7"), None);
        assert_eq!(parse_numeric(b"-7"), None);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]),
            Some(256)
        );
        // Base-256 negative: -1.
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        // Overflow.
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(parse_numeric(b"7777777777777777777777"), None);
    }

    #[test]
    fn the_checksum_may_be_signed_or_unsigned() {
        let mut b = block("f", kind::REG, "00000000005");
        b[500] = 0xe9; // a byte whose signed and unsigned values differ
        fix_checksum(&mut b);
        assert_eq!(format(&b), Format::Ustar);
        // The sum as old Sun tar computed it, with signed bytes.
        b[148..156].fill(b' ');
        let signed: i64 = b.iter().map(|c| i64::from(*c as i8)).sum();
        b[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert_eq!(format(&b), Format::Ustar);
        b[0] = b'g';
        assert_eq!(format(&b), Format::Unknown);
        assert!(parse(&b).is_err());
    }

    #[test]
    fn formats_and_their_fields() {
        let mut b = block("name", kind::REG, "00000000005");
        b[345..351].copy_from_slice(b"prefix");
        fix_checksum(&mut b);
        let raw = parse(&b).unwrap();
        assert_eq!(raw.format, Format::Ustar);
        assert_eq!(raw.name, b"prefix/name");
        assert_eq!((raw.size, raw.mode), (5, 0o644));
        assert_eq!(raw.mtime, Time::new(0o14712345670, 0));
        // STAR: a shorter prefix, and times after it.
        b[508..512].copy_from_slice(b"tar\0");
        b[476..487].copy_from_slice(b"00000000010");
        fix_checksum(&mut b);
        let raw = parse(&b).unwrap();
        assert_eq!(raw.format, Format::Star);
        assert_eq!(raw.atime, Some(Time::new(8, 0)));
        // GNU: no prefix; times where USTAR has it.
        let mut g = block("name", kind::REG, "00000000005");
        g[257..263].copy_from_slice(b"ustar ");
        g[263..265].copy_from_slice(b" \0");
        g[345..356].copy_from_slice(b"00000000011");
        fix_checksum(&mut g);
        let raw = parse(&g).unwrap();
        assert_eq!(
            (raw.format, raw.name.as_slice()),
            (Format::Gnu, &b"name"[..])
        );
        assert_eq!(raw.atime, Some(Time::new(9, 0)));
        // ... unless they do not parse: then they were a prefix written by old Go.
        g[345..356].copy_from_slice(b"old/go/dirx");
        fix_checksum(&mut g);
        assert_eq!(parse(&g).unwrap().name, b"old/go/dirx/name");
        // V7: no magic, no device numbers or prefix.
        let mut v = block("v7", kind::REG, "00000000005");
        v[257..265].fill(0);
        v[329..336].copy_from_slice(b"garbage");
        fix_checksum(&mut v);
        let raw = parse(&v).unwrap();
        assert_eq!((raw.format, raw.devmajor), (Format::V7, 0));
        // A bad number in any field parsed for the format fails the header.
        let mut n = block("n", kind::REG, "0000000000x");
        fix_checksum(&mut n);
        assert!(parse(&n).is_err());
    }

    #[test]
    fn times_carry_nanoseconds_like_go() {
        assert_eq!(
            Time::new(-1, -500_000_000),
            Time {
                secs: -2,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            Time::new(1, 1_500_000_000),
            Time {
                secs: 2,
                nanos: 500_000_000
            }
        );
    }
}
