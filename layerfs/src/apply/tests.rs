//! Unprivileged tests of the applier in merged mode (owners are not set). The overlay form,
//! owners, devices and the drivers are tested as root in `e2e/tests/layerfs*.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::digest::Digest;
use crate::testutil::*;

fn opts() -> ApplyOptions {
    ApplyOptions {
        id_shift: None,
        xattrs: true,
        chown: false,
        devices: true,
    }
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    fd: OwnedFd,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("sentinel"), b"keep").unwrap();
        let fd = crate::sys::open_dir(&root).unwrap();
        Sandbox {
            _tmp: tmp,
            root,
            outside,
            fd,
        }
    }

    fn apply(&self, entries: &[E]) -> Result<Applied, StoreError> {
        self.apply_ending(entries, TarEnd::Blocks)
    }

    fn apply_ending(&self, entries: &[E], end: TarEnd) -> Result<Applied, StoreError> {
        let data = tar_ending(entries, end);
        apply_layer(
            &mut &data[..],
            Compression::None,
            Target::Merged(self.fd.as_fd()),
            &opts(),
        )
    }

    /// Nothing was created or changed next to the root.
    fn assert_confined(&self) {
        let parent = self.root.parent().unwrap();
        let mut names: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"]);
        let outside: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, ["sentinel"]);
        assert_eq!(
            std::fs::read(self.outside.join("sentinel")).unwrap(),
            b"keep"
        );
    }
}

/// A directory tree as comparable values: path -> description.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, String>,
        inodes: &mut BTreeMap<u64, String>,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let desc = if ft.is_dir() {
                walk(root, &path, out, inodes);
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink {}", std::fs::read_link(&path).unwrap().display())
            } else if ft.is_file() {
                let first = inodes
                    .entry(md.ino())
                    .or_insert_with(|| rel.clone())
                    .clone();
                let link = if first != rel {
                    format!(" =link({first})")
                } else {
                    String::new()
                };
                format!(
                    "file {}{link}",
                    Digest::of_bytes(&std::fs::read(&path).unwrap()).hex()[..12].to_owned()
                )
            } else {
                "other".to_string()
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

fn keys(map: &BTreeMap<String, String>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn applies_files_dirs_links_modes_and_times() {
    let sb = Sandbox::new();
    let mut suid = file("bin/tool", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    let applied = sb
        .apply(&[
            dir("./"),
            dir("bin"),
            suid,
            symlink("bin/sh", "tool"),
            hardlink("bin/tool2", "bin/tool"),
            fifo("run.fifo"),
        ])
        .unwrap();
    assert_eq!(applied.entries, 6);
    let md = std::fs::symlink_metadata(sb.root.join("bin/tool")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(md.mtime(), 1_600_000_001);
    assert_eq!(md.nlink(), 2);
    assert_eq!(
        std::fs::read_link(sb.root.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        std::fs::symlink_metadata(sb.root.join("bin/sh"))
            .unwrap()
            .mtime(),
        1_600_000_002
    );
    // Directory times are set after their children were created.
    assert_eq!(
        std::fs::metadata(sb.root.join("bin")).unwrap().mtime(),
        1_600_000_000
    );
    assert!(
        std::fs::symlink_metadata(sb.root.join("run.fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    sb.assert_confined();
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn digests_are_computed_over_the_compressed_and_uncompressed_stream() {
    let sb = Sandbox::new();
    let raw = tar(&[file("a", b"hello")]);
    let gz = gzip(&raw);
    let applied = apply_layer(
        &mut &gz[..],
        Compression::Gzip,
        Target::Merged(sb.fd.as_fd()),
        &opts(),
    )
    .unwrap();
    assert_eq!(applied.digests.diff_id, Digest::of_bytes(&raw));
    assert_eq!(applied.digests.compressed_digest, Digest::of_bytes(&gz));
    assert_eq!(std::fs::read(sb.root.join("a")).unwrap(), b"hello");
}

#[test]
fn whiteouts_and_opaque_directories_remove_lower_content_only() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir("a"),
        file("a/b", b"1"),
        file("a/c", b"2"),
        dir("d"),
        file("d/x", b"3"),
        dir("o"),
        file("o/old", b"4"),
    ])
    .unwrap();
    sb.apply(&[
        dir("a"),
        file("a/.wh.b", b""),
        file(".wh.d", b""),
        // Same-layer content survives the opaque marker, whichever comes first.
        dir("o"),
        file("o/new", b"5"),
        file("o/.wh..wh..opq", b""),
        // A whiteout of something this layer made only affects lower layers.
        file("mine", b"6"),
        file(".wh.mine", b""),
        file(".wh.never-existed", b""),
        file("missing-dir/.wh.x", b""),
    ])
    .unwrap();
    let snap = snapshot(&sb.root);
    assert_eq!(
        keys(&snap),
        BTreeSet::from(["a", "a/c", "mine", "o", "o/new"])
    );
}

#[test]
fn a_whiteout_of_a_directory_this_layer_fills_keeps_only_its_new_content() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir("d"),
        file("d/lower", b"1"),
        dir("d/sub"),
        file("d/sub/lower", b"2"),
    ])
    .unwrap();
    sb.apply(&[file("d/sub/upper", b"3"), file(".wh.d", b"")])
        .unwrap();
    assert_eq!(
        keys(&snapshot(&sb.root)),
        BTreeSet::from(["d", "d/sub", "d/sub/upper"])
    );
}

#[test]
fn replacing_types_works_both_ways() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir("x"),
        file("x/inner", b"1"),
        file("y", b"2"),
        symlink("z", "/etc"),
    ])
    .unwrap();
    sb.apply(&[
        file("x", b"now a file"),
        dir("y"),
        file("y/in", b"3"),
        file("z", b"no longer a link"),
    ])
    .unwrap();
    let snap = snapshot(&sb.root);
    assert_eq!(keys(&snap), BTreeSet::from(["x", "y", "y/in", "z"]));
    assert!(snap["z"].starts_with("file"));
    sb.assert_confined();
}

