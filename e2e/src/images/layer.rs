//! Hand-made OCI layers: tar entries written header by header (so that names the `tar`
//! crate's safe setters refuse, like `../x` or `/etc/x`, can be written on purpose),
//! compressed, and hashed into a digest and a diff_id.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// Modification time given to entries unless a test sets another.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_OCI_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
        }
    }
}

/// Where a regular file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    Bytes(Vec<u8>),
    /// A file on the machine, read when the layer is written; `size` as measured then.
    Path {
        path: PathBuf,
        size: u64,
    },
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File(FileSource),
    Dir,
    Symlink(String),
    /// A hard link to another path of the image (in this layer or a lower one).
    Hardlink(String),
    Fifo,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    /// A header as given: any type byte, size field and link name, followed by `data`
    /// (padded), whatever they say about each other. For entries that only some readers
    /// take as their writer meant (a symlink with a size, a type `7` file, a type `\0`).
    Raw {
        typeflag: u8,
        size_field: u64,
        link: String,
        data: Vec<u8>,
    },
}

/// One tar entry, exactly as written: `path` is raw (it may hold `..`, start with `/` or `./`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

impl TarEntry {
    pub fn new(path: impl Into<String>, kind: EntryKind, mode: u32) -> TarEntry {
        TarEntry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        }
    }

    fn file_name(&self) -> &str {
        let trimmed = self.path.trim_end_matches('/');
        trimmed.rsplit('/').next().unwrap_or(trimmed)
    }

    /// An opaque-directory marker (`<dir>/.wh..wh..opq`).
    pub fn is_opaque_marker(&self) -> bool {
        self.file_name() == OPAQUE_MARKER
    }

    /// For a whiteout `<dir>/.wh.<name>`, the path it removes (`<dir>/<name>`).
    pub fn whiteout_target(&self) -> Option<String> {
        if self.is_opaque_marker() {
            return None;
        }
        let name = self.file_name().strip_prefix(WHITEOUT_PREFIX)?;
        let trimmed = self.path.trim_end_matches('/');
        Some(match trimmed.rfind('/') {
            Some(slash) => format!("{}{name}", &trimmed[..=slash]),
            None => name.to_owned(),
        })
    }

    /// The bytes of a regular file (empty for other kinds).
    pub fn contents(&self) -> io::Result<Vec<u8>> {
        match &self.kind {
            EntryKind::File(FileSource::Bytes(b)) => Ok(b.clone()),
            EntryKind::File(FileSource::Path { path, .. }) => std::fs::read(path),
            _ => Ok(Vec::new()),
        }
    }

    /// The bytes of data written after the header: contents length for regular files and
    /// the data of raw entries, 0 otherwise.
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File(FileSource::Bytes(b)) => b.len() as u64,
            EntryKind::File(FileSource::Path { size, .. }) => *size,
            EntryKind::Raw { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

/// How a layer's tar stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TarEnd {
    /// Two zero blocks, as tar writers should.
    #[default]
    Blocks,
    /// Neither end-of-archive blocks nor padding after the last entry's data, as umoci
    /// 0.4.7's `insert` writes layers (its Go tar writer is never closed).
    Unterminated,
}

