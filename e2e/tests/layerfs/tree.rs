//! The table-driven tree test: for the e2e test images and hand-made layers, the root
//! filesystem each driver produces equals the tree the OCI rules give.

use e2e::images::{
    self, Compression as TestCompression, ImageFormat, LayerBuilder, TarEnd, TestLayer,
    multi_layer, one_layer,
};
use e2e::tree::{CompareOptions, ensure_same, expected_tree, read_tree};
use layerfs::{IdShift, RootfsOptions, StoreOptions};

use crate::support::{DRIVERS, Driver, Fixture};

struct Case {
    name: &'static str,
    layers: Vec<TestLayer>,
    shift: bool,
}

fn hand_made(name: &'static str, builders: &[LayerBuilder]) -> anyhow::Result<Case> {
    let layers = builders
        .iter()
        .map(|b| b.finish(TestCompression::Gzip))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Case {
        name,
        layers,
        shift: false,
    })
}

fn hardlinks_across_layers() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("a", 0o750)
        .owner(3, 4)
        .file("a/t1", "target one\n", 0o640)
        .owner(3, 4)
        .mtime(1_200_000_000)
        .dir("b", 0o755)
        .file("b/t2", "target two\n", 0o600)
        .owner(5, 5);
    let mut l2 = LayerBuilder::new();
    // No directory entries: `x` is new, `a` only exists below.
    l2.hardlink("x/h1", "a/t1")
        .hardlink("a/h2", "a/t1")
        .hardlink("deep", "b/t2");
    let mut l3 = LayerBuilder::new();
    l3.dir("b", 0o755).hardlink("b/h3", "a/h2");
    vec![l1, l2, l3]
}

fn special_files() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("dev", 0o755)
        .chardev("dev/null", 1, 3, 0o666)
        .chardev("dev/tty", 5, 0, 0o620)
        .owner(0, 5)
        .blockdev("dev/loop7", 7, 7, 0o660)
        .owner(0, 6)
        .fifo("dev/initctl", 0o600)
        .dir("tmp", 0o1777)
        .dir("shared", 0o2775)
        .owner(0, 50)
        .file("sbin/su", "#!/bin/sh\n", 0o4755)
        .file("nothing", "", 0o000)
        .symlink("dev/stdin", "/proc/self/fd/0");
    let mut l2 = LayerBuilder::new();
    l2.dir("dev", 0o755)
        .whiteout("dev/tty")
        .chardev("dev/zero", 1, 5, 0o666);
    vec![l1, l2]
}

fn opaque_root() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.file("a", "a\n", 0o644)
        .dir("d", 0o755)
        .file("d/x", "x\n", 0o644)
        .dir("e", 0o700)
        .file("e/y", "y\n", 0o644);
    let mut l2 = LayerBuilder::new();
    l2.opaque("")
        .file("new", "new\n", 0o644)
        .dir("d", 0o711)
        .file("d/z", "z\n", 0o644);
    vec![l1, l2]
}

fn whiteout_then_recreate() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("x", 0o755)
        .file("x/old", "old\n", 0o644)
        .dir("x/sub", 0o755)
        .file("x/sub/old", "old\n", 0o644)
        .file("y", "file y\n", 0o644);
    let mut l2 = LayerBuilder::new();
    l2.whiteout("x")
        .dir("x", 0o700)
        .file("x/new", "new\n", 0o644)
        .whiteout("y")
        .dir("y", 0o755)
        .file("y/inside", "in\n", 0o644);
    vec![l1, l2]
}

fn type_changes() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.symlink("s", "target")
        .dir("d", 0o755)
        .file("d/c", "c\n", 0o644)
        .dir("d/sub", 0o755)
        .file("f", "f\n", 0o644)
        .dir("g", 0o755)
        .file("g/keep", "keep\n", 0o644);
    let mut l2 = LayerBuilder::new();
    l2.dir("s", 0o755)
        .file("s/in", "in\n", 0o644)
        .file("d", "now a file\n", 0o644)
        .symlink("f", "/elsewhere")
        .dir("g", 0o700)
        .owner(9, 9);
    let mut l3 = LayerBuilder::new();
    l3.dir("d", 0o755).file("d/again", "again\n", 0o644);
    vec![l1, l2, l3]
}

