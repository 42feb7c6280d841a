//! Property test of the two layer forms: random layers applied onto one directory (the
//! zfs form) and applied as overlay layers, then mounted, give the same tree, the two
//! forms accept and reject the same layers, and neither writes outside its root, whatever
//! the symlinks say (some lead to a sentinel directory next to the roots, by absolute path
//! or by `..`). Some layers are written as umoci writes them
//! (a root entry `/`, absolute names, no end-of-archive blocks, no padding at the end).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use e2e::images::{Compression as TestCompression, LayerBuilder, TarEnd};
use e2e::tree::{CompareOptions, compare, read_tree};
use layerfs::{ApplyOptions, Compression, LowerLayers, StoreError, Target, apply_layer};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Dir(String, u32),
    File(String, u8, u32, u64),
    Symlink(String, &'static str),
    Hardlink(String, String),
    Whiteout(String),
    Opaque(String),
    CharDev(String),
    Xattr(String, u8),
}

/// Targets that dangle, escape, loop, or lead to directories inside the root. `@abs` and
/// `@rel` are replaced by the absolute path of the test's `outside` directory and by a
/// relative path that climbs up to it: both must resolve inside the root.
const TARGETS: [&str; 10] = [
    "nowhere",
    "/etc",
    "../../../../x",
    "a",
    "../b",
    ".",
    "c",
    "/",
    "@abs",
    "@rel",
];

/// Enough `..` to climb from any layer root to `/`.
const UP: &str = "../../../../../../../../../../../../../../../../../../../..";

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
        .prop_map(|v| v.join("/"))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), prop_oneof![Just(0o755u32), Just(0o700), Just(0o1777)]).prop_map(|(p, m)| Op::Dir(p, m)),
        3 => (path(), any::<u8>(), prop_oneof![Just(0o644u32), Just(0o4755), Just(0o600)], 0..3u64)
            .prop_map(|(p, c, m, u)| Op::File(p, c, m, u * 1000)),
        2 => (path(), 0..TARGETS.len()).prop_map(|(p, t)| Op::Symlink(p, TARGETS[t])),
        2 => (path(), path()).prop_map(|(p, t)| Op::Hardlink(p, t)),
        2 => path().prop_map(Op::Whiteout),
        1 => prop_oneof![path(), Just(String::new())].prop_map(Op::Opaque),
        1 => path().prop_map(Op::CharDev),
        1 => (path(), any::<u8>()).prop_map(|(p, v)| Op::Xattr(p, v)),
    ]
}

/// A layer's operations, and whether it is written as umoci writes layers.
type Layer = (Vec<Op>, bool);

fn layers() -> impl Strategy<Value = Vec<Layer>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(op(), 1..10),
            proptest::bool::weighted(0.3),
        ),
        1..5,
    )
}

fn build((ops, umoci): &Layer, outside: &Path) -> Vec<u8> {
    let abs = outside.display().to_string();
    let rel = format!("{UP}{abs}");
    let mut b = LayerBuilder::new();
    if *umoci {
        b.dir("/", 0o755);
    }
    for op in ops {
        match op {
            Op::Dir(p, m) => {
                b.dir(p, *m);
            }
            Op::File(p, c, m, u) => {
                b.file(p, vec![*c; usize::from(*c) % 7], *m).owner(*u, *u);
            }
            Op::Symlink(p, t) => {
                let t = match *t {
                    "@abs" => abs.as_str(),
                    "@rel" => rel.as_str(),
                    other => other,
                };
                b.symlink(p, t);
            }
            Op::Hardlink(p, t) => {
                b.hardlink(p, t);
            }
            Op::Whiteout(p) => {
                b.whiteout(p);
            }
            Op::Opaque(p) => {
                b.opaque(p);
            }
            Op::CharDev(p) => {
                b.chardev(p, 1, 3, 0o666);
            }
            Op::Xattr(p, v) => {
                b.file(p, "x", 0o644).xattr("user.prop", vec![*v]);
            }
        }
    }
    if *umoci {
        b.absolute_names().end(TarEnd::Unterminated);
    }
    b.finish(TestCompression::None)
        .unwrap()
        .blob
        .read()
        .unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unsafe,
    Invalid,
}