/// Builds one layer entry by entry. Each adder returns the builder; `owner`, `mtime`,
/// `mode` and `xattr` then change the entry added last.
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: Vec<TarEntry>,
    end: TarEnd,
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    /// Adds an entry as given, with no changes to its path.
    pub fn entry(&mut self, entry: TarEntry) -> &mut Self {
        self.entries.push(entry);
        self
    }

    pub fn file(&mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::File(FileSource::Bytes(contents.into())),
            mode,
        ))
    }

    /// A regular file whose contents are read from `source` when the layer is written.
    pub fn file_from_path(
        &mut self,
        path: &str,
        source: &Path,
        mode: u32,
    ) -> anyhow::Result<&mut Self> {
        let size = std::fs::metadata(source)
            .with_context(|| format!("cannot stat {}", source.display()))?
            .len();
        Ok(self.entry(TarEntry::new(
            path,
            EntryKind::File(FileSource::Path {
                path: source.to_owned(),
                size,
            }),
            mode,
        )))
    }

    /// A directory; a trailing `/` is added to the name, as tar writers do.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let path = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        self.entry(TarEntry::new(path, EntryKind::Dir, mode))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::Symlink(target.to_owned()),
            0o777,
        ))
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::Hardlink(target.to_owned()),
            0o644,
        ))
    }

    /// A raw entry (see [`EntryKind::Raw`]).
    pub fn raw(
        &mut self,
        path: &str,
        typeflag: u8,
        size_field: u64,
        link: &str,
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::Raw {
                typeflag,
                size_field,
                link: link.to_owned(),
                data: data.into(),
            },
            0o644,
        ))
    }

    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(TarEntry::new(path, EntryKind::Fifo, mode))
    }

    pub fn chardev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::CharDevice { major, minor },
            mode,
        ))
    }

    pub fn blockdev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        self.entry(TarEntry::new(
            path,
            EntryKind::BlockDevice { major, minor },
            mode,
        ))
    }

    /// A whiteout removing `path` from lower layers: an empty file `<dir>/.wh.<name>`.
    /// `path` is used raw, so `whiteout("..")` writes `.wh...`.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let trimmed = path.trim_end_matches('/');
        let name = match trimmed.rfind('/') {
            Some(slash) => format!(
                "{}{WHITEOUT_PREFIX}{}",
                &trimmed[..=slash],
                &trimmed[slash + 1..]
            ),
            None => format!("{WHITEOUT_PREFIX}{trimmed}"),
        };
        self.file(&name, Vec::new(), 0o644)
    }

    /// Marks `dir` opaque: lower layers' contents of it are hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let dir = dir.trim_end_matches('/');
        let name = if dir.is_empty() {
            OPAQUE_MARKER.to_owned()
        } else {
            format!("{dir}/{OPAQUE_MARKER}")
        };
        self.file(&name, Vec::new(), 0o644)
    }

    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        if let Some(last) = self.entries.last_mut() {
            last.uid = uid;
            last.gid = gid;
        }
        self
    }

    pub fn mtime(&mut self, mtime: u64) -> &mut Self {
        if let Some(last) = self.entries.last_mut() {
            last.mtime = mtime;
        }
        self
    }

    pub fn mode(&mut self, mode: u32) -> &mut Self {
        if let Some(last) = self.entries.last_mut() {
            last.mode = mode;
        }
        self
    }

    pub fn xattr(&mut self, name: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        if let Some(last) = self.entries.last_mut() {
            last.xattrs.push((name.to_owned(), value.into()));
        }
        self
    }

    /// Writes every name (and hard link target) from the root, `/etc/x` for `etc/x`, as
    /// umoci and KIWI do; names already absolute stay as they are.
    pub fn absolute_names(&mut self) -> &mut Self {
        let absolute = |p: &mut String| {
            if !p.starts_with('/') {
                *p = format!("/{}", p.trim_start_matches("./"));
            }
        };
        for entry in &mut self.entries {
            absolute(&mut entry.path);
            if let EntryKind::Hardlink(target) = &mut entry.kind {
                absolute(target);
            }
        }
        self
    }

    /// Ends the layer as [`TarEnd`] says.
    pub fn end(&mut self, end: TarEnd) -> &mut Self {
        self.end = end;
        self
    }

    pub fn entries(&self) -> &[TarEntry] {
        &self.entries
    }

    /// The uncompressed tar stream.
    pub fn tar_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        write_tar(&self.entries, self.end, &mut out)?;
        Ok(out)
    }

    /// Writes, compresses and hashes the layer in memory.
    pub fn finish(&self, compression: Compression) -> anyhow::Result<TestLayer> {
        let (blob, digests) = encode(&self.entries, self.end, compression, Vec::new())?;
        Ok(TestLayer::new(
            compression,
            digests,
            LayerBlob::Bytes(blob),
            self.entries.clone(),
        ))
    }

    /// Like [`LayerBuilder::finish`], streaming the blob to `path` (for big layers).
    pub fn finish_to_file(
        &self,
        compression: Compression,
        path: &Path,
    ) -> anyhow::Result<TestLayer> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let (writer, digests) = encode(&self.entries, self.end, compression, BufWriter::new(file))?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot flush layer file")?
            .sync_all()?;
        Ok(TestLayer::new(
            compression,
            digests,
            LayerBlob::File(path.to_owned()),
            self.entries.clone(),
        ))
    }
}

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerBlob {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl LayerBlob {
    pub fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            LayerBlob::Bytes(b) => Ok(b.clone()),
            LayerBlob::File(p) => std::fs::read(p),
        }
    }

    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            LayerBlob::Bytes(b) => Box::new(b.as_slice()),
            LayerBlob::File(p) => Box::new(io::BufReader::new(File::open(p)?)),
        })
    }
}