fn implicit_parents_keep_lower_metadata() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("p", 0o711)
        .owner(7, 8)
        .mtime(1_000_000_000)
        .dir("p/q", 0o700)
        .owner(7, 8)
        .xattr("user.lower", "dir xattr");
    let mut l2 = LayerBuilder::new();
    l2.file("p/q/r", "r\n", 0o644)
        .file("p/new/deeper/s", "s\n", 0o644)
        .whiteout("p/q/never");
    vec![l1, l2]
}

/// As umoci and KIWI write layers: a root entry `/`, names from the root (whiteouts, opaque
/// markers and hard link targets too); the top layer as umoci 0.4.7's `insert` ends it,
/// without end-of-archive blocks or padding after its last entry.
fn umoci_style() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("/", 0o755)
        .dir("/etc", 0o755)
        .file("/etc/motd", "hi\n", 0o644)
        .dir("/bin", 0o755)
        .file("/bin/tool", "#!/bin/sh\n", 0o755)
        .dir("/d", 0o755)
        .file("/d/old", "old\n", 0o644);
    let mut l2 = LayerBuilder::new();
    l2.dir("/", 0o751)
        .whiteout("/etc/motd")
        .opaque("/d")
        .file("/d/new", "new\n", 0o644)
        .hardlink("/bin/tool.link", "/bin/tool")
        .file("/last", "x".repeat(700), 0o644)
        .end(TarEnd::Unterminated);
    vec![l1, l2]
}

/// Symlinks in parent paths, as base images have them (`var/run -> /run`, `lib -> usr/lib`)
/// and as some lead out of the root: followed as if the root were `/`, by entries, hard
/// link targets, whiteouts and opaque markers; a dangling one makes its target.
fn symlinked_parents() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("run", 0o755)
        .dir("run/sub", 0o755)
        .file("run/sub/old", "old\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/old.so", "old\n", 0o644)
        .symlink("lib", "usr/lib")
        .dir("var", 0o755)
        .symlink("var/run", "/run")
        .symlink("var/uprun", "../../../../run")
        .symlink("var/lock", "../run/lock")
        .symlink("escape", "/");
    let mut l2 = LayerBuilder::new();
    l2.file("var/run/x", "x\n", 0o600)
        .owner(5, 5)
        .dir("var/uprun/made", 0o700)
        .file("lib/new.so", "new\n", 0o755)
        .file("var/lock/z", "z\n", 0o644)
        .hardlink("escape/h", "/var/run/x")
        .file("escape/tmp/t", "t\n", 0o644);
    let mut l3 = LayerBuilder::new();
    l3.whiteout("lib/old.so")
        .opaque("var/uprun/sub")
        .file("var/run/sub/fresh", "fresh\n", 0o644);
    vec![l1, l2, l3]
}

/// AUFS-era Docker bookkeeping: `.wh..wh.<x>` entries (whiteouts of `.wh.<x>`, as containerd
/// reads them) and files in `.wh..wh.plnk/` that other entries hard-link.
fn aufs_bookkeeping() -> Vec<LayerBuilder> {
    let mut l1 = LayerBuilder::new();
    l1.dir("usr", 0o755).dir("usr/bin", 0o755);
    let mut l2 = LayerBuilder::new();
    l2.dir(".wh..wh.plnk", 0o700)
        .file(".wh..wh.plnk/1234.5678", "shared\n", 0o755)
        .hardlink("usr/bin/tool", ".wh..wh.plnk/1234.5678")
        .file(".wh..wh.aufs", "", 0o600)
        .dir(".wh..wh.orph", 0o700);
    vec![l1, l2]
}