#[test]
fn parents_are_created_and_symlinked_parents_inside_the_root_are_followed() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir("usr"),
        dir("usr/lib"),
        symlink("lib", "usr/lib"),
        file("deep/er/file", b"x"),
    ])
    .unwrap();
    sb.apply(&[file("lib/libc.so", b"c")]).unwrap();
    assert_eq!(
        std::fs::read(sb.root.join("usr/lib/libc.so")).unwrap(),
        b"c"
    );
    assert_eq!(
        std::fs::metadata(sb.root.join("deep/er"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

fn assert_unsafe(result: Result<Applied, StoreError>, entry: &str) {
    match result {
        Err(StoreError::UnsafeEntry { entry: e, .. }) => assert_eq!(e, entry),
        other => panic!("expected UnsafeEntry({entry}), got {other:?}"),
    }
}

#[test]
fn malicious_layers_are_rejected_naming_the_entry() {
    let cases: Vec<(Vec<E>, &str)> = vec![
        (vec![file("../evil", b"x")], "../evil"),
        (vec![file("a/../../evil", b"x")], "a/../../evil"),
        (vec![hardlink("pw", "../outside/sentinel")], "pw"),
        (vec![file(".wh..", b"")], ".wh.."),
        (vec![dir("d"), file("d/.wh...", b"")], "d/.wh..."),
    ];
    for (entries, bad) in cases {
        let sb = Sandbox::new();
        assert_unsafe(sb.apply(&entries), bad);
        sb.assert_confined();
    }
}

fn file_desc(content: &[u8]) -> String {
    format!("file {}", &Digest::of_bytes(content).hex()[..12])
}

/// containerd resolves the parent path of every entry, hard link target and whiteout as if
/// the layer root were `/` (`fs.RootPath`): a symlink leading out of the root, absolute or
/// by `..`, leads to the same path inside it, and a dangling one to new directories where
/// its target would be. Nothing is written outside the root.
#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir("run"),
        dir("var"),
        symlink("var/run", "/run"),
        symlink("var/uprun", "../../../../run"),
        symlink("var/lock", "../run/lock"),
        symlink("escape", "/"),
        symlink("rel", "../outside"),
    ])
    .unwrap();
    sb.apply(&[
        file("var/run/x", b"x"),
        file("var/uprun/y", b"y"),
        file("var/lock/z", b"z"),
        file("escape/tmp/t", b"t"),
        file("rel/sentinel", b"inside"),
        hardlink("h", "rel/sentinel"),
        hardlink("escape/h2", "/var/run/x"),
    ])
    .unwrap();
    sb.apply(&[
        file("var/run/.wh.y", b""),
        file("escape/tmp/.wh..wh..opq", b""),
        file("var/uprun/new", b"n"),
    ])
    .unwrap();
    let expected: BTreeMap<String, String> = [
        ("escape", "symlink /".to_string()),
        ("h", file_desc(b"inside")),
        ("h2", file_desc(b"x")),
        ("outside", "dir".into()),
        (
            "outside/sentinel",
            format!("{} =link(h)", file_desc(b"inside")),
        ),
        ("rel", "symlink ../outside".into()),
        ("run", "dir".into()),
        ("run/lock", "dir".into()),
        ("run/lock/z", file_desc(b"z")),
        ("run/new", file_desc(b"n")),
        ("run/x", format!("{} =link(h2)", file_desc(b"x"))),
        ("tmp", "dir".into()),
        ("var", "dir".into()),
        ("var/lock", "symlink ../run/lock".into()),
        ("var/run", "symlink /run".into()),
        ("var/uprun", "symlink ../../../../run".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(snapshot(&sb.root), expected);
    for made in ["run/lock", "outside", "tmp"] {
        let md = std::fs::metadata(sb.root.join(made)).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o755, "{made}");
    }
    sb.assert_confined();

    // Loops and non-directories in the path are still invalid.
    for entries in [
        vec![symlink("etc", "/etc"), file("etc/passwd", b"x")],
        vec![
            symlink("l1", "l2"),
            symlink("l2", "/l1"),
            file("l1/x", b"x"),
        ],
        vec![file("f", b"x"), symlink("l", "/f"), file("l/x", b"x")],
    ] {
        let sb = Sandbox::new();
        let err = sb.apply(&entries).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLayer { .. }),
            "{entries:?}: {err}"
        );
        sb.assert_confined();
    }
}