/// A layer ready to push: what a manifest says about it, its blob, and what it was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLayer {
    pub media_type: String,
    pub compression: Compression,
    /// `sha256:` of the blob as stored in the registry.
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Blob size in bytes.
    pub size: u64,
    pub blob: LayerBlob,
    /// The entries the tar was written from, in order (empty for [`TestLayer::from_tar`]).
    pub entries: Vec<TarEntry>,
}

struct Digests {
    digest: String,
    diff_id: String,
    size: u64,
}

impl TestLayer {
    fn new(
        compression: Compression,
        d: Digests,
        blob: LayerBlob,
        entries: Vec<TarEntry>,
    ) -> TestLayer {
        TestLayer {
            media_type: compression.oci_media_type().to_owned(),
            compression,
            digest: d.digest,
            diff_id: d.diff_id,
            size: d.size,
            blob,
            entries,
        }
    }

    /// A layer from arbitrary tar bytes (truncated or corrupt on purpose, say), compressed.
    pub fn from_tar(tar: &[u8], compression: Compression) -> anyhow::Result<TestLayer> {
        let mut hashed =
            HashWriter::new(Compressor::new(compression, HashWriter::new(Vec::new()))?);
        hashed.write_all(tar)?;
        let (compressor, diff_id, _) = hashed.finish();
        let (blob, digest, size) = compressor.finish()?.finish();
        Ok(TestLayer::new(
            compression,
            Digests {
                digest,
                diff_id,
                size,
            },
            LayerBlob::Bytes(blob),
            Vec::new(),
        ))
    }

    /// The same layer under another media type (for Docker schema 2 manifests).
    pub fn with_media_type(mut self, media_type: &str) -> TestLayer {
        self.media_type = media_type.to_owned();
        self
    }
}

fn encode<W: Write>(
    entries: &[TarEntry],
    end: TarEnd,
    compression: Compression,
    sink: W,
) -> anyhow::Result<(W, Digests)> {
    let mut tar_stream = HashWriter::new(Compressor::new(compression, HashWriter::new(sink))?);
    write_tar(entries, end, &mut tar_stream)?;
    let (compressor, diff_id, _) = tar_stream.finish();
    let (sink, digest, size) = compressor.finish()?.finish();
    Ok((
        sink,
        Digests {
            digest,
            diff_id,
            size,
        },
    ))
}

/// Counts and sha256-hashes everything written through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, `sha256:<hex>` and the byte count.
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    fn new(compression: Compression, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::Plain(inner),
            // mtime 0 and no file name in the gzip header keep blobs reproducible.
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(6),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::Encoder::new(inner, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
        }
    }
}

/// Largest value an 8-byte octal ustar id field holds.
const USTAR_MAX_ID: u64 = 0o7777777;