fn cases() -> anyhow::Result<Vec<Case>> {
    let image = |format, shift| -> anyhow::Result<Case> {
        let img = multi_layer(format)?;
        Ok(Case {
            name: if shift {
                "multi-layer-uid-shift"
            } else {
                "multi-layer"
            },
            layers: img.layers,
            shift,
        })
    };
    let mut cases = vec![
        Case {
            name: "one-layer-zstd",
            layers: one_layer(ImageFormat::Oci(TestCompression::Zstd))?.layers,
            shift: false,
        },
        image(ImageFormat::Oci(TestCompression::Gzip), false)?,
        image(ImageFormat::Oci(TestCompression::Zstd), false)?,
        image(ImageFormat::Oci(TestCompression::None), false)?,
        image(ImageFormat::Docker, false)?,
        image(ImageFormat::Oci(TestCompression::Gzip), true)?,
        hand_made("hardlinks-across-layers", &hardlinks_across_layers())?,
        hand_made("special-files", &special_files())?,
        hand_made("opaque-root", &opaque_root())?,
        hand_made("whiteout-then-recreate", &whiteout_then_recreate())?,
        hand_made("type-changes", &type_changes())?,
        hand_made(
            "implicit-parents-keep-lower-metadata",
            &implicit_parents_keep_lower_metadata(),
        )?,
        hand_made("umoci-style", &umoci_style())?,
        hand_made("symlinked-parents", &symlinked_parents())?,
        hand_made("aufs-bookkeeping", &aufs_bookkeeping())?,
    ];
    let mut shifted = hand_made("special-files-uid-shift", &special_files())?;
    shifted.shift = true;
    cases.push(shifted);
    Ok(cases)
}

fn run_case(driver: Driver, case: &Case) -> anyhow::Result<()> {
    let opts = StoreOptions {
        id_shift: case.shift.then_some(IdShift::PROXMOX_DEFAULT),
        ..StoreOptions::default()
    };
    let fx = Fixture::with_options(driver, opts)?;
    let store = fx.store();
    let infos = fx.apply_image(&case.layers)?;
    let top = infos.last().map(|i| i.chain_id.clone());
    let target = fx.target(case.name);
    store.create_rootfs("tree", top.as_ref(), &target, &RootfsOptions::default())?;

    let entries: Vec<&[images::TarEntry]> =
        case.layers.iter().map(|l| l.entries.as_slice()).collect();
    let expected = expected_tree(&entries)?;
    let xattrs = store.xattrs_supported();
    match driver {
        // ext4 under /var/tmp keeps user xattrs: the overlay store must report and keep them.
        Driver::Overlay => anyhow::ensure!(xattrs, "overlay store reports no xattr support"),
        Driver::Zfs => {
            // Only where the store's probe said so may xattrs be missing.
            if !xattrs {
                let with = read_tree(&target, true)?;
                anyhow::ensure!(
                    with.nodes.values().all(|n| n.xattrs.is_empty()),
                    "the zfs store said it keeps no xattrs, yet some are there"
                );
            }
        }
    }
    let actual = read_tree(&target, xattrs)?;
    let options = CompareOptions {
        xattrs,
        id_shift: if case.shift { 100_000 } else { 0 },
        ..CompareOptions::default()
    };
    ensure_same(&expected, &actual, &options)?;

    // The root directory belongs to the container's root.
    let root_uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&target)?);
    anyhow::ensure!(
        root_uid == if case.shift { 100_000 } else { 0 },
        "root directory owned by {root_uid}"
    );
    store.remove_rootfs("tree")?;
    Ok(())
}

#[test]
fn every_case_gives_the_expected_tree_on_both_drivers() {
    let cases = cases().unwrap();
    let mut failures = Vec::new();
    for driver in DRIVERS {
        for case in &cases {
            if let Err(e) = run_case(driver, case) {
                failures.push(format!("{driver:?} {}: {e:#}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
