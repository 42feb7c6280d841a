//! Hand-made tar streams for unit tests, including names no well-behaved tool writes.

use std::io::Write;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Fifo,
    /// Any type byte, size field and data, written as given (`link` in the link field).
    Raw {
        typeflag: u8,
        size: u64,
        data: Vec<u8>,
        link: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct E {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Other PAX records, written as given.
    pub pax: Vec<(String, Vec<u8>)>,
}

pub(crate) fn dir(path: &str) -> E {
    E {
        path: path.into(),
        kind: Kind::Dir,
        mode: 0o755,
        mtime: 1_600_000_000,
        xattrs: vec![],
        pax: vec![],
    }
}

pub(crate) fn file(path: &str, data: &[u8]) -> E {
    E {
        path: path.into(),
        kind: Kind::File(data.to_vec()),
        mode: 0o644,
        mtime: 1_600_000_001,
        xattrs: vec![],
        pax: vec![],
    }
}

pub(crate) fn symlink(path: &str, target: &str) -> E {
    E {
        path: path.into(),
        kind: Kind::Symlink(target.into()),
        mode: 0o777,
        mtime: 1_600_000_002,
        xattrs: vec![],
        pax: vec![],
    }
}

pub(crate) fn hardlink(path: &str, target: &str) -> E {
    E {
        path: path.into(),
        kind: Kind::Hardlink(target.into()),
        mode: 0o644,
        mtime: 0,
        xattrs: vec![],
        pax: vec![],
    }
}

pub(crate) fn raw(path: &str, typeflag: u8, size: u64, data: &[u8], link: &str) -> E {
    E {
        path: path.into(),
        kind: Kind::Raw {
            typeflag,
            size,
            data: data.to_vec(),
            link: link.into(),
        },
        mode: 0o644,
        mtime: 1_600_000_004,
        xattrs: vec![],
        pax: vec![],
    }
}

pub(crate) fn fifo(path: &str) -> E {
    E {
        path: path.into(),
        kind: Kind::Fifo,
        mode: 0o600,
        mtime: 1_600_000_003,
        xattrs: vec![],
        pax: vec![],
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where len counts itself.
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    // Raw bytes: the tar crate refuses `..` and absolute names, which tests need.
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    h.set_cksum();
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// How a hand-made tar stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TarEnd {
    /// Two zero blocks, as tar writers should.
    Blocks,
    /// No end-of-archive blocks.
    NoBlocks,
    /// No end-of-archive blocks and no padding after the last entry's data (umoci 0.4.7).
    NoPadding,
}

/// An uncompressed tar stream of `entries`, with the end-of-archive marker.
pub(crate) fn tar(entries: &[E]) -> Vec<u8> {
    tar_ending(entries, TarEnd::Blocks)
}

/// An uncompressed tar stream of `entries`, ending as `end` says.
pub(crate) fn tar_ending(entries: &[E], end: TarEnd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut unpadded = 0;
    for e in entries {
        if !e.xattrs.is_empty() || !e.pax.is_empty() {
            let mut pax = Vec::new();
            for (k, v) in &e.xattrs {
                pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
            }
            for (k, v) in &e.pax {
                pax.extend(pax_record(k, v));
            }
            let h = raw_header(
                b"PaxHeader",
                tar::EntryType::XHeader,
                pax.len() as u64,
                0o644,
                0,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend(pax);
            pad(&mut out);
        }
        let (kind, data, link, size): (_, &[u8], Option<&str>, Option<u64>) = match &e.kind {
            Kind::Dir => (tar::EntryType::Directory, &[], None, None),
            Kind::File(d) => (tar::EntryType::Regular, d, None, None),
            Kind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(t), None),
            Kind::Hardlink(t) => (tar::EntryType::Link, &[], Some(t), None),
            Kind::Fifo => (tar::EntryType::Fifo, &[], None, None),
            Kind::Raw {
                typeflag,
                size,
                data,
                link,
            } => (
                tar::EntryType::new(*typeflag),
                data,
                Some(link.as_str()),
                Some(*size),
            ),
        };
        let size = size.unwrap_or(data.len() as u64);
        let mut h = raw_header(e.path.as_bytes(), kind, size, e.mode, e.mtime);
        if let Kind::Raw { typeflag, .. } = &e.kind {
            // The byte as given: the tar crate writes `\0` as `0`.
            h.as_mut_bytes()[156] = *typeflag;
            h.set_cksum();
        }
        if let Some(link) = link {
            h.set_link_name_literal(link.as_bytes()).unwrap();
            h.set_cksum();
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        unpadded = out.len();
        pad(&mut out);
    }
    match end {
        TarEnd::Blocks => out.extend_from_slice(&[0u8; 1024]),
        TarEnd::NoBlocks => {}
        TarEnd::NoPadding => out.truncate(unpadded),
    }
    out
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn pax_records_count_their_own_length() {
    let r = pax_record("SCHILY.xattr.user.a", b"xyz");
    let s = String::from_utf8(r.clone()).unwrap();
    let (len, _) = s.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), r.len());
    let long = pax_record("k", &[b'v'; 95]);
    let s = String::from_utf8(long.clone()).unwrap();
    assert_eq!(
        s.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
        long.len()
    );
}

/// Every path below `root` (not following symlinks).
pub(crate) fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}