/// Layers as umoci and KIWI write them: a root entry `/`, absolute member names, hard link
/// targets and whiteouts, no end-of-archive blocks and no padding after the last entry.
/// containerd reads every name relative to the layer root, and so do we; it ignores an
/// entry for the root itself ("resolved to root"), of whatever type, and so do we.
#[test]
fn absolute_names_and_root_entries_are_relative_to_the_root() {
    let sb = Sandbox::new();
    std::fs::set_permissions(&sb.root, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut root = dir("/");
    root.mode = 0o751;
    root.mtime = 1_234_567_890;
    let base = [
        root,
        dir("/etc/"),
        file("/etc/os-release", b"NAME=test\n"),
        file("/etc/gone", b"bye"),
        dir("/opq/"),
        file("/opq/old", b"old"),
        symlink("/etc/link", "/etc/os-release"),
        hardlink("/etc/hard", "/etc/os-release"),
        file("/last", b"no padding after me"),
    ];
    let raw = tar_ending(&base, TarEnd::NoPadding);
    assert_ne!(raw.len() % 512, 0);
    let gz = gzip(&raw);
    let applied = apply_layer(
        &mut &gz[..],
        Compression::Gzip,
        Target::Merged(sb.fd.as_fd()),
        &opts(),
    )
    .unwrap();
    assert_eq!(applied.entries, 9);
    // The digests are those of the stream as it is: no padding was made up.
    assert_eq!(applied.digests.diff_id, Digest::of_bytes(&raw));
    assert_eq!(applied.digests.uncompressed_size, raw.len() as u64);
    assert_eq!(applied.digests.compressed_digest, Digest::of_bytes(&gz));
    let md = std::fs::metadata(&sb.root).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert_ne!(md.mtime(), 1_234_567_890);
    assert_eq!(
        std::fs::read(sb.root.join("last")).unwrap(),
        b"no padding after me"
    );
    let hard = std::fs::metadata(sb.root.join("etc/hard")).unwrap();
    assert_eq!(hard.nlink(), 2);
    assert_eq!(
        std::fs::read_link(sb.root.join("etc/link")).unwrap(),
        Path::new("/etc/os-release")
    );

    // `.` and `./` are the root too, even as a file; whiteouts and opaque markers with
    // absolute names.
    let mut dot = dir(".");
    dot.mode = 0o755;
    let upper = [
        dot,
        file("./", b"not a directory, still the root"),
        file("etc/..", b"the root as well"),
        file("/etc/.wh.gone", b""),
        file("/opq/.wh..wh..opq", b""),
        file("/opq/new", b"new"),
        hardlink("/again", "etc/hard"),
    ];
    sb.apply_ending(&upper, TarEnd::NoBlocks).unwrap();
    assert_eq!(
        std::fs::metadata(&sb.root).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let tree = snapshot(&sb.root);
    assert!(!tree.contains_key("etc/gone"));
    assert!(tree.contains_key("etc/os-release"));
    assert!(!tree.contains_key("opq/old"));
    assert!(tree.contains_key("opq/new"));
    assert_eq!(std::fs::metadata(sb.root.join("again")).unwrap().nlink(), 3);
    sb.assert_confined();
}

/// A layer cut inside an entry's data or header is refused, however it is compressed, and
/// whatever the cut leaves at the end; cut inside the padding of its last entry, it is the
/// layer without its end-of-archive blocks.
#[test]
fn a_truncated_layer_is_never_complete() {
    let entries = [
        dir("/d/"),
        file("/d/a", &[3u8; 700]),
        file("/d/b", &[4u8; 1300]),
    ];
    let full = tar_ending(&entries, TarEnd::NoBlocks);
    // /d/ 0..512; /d/a header 512..1024, data 1024..1724, pad to 2048; /d/b header
    // 2048..2560, data 2560..3860, pad to 4096.
    assert_eq!(full.len(), 4096);
    for cut in [1, 600, 1024, 1723, 2049, 2560, 3000, 3859] {
        for compression in [Compression::None, Compression::Gzip] {
            let sb = Sandbox::new();
            let data = match compression {
                Compression::Gzip => gzip(&full[..cut]),
                _ => full[..cut].to_vec(),
            };
            let err = apply_layer(
                &mut &data[..],
                compression,
                Target::Merged(sb.fd.as_fd()),
                &opts(),
            )
            .unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidLayer { .. }),
                "cut at {cut}: {err}"
            );
        }
    }
    for (cut, files) in [(1724, 1), (2000, 1), (2048, 1), (3860, 2), (4000, 2)] {
        let sb = Sandbox::new();
        let applied = apply_layer(
            &mut &full[..cut],
            Compression::None,
            Target::Merged(sb.fd.as_fd()),
            &opts(),
        )
        .unwrap();
        assert_eq!(applied.digests.diff_id, Digest::of_bytes(&full[..cut]));
        assert_eq!(applied.entries, 1 + files, "cut at {cut}");
    }
}

fn apply_gz(sb: &Sandbox, gz: &[u8]) -> Applied {
    apply_layer(
        &mut &gz[..],
        Compression::Gzip,
        Target::Merged(sb.fd.as_fd()),
        &opts(),
    )
    .unwrap()
}

/// Sparse files as GNU tar writes them, in every form it has (`testdata/README.md`): the
/// real name and the whole content, as Go's reader (and so containerd) gives them; the PAX
/// forms with holes.
#[test]
fn gnu_tar_sparse_files_in_every_format() {
    let mut expected = vec![0u8; 3_145_828];
    expected[4096..4096 + 5000].fill(b'A');
    expected[2 << 20..(2 << 20) + 700].fill(b'B');
    expected[(3 << 20) + 50..(3 << 20) + 100].fill(b'C');
    let fixtures: [(&str, &[u8]); 4] = [
        ("pax0.0", include_bytes!("testdata/sparse-pax0.0.tar.gz")),
        ("pax0.1", include_bytes!("testdata/sparse-pax0.1.tar.gz")),
        ("pax1.0", include_bytes!("testdata/sparse-pax1.0.tar.gz")),
        ("gnu", include_bytes!("testdata/sparse-gnu.tar.gz")),
    ];
    for (format, gz) in fixtures {
        let sb = Sandbox::new();
        apply_gz(&sb, gz);
        assert_eq!(
            keys(&snapshot(&sb.root)),
            BTreeSet::from(["sparse.bin"]),
            "{format}"
        );
        let path = sb.root.join("sparse.bin");
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "{format}: content"
        );
        if format.starts_with("pax") {
            let md = std::fs::metadata(&path).unwrap();
            assert!(
                md.blocks() * 512 < 1 << 20,
                "{format}: {} blocks",
                md.blocks()
            );
        }
        sb.assert_confined();
    }
}

