//! `tree::read_tree` and `tree::expected_tree` agree on a real filesystem: the multi-layer
//! image applied by a reference applier (GNU tar per layer, with whiteouts and opaque
//! markers done by hand first, as the OCI spec orders them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::process::Command;

use e2e::images::{self, TarEntry};
use e2e::tree::{CompareOptions, ensure_same, expected_tree, normalize_path, read_tree};

fn apply_with_gnu_tar(root: &std::path::Path, index: usize, entries: &[TarEntry], tar: &[u8]) {
    for entry in entries {
        if entry.is_opaque_marker() {
            let dir = normalize_path(entry.path.trim_end_matches(e2e::images::OPAQUE_MARKER))
                .unwrap_or_default();
            for child in std::fs::read_dir(root.join(&dir)).into_iter().flatten() {
                let child = child.unwrap().path();
                if child.is_dir() && !child.is_symlink() {
                    std::fs::remove_dir_all(&child).unwrap();
                } else {
                    std::fs::remove_file(&child).unwrap();
                }
            }
        } else if let Some(target) = entry.whiteout_target() {
            let path = root.join(normalize_path(&target).unwrap());
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path).unwrap();
            } else if path.symlink_metadata().is_ok() {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    let tar_path = root.parent().unwrap().join(format!("layer-{index}.tar"));
    std::fs::write(&tar_path, tar).unwrap();
    let out = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--recursive-unlink",
            "--exclude=.wh.*",
            "-xpf",
        ])
        .arg(&tar_path)
        .arg("-C")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar failed on layer {index}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn multi_layer_applied_by_gnu_tar_matches_the_expected_tree() {
    let layers = [
        images::busybox_layer().unwrap(),
        images::multi_layer_adds(),
        images::multi_layer_changes(),
        images::multi_layer_recreates(),
    ];
    // On disk (not tmpfs) so that user xattrs work.
    let work = tempfile::Builder::new()
        .prefix("pvecri-tree-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = work.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    for (i, layer) in layers.iter().enumerate() {
        apply_with_gnu_tar(&root, i, layer.entries(), &layer.tar_bytes().unwrap());
    }
    let entries: Vec<&[TarEntry]> = layers.iter().map(|l| l.entries()).collect();
    let expected = expected_tree(&entries).unwrap();
    let actual = read_tree(&root, true).unwrap();
    ensure_same(
        &expected,
        &actual,
        &CompareOptions {
            xattrs: true,
            ..CompareOptions::default()
        },
    )
    .unwrap();
    // What was compared includes what an applier most easily gets wrong.
    assert!(
        actual.nodes.len() > 280,
        "only {} nodes",
        actual.nodes.len()
    );
    let xattr = actual.get("data/xattr.txt").unwrap();
    assert_eq!(
        xattr.xattrs.get("user.pvecri").map(Vec::as_slice),
        Some(&b"test"[..])
    );
    assert_eq!(
        actual.get("data/keep.txt").unwrap().mtime,
        Some(1_111_111_111)
    );
    assert_eq!(actual.get("usr/bin/suidprog").unwrap().mode, 0o4755);
    assert_eq!(actual.hardlink_groups().len(), 1);

    // And the comparison notices a change.
    std::fs::write(root.join("data/keep.txt"), "changed\n").unwrap();
    let changed = read_tree(&root, true).unwrap();
    let err = ensure_same(&expected, &changed, &CompareOptions::default()).unwrap_err();
    assert!(err.to_string().contains("data/keep.txt"), "{err}");
}