fn write_tar<W: Write>(entries: &[TarEntry], end: TarEnd, mut out: W) -> anyhow::Result<()> {
    if end == TarEnd::Unterminated {
        // Small layers only: written whole, then cut.
        let mut bytes = Vec::new();
        write_tar(entries, TarEnd::Blocks, &mut bytes)?;
        let padding = entries
            .last()
            .map_or(0, |e| e.size().next_multiple_of(512) - e.size());
        bytes.truncate(bytes.len() - 1024 - usize::try_from(padding)?);
        out.write_all(&bytes)?;
        out.flush()?;
        return Ok(());
    }
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        write_entry(&mut builder, entry)
            .with_context(|| format!("cannot write tar entry {:?}", entry.path))?;
    }
    builder.into_inner()?.flush()?;
    Ok(())
}

fn write_entry<W: Write>(builder: &mut tar::Builder<W>, entry: &TarEntry) -> anyhow::Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();
    set_name_field(
        &mut header.as_old_mut().name,
        entry.path.as_bytes(),
        "path",
        &mut pax,
    );
    let (entry_type, link) = match &entry.kind {
        EntryKind::File(_) => (EntryType::Regular, None),
        EntryKind::Dir => (EntryType::Directory, None),
        EntryKind::Symlink(target) => (EntryType::Symlink, Some(target)),
        EntryKind::Hardlink(target) => (EntryType::Link, Some(target)),
        EntryKind::Fifo => (EntryType::Fifo, None),
        EntryKind::CharDevice { .. } => (EntryType::Char, None),
        EntryKind::BlockDevice { .. } => (EntryType::Block, None),
        EntryKind::Raw { typeflag, link, .. } => (EntryType::new(*typeflag), Some(link)),
    };
    header.set_entry_type(entry_type);
    if let Some(target) = link {
        set_name_field(
            &mut header.as_old_mut().linkname,
            target.as_bytes(),
            "linkpath",
            &mut pax,
        );
    }
    if let EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } =
        entry.kind
    {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_mode(entry.mode);
    for (field, id) in [("uid", entry.uid), ("gid", entry.gid)] {
        if id > USTAR_MAX_ID {
            pax.push((field.to_owned(), id.to_string().into_bytes()));
        }
    }
    header.set_uid(entry.uid.min(USTAR_MAX_ID));
    header.set_gid(entry.gid.min(USTAR_MAX_ID));
    header.set_mtime(entry.mtime);
    header.set_size(entry.size());
    if let EntryKind::Raw {
        typeflag,
        size_field,
        ..
    } = &entry.kind
    {
        // As given: the tar crate writes type `\0` as `0`.
        header.as_mut_bytes()[156] = *typeflag;
        header.set_size(*size_field);
    }
    for (name, value) in &entry.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    header.set_cksum();

    if !pax.is_empty() {
        let records = pax_records(&pax);
        let mut pax_header = Header::new_ustar();
        set_name_field(
            &mut pax_header.as_old_mut().name,
            b"././@PaxHeader",
            "",
            &mut Vec::new(),
        );
        pax_header.set_entry_type(EntryType::XHeader);
        pax_header.set_mode(0o644);
        pax_header.set_mtime(entry.mtime);
        pax_header.set_size(records.len() as u64);
        pax_header.set_cksum();
        builder.append(&pax_header, records.as_slice())?;
    }
    match &entry.kind {
        EntryKind::File(FileSource::Path { path, size }) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            // A file that changed size since it was measured would corrupt the archive.
            builder.append(&header, file.take(*size))?;
        }
        EntryKind::File(FileSource::Bytes(bytes)) | EntryKind::Raw { data: bytes, .. } => {
            builder.append(&header, bytes.as_slice())?
        }
        _ => builder.append(&header, io::empty())?,
    }
    Ok(())
}

/// Copies `value` into a fixed ustar name field; a longer value goes into a PAX record and
/// the field keeps its first bytes (readers that know PAX ignore them).
fn set_name_field(
    field: &mut [u8; 100],
    value: &[u8],
    pax_key: &str,
    pax: &mut Vec<(String, Vec<u8>)>,
) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    if value.len() > field.len() {
        pax.push((pax_key.to_owned(), value.to_vec()));
    }
}