/// A PAX sparse map that names more data than the entry holds, or less, is refused.
#[test]
fn a_sparse_map_that_disagrees_with_the_data_is_invalid() {
    let sparse = |map: &str, data: &[u8]| {
        let mut e = file("./GNUSparseFile.1/f", data);
        e.pax = vec![
            ("GNU.sparse.size".into(), b"100".to_vec()),
            ("GNU.sparse.numblocks".into(), b"1".to_vec()),
            ("GNU.sparse.name".into(), b"f".to_vec()),
            ("GNU.sparse.map".into(), map.as_bytes().to_vec()),
        ];
        e
    };
    let sb = Sandbox::new();
    sb.apply(&[sparse("10,5", b"hello")]).unwrap();
    let content = std::fs::read(sb.root.join("f")).unwrap();
    assert_eq!(content.len(), 100);
    assert_eq!(&content[10..15], b"hello");
    assert!(!sb.root.join("GNUSparseFile.1").exists());
    for (map, data) in [
        ("10,5", &b"hell"[..]),
        ("10,5", b"hello!"),
        ("98,5", b"hello"),
    ] {
        let sb = Sandbox::new();
        let err = sb.apply(&[sparse(map, data)]).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLayer { .. }),
            "{map} {data:?}: {err}"
        );
    }
    // The real name is checked like any other.
    let mut escape = sparse("0,1", b"x");
    escape.pax[2].1 = b"../evil".to_vec();
    assert_unsafe(Sandbox::new().apply(&[escape]), "../evil");
}

/// Long names as GNU tar writes them: GNU long name and long link entries, PAX `path` and
/// `linkpath`, and the ustar prefix field.
#[test]
fn gnu_tar_long_names_in_every_format() {
    let dir = format!("{}/{}", "d".repeat(70), "e".repeat(70));
    let fixtures: [(&str, &[u8]); 3] = [
        ("gnu", include_bytes!("testdata/long-gnu.tar.gz")),
        ("posix", include_bytes!("testdata/long-posix.tar.gz")),
        ("ustar", include_bytes!("testdata/long-ustar.tar.gz")),
    ];
    for (format, gz) in fixtures {
        let sb = Sandbox::new();
        apply_gz(&sb, gz);
        let file = sb.root.join(&dir).join("file-with-a-long-name.txt");
        assert_eq!(std::fs::read(&file).unwrap(), b"long named\n", "{format}");
        if format != "ustar" {
            let hard = sb.root.join(&dir).join("hardlink-with-a-long-name-too.txt");
            assert_eq!(
                std::fs::metadata(&hard).unwrap().ino(),
                std::fs::metadata(&file).unwrap().ino(),
                "{format}"
            );
            assert_eq!(
                std::fs::read_link(sb.root.join("link")).unwrap(),
                Path::new(&dir).join("file-with-a-long-name.txt"),
                "{format}"
            );
        }
        sb.assert_confined();
    }
}

/// A hard link to a symlink links the symlink itself, as link(2) and containerd do (an
/// escaping target is no matter: the symlink is not followed).
#[test]
fn a_hard_link_to_a_symlink_links_the_symlink() {
    let sb = Sandbox::new();
    sb.apply(&[
        symlink("/etc/alt", "/etc/passwd"),
        hardlink("/etc/alt2", "/etc/alt"),
    ])
    .unwrap();
    let a = std::fs::symlink_metadata(sb.root.join("etc/alt")).unwrap();
    let b = std::fs::symlink_metadata(sb.root.join("etc/alt2")).unwrap();
    assert!(b.file_type().is_symlink());
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    sb.assert_confined();
}

/// The symlink itself is never followed as the last component of an entry: it is replaced.
#[test]
fn a_symlink_is_replaced_not_followed_as_the_last_component() {
    let sb = Sandbox::new();
    sb.apply(&[symlink("escape", "/"), symlink("rel", "../outside")])
        .unwrap();
    sb.apply(&[file("rel", b"plain"), dir("escape")]).unwrap();
    let snap = snapshot(&sb.root);
    assert_eq!(snap["rel"], file_desc(b"plain"));
    assert_eq!(snap["escape"], "dir");
    sb.assert_confined();
}