fn outcome(r: Result<layerfs::Applied, StoreError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(StoreError::UnsafeEntry { .. }) => Outcome::Unsafe,
        Err(StoreError::InvalidLayer { .. }) => Outcome::Invalid,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

struct Lowers(Vec<PathBuf>);

impl LowerLayers for Lowers {
    fn lower_dirs(&mut self) -> Result<Vec<OwnedFd>, StoreError> {
        Ok(self
            .0
            .iter()
            .rev()
            .map(|p| OwnedFd::from(std::fs::File::open(p).unwrap()))
            .collect())
    }
}

fn mount_lowers(lowers: &[PathBuf], empty: &Path, target: &Path) {
    let mut dirs: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    if dirs.len() < 2 {
        dirs.push(empty.display().to_string()); // a read-only overlay needs two lowers
    }
    let options = format!("lowerdir={}", dirs.join(":"));
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
}

/// Nothing changed in `outside`, and nothing but the layer directories appeared next to it.
fn confined(tmp: &Path, outside: &Path, layers: usize) -> Result<(), TestCaseError> {
    let mut names: Vec<String> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = ["empty", "merged", "mnt", "outside"]
        .into_iter()
        .map(String::from)
        .chain((0..layers).map(|i| format!("layer{i}")))
        .collect();
    expected.sort();
    prop_assert_eq!(names, expected);
    let inside: Vec<String> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    prop_assert_eq!(inside, ["sentinel"]);
    let sentinel = std::fs::symlink_metadata(outside.join("sentinel")).unwrap();
    prop_assert!(sentinel.is_file() && sentinel.nlink() == 1);
    prop_assert_eq!(std::fs::read(outside.join("sentinel")).unwrap(), b"keep");
    Ok(())
}

fn check(layers: &[Layer]) -> Result<(), TestCaseError> {
    let tmp = tempfile::Builder::new()
        .prefix("pvecri-layerfs-prop-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let merged = tmp.path().join("merged");
    let empty = tmp.path().join("empty");
    let target = tmp.path().join("mnt");
    let outside = tmp.path().join("outside");
    for d in [&merged, &empty, &target, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(outside.join("sentinel"), b"keep").unwrap();
    let merged_fd = OwnedFd::from(std::fs::File::open(&merged).unwrap());
    let opts = ApplyOptions::default();
    let mut layer_dirs: Vec<PathBuf> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let data = build(layer, &outside);
        let a = outcome(apply_layer(
            &mut data.as_slice(),
            Compression::None,
            Target::Merged(merged_fd.as_fd()),
            &opts,
        ));
        let dir = tmp.path().join(format!("layer{i}"));
        std::fs::create_dir(&dir).unwrap();
        let dir_fd = OwnedFd::from(std::fs::File::open(&dir).unwrap());
        let mut lowers = Lowers(layer_dirs.clone());
        let b = outcome(apply_layer(
            &mut data.as_slice(),
            Compression::None,
            Target::Overlay {
                dir: dir_fd.as_fd(),
                lowers: &mut lowers,
            },
            &opts,
        ));
        confined(tmp.path(), &outside, i + 1)?;
        prop_assert_eq!(
            &a,
            &b,
            "merged vs overlay outcome for layer {} {:?}",
            i,
            layer
        );
        if a != Outcome::Ok {
            return Ok(());
        }
        layer_dirs.push(dir);
    }
    mount_lowers(&layer_dirs, &empty, &target);
    let overlay_tree = read_tree(&target, true);
    let merged_tree = read_tree(&merged, true);
    nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let overlay_tree =
        overlay_tree.map_err(|e| TestCaseError::fail(format!("reading the overlay: {e:#}")))?;
    let merged_tree =
        merged_tree.map_err(|e| TestCaseError::fail(format!("reading the merged tree: {e:#}")))?;
    let options = CompareOptions {
        xattrs: true,
        ..CompareOptions::default()
    };
    // Overlay copies a lower file up to hard-link it, which splits it from other links it
    // had in its own layer: hard link groups may differ, contents may not.
    let diffs: Vec<String> = compare(&merged_tree, &overlay_tree, &options)
        .into_iter()
        .filter(|d| !d.starts_with("not hard-linked") && !d.starts_with("unexpected hard links"))
        .collect();
    prop_assert!(diffs.is_empty(), "{:?}\n{}", layers, diffs.join("\n"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merged_and_overlay_forms_agree(layers in layers()) {
        check(&layers)?;
    }
}