/// PAX records `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // space, '=', newline
        let mut len = rest + rest.to_string().len();
        if len.to_string().len() + rest != len {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ReadEntry {
        path: String,
        kind: EntryType,
        uid: u64,
        mtime: u64,
        link: Option<String>,
        xattrs: Vec<(String, Vec<u8>)>,
    }

    fn read_back(tar: &[u8]) -> Vec<ReadEntry> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let header = entry.header().clone();
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
            out.push(ReadEntry {
                path,
                kind: header.entry_type(),
                uid: header.uid().unwrap(),
                mtime: header.mtime().unwrap(),
                link,
                xattrs,
            });
        }
        out
    }

    #[test]
    fn raw_names_and_metadata_survive_a_round_trip() {
        let long = format!("deep/{}/file", "d".repeat(120));
        let mut b = LayerBuilder::new();
        b.file("../escape", "x", 0o644)
            .file("/etc/abs", "y", 0o600)
            .owner(1000, 1000)
            .mtime(1234)
            .symlink("evil", "../../../etc/shadow")
            .hardlink("outside", "/etc/passwd")
            .whiteout("..")
            .file(&long, "long", 0o644)
            .xattr("user.pvecri", "test")
            .symlink("longlink", &long)
            .fifo("fifo", 0o600)
            .chardev("null", 1, 3, 0o666);
        let tar = b.tar_bytes().unwrap();
        let entries = read_back(&tar);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "../escape",
                "/etc/abs",
                "evil",
                "outside",
                ".wh...",
                long.as_str(),
                "longlink",
                "fifo",
                "null"
            ]
        );
        assert_eq!(entries[1].uid, 1000);
        assert_eq!(entries[1].mtime, 1234);
        assert_eq!(entries[2].link.as_deref(), Some("../../../etc/shadow"));
        assert_eq!(entries[3].kind, EntryType::Link);
        assert_eq!(
            entries[5].xattrs,
            vec![("user.pvecri".to_owned(), b"test".to_vec())]
        );
        assert_eq!(entries[6].link.as_deref(), Some(long.as_str()));
        assert_eq!(entries[7].kind, EntryType::Fifo);
        assert_eq!(entries[8].kind, EntryType::Char);
    }

    #[test]
    fn unterminated_layers_lack_end_blocks_and_the_last_padding() {
        let mut b = LayerBuilder::new();
        b.dir("/", 0o755).file("/etc/x", "x".repeat(700), 0o644);
        let terminated = b.tar_bytes().unwrap();
        b.end(TarEnd::Unterminated);
        let cut = b.tar_bytes().unwrap();
        // Root header, file header, 700 bytes of data; nothing after.
        assert_eq!(cut.len(), 512 + 512 + 700);
        assert_eq!(&terminated[..cut.len()], &cut[..]);
        assert_eq!(terminated.len(), 512 + 512 + 1024 + 1024);
        let layer = b.finish(Compression::Gzip).unwrap();
        assert_eq!(
            layer.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&cut)))
        );
    }

    #[test]
    fn absolute_names_start_every_name_and_link_target_at_the_root() {
        let mut b = LayerBuilder::new();
        b.dir("/", 0o755)
            .file("etc/a", "", 0o644)
            .file("./etc/b", "", 0o644)
            .hardlink("etc/c", "etc/a")
            .whiteout("etc/d");
        b.absolute_names();
        let names: Vec<(&str, Option<&str>)> = b
            .entries()
            .iter()
            .map(|e| {
                let link = match &e.kind {
                    EntryKind::Hardlink(t) => Some(t.as_str()),
                    _ => None,
                };
                (e.path.as_str(), link)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("/", None),
                ("/etc/a", None),
                ("/etc/b", None),
                ("/etc/c", Some("/etc/a")),
                ("/etc/.wh.d", None)
            ]
        );
    }

    #[test]
    fn big_ids_go_to_pax() {
        let mut b = LayerBuilder::new();
        b.file("f", "", 0o644).owner(5_000_000, 6_000_000);
        let tar = b.tar_bytes().unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let exts: Vec<(String, String)> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.key().unwrap().to_owned(), e.value().unwrap().to_owned())
            })
            .collect();
        assert_eq!(
            exts,
            [
                ("uid".to_owned(), "5000000".to_owned()),
                ("gid".to_owned(), "6000000".to_owned())
            ]
        );
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in 0..300 {
            let records = pax_records(&[("k".to_owned(), vec![b'v'; value_len])]);
            let text = String::from_utf8(records.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(
                len.parse::<usize>().unwrap(),
                records.len(),
                "value_len {value_len}"
            );
        }
    }

    #[test]
    fn whiteout_names() {
        let mut b = LayerBuilder::new();
        b.whiteout("a/b/c").whiteout("top").opaque("a/").opaque("");
        let names: Vec<&str> = b.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            ["a/b/.wh.c", ".wh.top", "a/.wh..wh..opq", ".wh..wh..opq"]
        );
        assert_eq!(b.entries()[0].whiteout_target().as_deref(), Some("a/b/c"));
        assert_eq!(b.entries()[1].whiteout_target().as_deref(), Some("top"));
        assert!(b.entries()[2].is_opaque_marker());
        assert_eq!(b.entries()[2].whiteout_target(), None);
    }

    #[test]
    fn digests_match_blob_and_uncompressed_stream() {
        let mut b = LayerBuilder::new();
        b.dir("etc", 0o755)
            .file("etc/hello", "hello world\n", 0o644);
        let tar = b.tar_bytes().unwrap();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let layer = b.finish(compression).unwrap();
            let LayerBlob::Bytes(blob) = &layer.blob else {
                panic!("in memory")
            };
            assert_eq!(layer.diff_id, diff_id);
            assert_eq!(
                layer.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(blob)))
            );
            assert_eq!(layer.size, blob.len() as u64);
            assert_eq!(layer.media_type, compression.oci_media_type());
            let mut plain = Vec::new();
            match compression {
                Compression::None => plain = blob.clone(),
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(blob.as_slice())
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                Compression::Zstd => plain = zstd::decode_all(blob.as_slice()).unwrap(),
            }
            assert_eq!(plain, tar);
            // Reproducible: same entries, same blob.
            assert_eq!(b.finish(compression).unwrap().digest, layer.digest);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        let on_disk = b.finish_to_file(Compression::Gzip, file.path()).unwrap();
        assert_eq!(on_disk.digest, b.finish(Compression::Gzip).unwrap().digest);
        assert_eq!(on_disk.blob.read().unwrap().len() as u64, on_disk.size);
        let raw = TestLayer::from_tar(&tar, Compression::Zstd).unwrap();
        assert_eq!(raw.diff_id, diff_id);
    }

    proptest::proptest! {
        /// Any name and link target, short or long, reads back byte for byte, with its owner
        /// and mtime, whatever the tar crate's safe setters would think of it. (No NUL, which
        /// tar cannot hold, and no newline: tar-rs 0.4.46 splits PAX records at newlines
        /// rather than by their length, so it cannot read such long names back.)
        #[test]
        fn any_raw_name_round_trips(
            name in "[^\\x00\\n]{1,300}",
            target in "[^\\x00\\n]{1,300}",
            uid in 0u64..10_000_000,
            mtime in 0u64..0o77777777777,
        ) {
            let mut b = LayerBuilder::new();
            b.file(&name, "x", 0o644).owner(uid, uid).mtime(mtime).symlink("l", &target);
            let entries = read_back(&b.tar_bytes().unwrap());
            proptest::prop_assert_eq!(entries.len(), 2);
            proptest::prop_assert_eq!(&entries[0].path, &name);
            proptest::prop_assert_eq!(entries[0].uid, uid);
            proptest::prop_assert_eq!(entries[0].mtime, mtime);
            proptest::prop_assert_eq!(entries[1].link.as_deref(), Some(target.as_str()));
        }
    }
}