/// Layers from AUFS-era Docker may hold its bookkeeping: the `.wh..wh.plnk` directory of
/// hard-link targets (with hard links into it), `.wh..wh.aufs`, `.wh..wh.orph`. containerd
/// reads a `.wh..wh.<x>` entry as a whiteout of `.wh.<x>` (nothing), and a path through
/// `.wh..wh.plnk/` as any other: the directory is made and the files land in it, so the
/// hard links resolve. `.wh.` names of directories in a path are plain names.
#[test]
fn aufs_bookkeeping_is_read_as_containerd_reads_it() {
    let sb = Sandbox::new();
    sb.apply(&[
        dir(".wh..wh.plnk"),
        file(".wh..wh.plnk/1234.5678", b"shared"),
        hardlink("usr/bin/tool", ".wh..wh.plnk/1234.5678"),
        file(".wh..wh.aufs", b""),
        dir(".wh..wh.orph"),
        file("d/.wh.inner/x", b"x"),
    ])
    .unwrap();
    let expected: BTreeMap<String, String> = [
        (".wh..wh.plnk", "dir".to_string()),
        (".wh..wh.plnk/1234.5678", file_desc(b"shared")),
        ("d", "dir".into()),
        ("d/.wh.inner", "dir".into()),
        ("d/.wh.inner/x", file_desc(b"x")),
        ("usr", "dir".into()),
        ("usr/bin", "dir".into()),
        (
            "usr/bin/tool",
            format!("{} =link(.wh..wh.plnk/1234.5678)", file_desc(b"shared")),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(snapshot(&sb.root), expected);
    // A later layer's `.wh..wh.plnk` whites out `.wh.plnk`, not the directory.
    sb.apply(&[dir(".wh..wh.plnk")]).unwrap();
    assert!(sb.root.join(".wh..wh.plnk/1234.5678").exists());
    sb.assert_confined();
}

/// Entry types and size fields read as Go's reader and containerd read them: links,
/// symlinks, directories, devices and FIFOs have no data whatever their size field says
/// (the next header follows theirs); a type `\0` entry ending with `/` is a directory, a
/// type `0` one a file; contiguous files (`7`) and unknown types are refused.
#[test]
fn entry_types_and_sizes_as_containerd_reads_them() {
    let sb = Sandbox::new();
    sb.apply(&[
        raw("l", b'2', 700, b"", "target"),
        raw("d", b'5', 3, b"", ""),
        raw("p", b'6', 1_000_000, b"", ""),
        file("after", b"read from the right place"),
        raw("olddir/", 0, 0, b"", ""),
        raw("oldfile", 0, 5, b"old-f", ""),
        raw("slash-but-file/", b'0', 4, b"file", ""),
    ])
    .unwrap();
    let snap = snapshot(&sb.root);
    assert_eq!(snap["l"], "symlink target");
    assert_eq!(snap["d"], "dir");
    assert_eq!(snap["after"], file_desc(b"read from the right place"));
    assert_eq!(snap["olddir"], "dir");
    assert_eq!(snap["oldfile"], file_desc(b"old-f"));
    assert_eq!(snap["slash-but-file"], file_desc(b"file"));
    // Data written after a header-only entry is read as the next header: not a valid one.
    let err = Sandbox::new()
        .apply(&[
            raw("l", b'2', 10, b"0123456789", "target"),
            file("after", b"x"),
        ])
        .unwrap_err();
    assert!(err.is_bad_content(), "{err}");
    for (typeflag, what) in [(b'7', "contiguous"), (b'V', "'V'"), (b'D', "'D'")] {
        let err = Sandbox::new()
            .apply(&[raw("c", typeflag, 3, b"abc", "")])
            .unwrap_err();
        match err {
            StoreError::InvalidLayer {
                ref entry,
                ref reason,
            } => {
                assert_eq!(entry.as_deref(), Some("c"));
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("type {}: {other:?}", typeflag as char),
        }
    }
    sb.assert_confined();
}

/// In a user namespace, block and character devices are skipped, as containerd skips them
/// (before anything else: a whiteout of that type too); FIFOs are made.
#[test]
fn devices_are_skipped_where_they_cannot_be_made() {
    let sb = Sandbox::new();
    sb.apply(&[dir("dev"), file("dev/keep", b"x")]).unwrap();
    let no_devices = ApplyOptions {
        devices: false,
        ..opts()
    };
    let data = tar(&[
        raw("dev/null", b'3', 0, b"", ""),
        raw("dev/sda", b'4', 0, b"", ""),
        raw("dev/.wh.keep", b'3', 0, b"", ""),
        raw("newdir/disk", b'4', 0, b"", ""),
        fifo("dev/fifo"),
    ]);
    let applied = apply_layer(
        &mut &data[..],
        Compression::None,
        Target::Merged(sb.fd.as_fd()),
        &no_devices,
    )
    .unwrap();
    assert_eq!(applied.devices_skipped, 4);
    assert_eq!(
        keys(&snapshot(&sb.root)),
        BTreeSet::from(["dev", "dev/fifo", "dev/keep"])
    );
}

/// A file that a later entry replaces is a new file: hard links to the old one keep the old
/// content, as containerd's remove-then-create gives it, within a layer and across layers.
#[test]
fn hard_links_keep_the_file_a_later_entry_replaces() {
    let sb = Sandbox::new();
    sb.apply(&[
        file("a", b"v1"),
        hardlink("b", "a"),
        file("c", b"one"),
        hardlink("d", "c"),
        file("c", b"two"),
    ])
    .unwrap();
    sb.apply(&[file("a", b"v2")]).unwrap();
    sb.apply(&[file(".wh.a", b"")]).unwrap();
    let snap = snapshot(&sb.root);
    assert_eq!(
        snap,
        BTreeMap::from([
            ("b".to_string(), file_desc(b"v1")),
            ("c".to_string(), file_desc(b"two")),
            ("d".to_string(), file_desc(b"one")),
        ])
    );
}

#[test]
fn malformed_entries_are_invalid() {
    for entries in [
        vec![file("f", b"x"), file("f/g", b"y")],
        vec![hardlink("h", "missing")],
        vec![dir("d"), hardlink("h", "d")],
    ] {
        let sb = Sandbox::new();
        let err = sb.apply(&entries).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLayer { .. }),
            "{entries:?}: {err}"
        );
    }
    let sb = Sandbox::new();
    let mut truncated = tar(&[file("big", &[7u8; 5000])]);
    truncated.truncate(1500);
    let err = apply_layer(
        &mut &truncated[..],
        Compression::None,
        Target::Merged(sb.fd.as_fd()),
        &opts(),
    )
    .unwrap_err();
    assert!(err.is_bad_content(), "{err}");
}

#[test]
fn xattrs_are_kept_or_counted_as_dropped() {
    let sb = Sandbox::new();
    let mut f = file("f", b"x");
    f.xattrs = vec![
        ("user.pvecri.test".into(), b"v".to_vec()),
        ("trusted.overlay.opaque".into(), b"y".to_vec()),
    ];
    let no_xattrs = ApplyOptions {
        xattrs: false,
        ..opts()
    };
    let data = tar(&[f.clone()]);
    let applied = apply_layer(
        &mut &data[..],
        Compression::None,
        Target::Merged(sb.fd.as_fd()),
        &no_xattrs,
    )
    .unwrap();
    assert_eq!(applied.xattrs_dropped, 1);
    let applied = sb.apply(&[f]).unwrap();
    let dir = crate::sys::open_dir(&sb.root).unwrap();
    let got = crate::sys::list_xattrs_at(dir.as_fd(), std::ffi::OsStr::new("f")).unwrap();
    if applied.xattrs_dropped == 0 {
        assert_eq!(got, vec![("user.pvecri.test".into(), b"v".to_vec())]);
    } else {
        assert!(got.is_empty()); // a temp dir on a file system without user xattrs
    }
}

mod model {
    //! A model of merged-mode semantics, compared with the real applier on random layers.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub(super) enum Op {
        Dir(String),
        File(String, u8),
        Symlink(String, &'static str),
        Hardlink(String, String),
        Whiteout(String),
        Opaque(String),
    }

    /// Symlink targets: dangling, leaving the root (absolute or by `..`, which resolves
    /// inside it), leading to directories of the tree, looping.
    const TARGETS: [&str; 9] = [
        "nowhere",
        "/etc",
        "../../../../x",
        "a",
        "/a/b",
        "..",
        "../c",
        "/",
        "b/../../a",
    ];

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
            .prop_map(|v| v.join("/"))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => path().prop_map(Op::Dir),
            3 => (path(), any::<u8>()).prop_map(|(p, c)| Op::File(p, c)),
            2 => (path(), 0..TARGETS.len()).prop_map(|(p, t)| Op::Symlink(p, TARGETS[t])),
            1 => (path(), path()).prop_map(|(p, t)| Op::Hardlink(p, t)),
            2 => path().prop_map(Op::Whiteout),
            1 => path().prop_map(Op::Opaque),
        ]
    }

    pub(super) fn layers() -> impl Strategy<Value = Vec<Vec<Op>>> {
        proptest::collection::vec(proptest::collection::vec(op(), 1..8), 1..4)
    }

    /// How member names are written: `a/b`, `./a/b` or `/a/b` (umoci, KIWI) all name the
    /// same path.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Style {
        Plain,
        DotSlash,
        Absolute,
    }

    impl Style {
        fn name(self, p: &str) -> String {
            match self {
                Style::Plain => p.to_owned(),
                Style::DotSlash => format!("./{p}"),
                Style::Absolute => format!("/{p}"),
            }
        }
    }

    pub(super) fn style() -> impl Strategy<Value = Style> {
        prop_oneof![
            Just(Style::Plain),
            Just(Style::DotSlash),
            Just(Style::Absolute)
        ]
    }

    pub(super) fn tar_end() -> impl Strategy<Value = TarEnd> {
        prop_oneof![
            Just(TarEnd::Blocks),
            Just(TarEnd::NoBlocks),
            Just(TarEnd::NoPadding)
        ]
    }

    pub(super) fn to_entries(ops: &[Op]) -> Vec<E> {
        to_styled_entries(ops, Style::Plain)
    }

    pub(super) fn to_styled_entries(ops: &[Op], style: Style) -> Vec<E> {
        let mut entries = to_plain_entries(ops);
        for e in &mut entries {
            e.path = style.name(&e.path);
            if let Kind::Hardlink(t) = &mut e.kind {
                *t = style.name(t);
            }
        }
        entries
    }

    fn to_plain_entries(ops: &[Op]) -> Vec<E> {
        ops.iter()
            .map(|op| match op {
                Op::Dir(p) => dir(p),
                Op::File(p, c) => file(p, &[*c]),
                Op::Symlink(p, t) => symlink(p, t),
                Op::Hardlink(p, t) => hardlink(p, t),
                Op::Whiteout(p) => {
                    let (parent, name) = p
                        .rsplit_once('/')
                        .map(|(a, b)| (format!("{a}/"), b))
                        .unwrap_or((String::new(), p));
                    file(&format!("{parent}.wh.{name}"), b"")
                }
                Op::Opaque(p) => file(&format!("{p}/.wh..wh..opq"), b""),
            })
            .collect()
    }

    #[derive(Debug, Clone, PartialEq)]
    enum N {
        Dir,
        File(u8, u64),
        Link(&'static str),
    }

    #[derive(Debug, PartialEq)]
    pub(super) enum Outcome {
        Ok,
        Unsafe,
        Invalid,
    }

    #[derive(Default)]
    pub(super) struct Model {
        tree: BTreeMap<String, N>,
        next_ino: u64,
    }

    fn parent_of(p: &str) -> Option<&str> {
        p.rsplit_once('/').map(|(a, _)| a)
    }

    fn prefixes(p: &str) -> Vec<String> {
        let parts: Vec<&str> = p.split('/').collect();
        (1..=parts.len()).map(|i| parts[..i].join("/")).collect()
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    }

    fn split(p: &str) -> (&str, &str) {
        p.rsplit_once('/').unwrap_or(("", p))
    }

    /// How a directory path resolved.
    enum Resolved {
        /// Its real path (created if it was missing and creation was asked for).
        Dir(String),
        /// Missing, or a component is not a directory.
        Absent,
    }

    impl Model {
        fn remove_subtree(&mut self, p: &str) {
            self.tree
                .retain(|k, _| k != p && !k.starts_with(&format!("{p}/")));
        }

        /// Resolves directory `dir` with the root taken as `/`: symlinks followed, an
        /// absolute target from the root, `..` stopping at the root, missing components kept
        /// by name (a later `..` drops them) and created at the end if `create`.
        fn resolve(
            &mut self,
            dir: &str,
            create: bool,
            unpacked: &mut BTreeSet<String>,
        ) -> Result<Resolved, Outcome> {
            let mut pending: std::collections::VecDeque<String> =
                dir.split('/').map(str::to_owned).collect();
            let mut real: Vec<String> = Vec::new();
            let mut missing: Vec<String> = Vec::new();
            let mut links = 0;
            while let Some(c) = pending.pop_front() {
                match c.as_str() {
                    "" | "." => continue,
                    ".." => {
                        if missing.pop().is_none() {
                            real.pop();
                        }
                        continue;
                    }
                    _ => {}
                }
                if !missing.is_empty() {
                    missing.push(c);
                    continue;
                }
                let path = join(&real.join("/"), &c);
                match self.tree.get(&path) {
                    Some(N::Dir) => real.push(c),
                    Some(N::Link(t)) => {
                        links += 1;
                        if links > 40 {
                            return Err(Outcome::Invalid);
                        }
                        if t.starts_with('/') {
                            real.clear();
                        }
                        for part in t.split('/').rev() {
                            pending.push_front(part.to_owned());
                        }
                    }
                    Some(N::File(..)) if create => return Err(Outcome::Invalid),
                    Some(N::File(..)) => return Ok(Resolved::Absent),
                    None => missing.push(c),
                }
            }
            if !missing.is_empty() {
                if !create {
                    return Ok(Resolved::Absent);
                }
                for name in missing {
                    let path = join(&real.join("/"), &name);
                    self.tree.insert(path.clone(), N::Dir);
                    mark(unpacked, &path);
                    real.push(name);
                }
            }
            Ok(Resolved::Dir(real.join("/")))
        }

        /// The real path of entry `p`: its parent resolved (and created), its name kept.
        fn place(&mut self, p: &str, unpacked: &mut BTreeSet<String>) -> Result<String, Outcome> {
            let (parent, name) = split(p);
            match self.resolve(parent, true, unpacked)? {
                Resolved::Dir(dir) => Ok(join(&dir, name)),
                Resolved::Absent => Err(Outcome::Invalid),
            }
        }

        fn prune(&mut self, dir: &str, unpacked: &BTreeSet<String>) {
            let children: Vec<String> = self
                .tree
                .keys()
                .filter(|k| parent_of(k) == Some(dir) || (dir.is_empty() && !k.contains('/')))
                .cloned()
                .collect();
            for child in children {
                if !unpacked.contains(&child) {
                    self.remove_subtree(&child);
                } else if self.tree.get(&child) == Some(&N::Dir) {
                    self.prune(&child, unpacked);
                }
            }
        }

        pub(super) fn apply(&mut self, ops: &[Op]) -> Outcome {
            let mut unpacked = BTreeSet::new();
            for op in ops {
                if let Err(outcome) = self.op(op, &mut unpacked) {
                    return outcome;
                }
            }
            Outcome::Ok
        }

        fn op(&mut self, op: &Op, unpacked: &mut BTreeSet<String>) -> Result<(), Outcome> {
            match op {
                Op::Dir(p) => {
                    let p = self.place(p, unpacked)?;
                    if self.tree.get(&p) != Some(&N::Dir) {
                        self.remove_subtree(&p);
                        self.tree.insert(p.clone(), N::Dir);
                    }
                    mark(unpacked, &p);
                }
                Op::File(p, _) | Op::Symlink(p, _) => {
                    let p = self.place(p, unpacked)?;
                    self.remove_subtree(&p);
                    let node = match op {
                        Op::Symlink(_, t) => N::Link(t),
                        Op::File(_, c) => {
                            self.next_ino += 1;
                            N::File(*c, self.next_ino)
                        }
                        _ => unreachable!(),
                    };
                    self.tree.insert(p.clone(), node);
                    mark(unpacked, &p);
                }
                Op::Hardlink(p, t) => {
                    let p = self.place(p, unpacked)?;
                    let (t_parent, t_name) = split(t);
                    let t = match self.resolve(t_parent, false, unpacked)? {
                        Resolved::Dir(dir) => join(&dir, t_name),
                        Resolved::Absent => return Err(Outcome::Invalid),
                    };
                    let target = match self.tree.get(&t) {
                        None | Some(N::Dir) => return Err(Outcome::Invalid),
                        Some(n) => n.clone(),
                    };
                    if self.tree.get(&p) == Some(&target) && matches!(target, N::File(..)) {
                        return Ok(());
                    }
                    if t.starts_with(&format!("{p}/")) {
                        return Err(Outcome::Invalid); // the target goes with the replaced directory
                    }
                    self.remove_subtree(&p);
                    self.tree.insert(p.clone(), target);
                    mark(unpacked, &p);
                }
                Op::Whiteout(p) => {
                    let (parent, name) = split(p);
                    let p = match self.resolve(parent, false, unpacked)? {
                        Resolved::Dir(dir) => join(&dir, name),
                        Resolved::Absent => return Ok(()),
                    };
                    if unpacked.contains(&p) {
                        if self.tree.get(&p) == Some(&N::Dir) {
                            self.prune(&p, unpacked);
                        }
                    } else {
                        self.remove_subtree(&p);
                    }
                }
                Op::Opaque(p) => {
                    let Resolved::Dir(p) = self.resolve(p, true, unpacked)? else {
                        return Err(Outcome::Invalid);
                    };
                    self.prune(&p, unpacked);
                    mark(unpacked, &p);
                }
            }
            Ok(())
        }

        pub(super) fn describe(&self) -> BTreeMap<String, String> {
            let mut first_path: BTreeMap<u64, String> = BTreeMap::new();
            let mut out = BTreeMap::new();
            for (p, n) in &self.tree {
                let desc = match n {
                    N::Dir => "dir".to_string(),
                    N::Link(t) => format!("symlink {t}"),
                    N::File(c, ino) => {
                        let first = first_path.entry(*ino).or_insert_with(|| p.clone()).clone();
                        let link = if first != *p {
                            format!(" =link({first})")
                        } else {
                            String::new()
                        };
                        format!("file {}{link}", &Digest::of_bytes(&[*c]).hex()[..12])
                    }
                };
                out.insert(p.clone(), desc);
            }
            out
        }
    }

    fn mark(unpacked: &mut BTreeSet<String>, p: &str) {
        for prefix in prefixes(p) {
            unpacked.insert(prefix);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Random layers of files, directories, symlinks (dangling or escaping), hard links,
    /// whiteouts and opaque markers, with names written plain, `./`-prefixed or absolute,
    /// ending with or without end-of-archive blocks and padding: the applier agrees with
    /// the model on the outcome of every layer and on the resulting tree, and never touches
    /// anything outside the root.
    #[test]
    fn merged_application_matches_the_model(
        layers in model::layers(),
        style in model::style(),
        end in model::tar_end(),
    ) {
        let sb = Sandbox::new();
        let mut m = model::Model::default();
        for ops in &layers {
            let expected = m.apply(ops);
            let got = sb.apply_ending(&model::to_styled_entries(ops, style), end);
            let got = match got {
                Ok(_) => model::Outcome::Ok,
                Err(StoreError::UnsafeEntry { .. }) => model::Outcome::Unsafe,
                Err(StoreError::InvalidLayer { .. }) => model::Outcome::Invalid,
                Err(other) => panic!("unexpected error {other} for {ops:?}"),
            };
            proptest::prop_assert_eq!(&got, &expected, "layer {:?}", ops);
            sb.assert_confined();
            if got != model::Outcome::Ok {
                break;
            }
            proptest::prop_assert_eq!(snapshot(&sb.root), m.describe(), "after layer {:?}", ops);
        }
    }
}

mod mutated {
    //! Valid layers with mutated header fields (names, link names, types; checksums fixed
    //! up so the tar parser accepts them): the applier never panics and never writes
    //! outside the root, whatever it makes of them.

    use super::*;
    use proptest::prelude::*;

    /// Offsets of the header blocks in a stream written by `testutil::tar`.
    fn header_offsets(data: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut pos = 0;
        while pos + 512 <= data.len() {
            let block = &data[pos..pos + 512];
            if block.iter().all(|b| *b == 0) {
                break;
            }
            offsets.push(pos);
            let size_field = std::str::from_utf8(&block[124..136]).unwrap_or("0");
            let size =
                u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                    .unwrap_or(0);
            pos += 512 + (size as usize).div_ceil(512) * 512;
        }
        offsets
    }

    fn fix_checksum(header: &mut [u8]) {
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(field.as_bytes());
    }

    const BYTES: &[u8] = b"/.a.wh.\0";

    #[derive(Debug, Clone)]
    struct Mutation {
        header: usize,
        offset: usize,
        byte: u8,
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        (
            0..16usize,
            prop_oneof![0..100usize, Just(156usize), 157..257usize],
            prop_oneof![
                proptest::sample::select(BYTES),
                proptest::sample::select(&b"0123567"[..])
            ],
        )
            .prop_map(|(header, offset, byte)| Mutation {
                header,
                offset,
                byte,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_headers_stay_confined(
            layers in model::layers(),
            mutations in proptest::collection::vec(mutation(), 1..6),
        ) {
            let sb = Sandbox::new();
            for ops in &layers {
                let mut data = tar(&model::to_entries(ops));
                let offsets = header_offsets(&data);
                for m in &mutations {
                    let Some(&start) = offsets.get(m.header % offsets.len().max(1)) else { continue };
                    data[start + m.offset] = m.byte;
                    fix_checksum(&mut data[start..start + 512]);
                }
                let result = apply_layer(&mut &data[..], Compression::None, Target::Merged(sb.fd.as_fd()), &opts());
                sb.assert_confined();
                if result.is_err() {
                    break;
                }
            }
            // A `.wh.` name is a whiteout when it is an entry's last component: only a
            // directory made for a path through it may carry one.
            for path in crate::testutil::walk(&sb.root) {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                prop_assert!(!name.starts_with(".wh.") || is_dir, "whiteout left in the result: {}", path.display());
            }
        }
    }
}

mod truncated {
    //! A layer stream cut at any byte: the applier either refuses it, or the cut was where
    //! Go's tar reader (and so containerd) ends an archive cleanly, and the result is that
    //! of the entries before the cut.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok,
        Unsafe,
        Invalid,
    }

    fn outcome(result: &Result<Applied, StoreError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(StoreError::UnsafeEntry { .. }) => Outcome::Unsafe,
            Err(StoreError::InvalidLayer { .. }) => Outcome::Invalid,
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    /// Per entry: where its header starts and where its data ends (no PAX headers: the
    /// model's entries have no xattrs).
    fn layout(entries: &[E]) -> Vec<(usize, usize)> {
        let mut pos = 0;
        entries
            .iter()
            .map(|e| {
                let size = match &e.kind {
                    Kind::File(d) => d.len(),
                    _ => 0,
                };
                let header = pos;
                let data_end = pos + 512 + size;
                pos = data_end.next_multiple_of(512);
                (header, data_end)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn a_cut_layer_is_refused_or_holds_the_entries_before_the_cut(
            layers in model::layers(),
            style in model::style(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut entries = model::to_styled_entries(&layers[0], style);
            // Files of up to three blocks, so that cuts fall inside data too.
            for e in &mut entries {
                if let Kind::File(d) = &mut e.kind
                    && let Some(&c) = d.first()
                {
                    *d = vec![c; 1 + usize::from(c) * 6];
                }
            }
            let full = tar_ending(&entries, TarEnd::NoBlocks);
            let cut = cut.index(full.len() + 1);
            let spans = layout(&entries);
            prop_assert_eq!(full.len(), spans.last().map_or(0, |s| s.1.next_multiple_of(512)));
            // How many entries a clean end at `cut` leaves, if it is one.
            let complete = if cut == full.len() {
                Some(entries.len())
            } else {
                spans.iter().enumerate().find_map(|(i, &(header, data_end))| {
                    if cut == header {
                        Some(i)
                    } else if cut >= data_end && cut < data_end.next_multiple_of(512) {
                        Some(i + 1)
                    } else {
                        None
                    }
                })
            };
            let sb = Sandbox::new();
            let got = apply_layer(&mut &full[..cut], Compression::None, Target::Merged(sb.fd.as_fd()), &opts());
            sb.assert_confined();
            match complete {
                Some(n) => {
                    let reference = Sandbox::new();
                    let expected = reference.apply(&entries[..n]);
                    prop_assert_eq!(outcome(&got), outcome(&expected), "cut at {} of {}", cut, full.len());
                    if let (Ok(got), Ok(_)) = (&got, &expected) {
                        prop_assert_eq!(got.entries, n as u64);
                        prop_assert_eq!(&got.digests.diff_id, &Digest::of_bytes(&full[..cut]));
                        prop_assert_eq!(snapshot(&sb.root), snapshot(&reference.root));
                    }
                }
                None => {
                    prop_assert!(got.is_err(), "cut at {} of {} accepted", cut, full.len());
                    // The entry the cut falls in.
                    let i = spans.iter().rposition(|&(header, _)| header < cut).unwrap_or(0);
                    let whole = Sandbox::new().apply(&entries[..=i]);
                    if whole.is_ok() {
                        prop_assert_eq!(outcome(&got), Outcome::Invalid, "cut at {} of {}", cut, full.len());
                    }
                }
            }
        }
    }
}
