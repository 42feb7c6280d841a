//! Root filesystems for containers in a user namespace: their files show the ID map asked
//! for, through idmapped lower layers (overlay on a file system that has idmapped mounts)
//! or a shifted copy (zfs-fuse, and overlay where idmapping is unavailable), while the
//! layers themselves, shared with every other container, keep their owners.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use e2e::images::{Compression as TestCompression, LayerBuilder};
use layerfs::idmap::{IdMap, IdRange};
use layerfs::{RootfsOptions, StoreError, StoreOptions};

use crate::support::{Driver, Fixture};

const MAP: IdMap = IdMap {
    uid: IdRange {
        host: 100_000,
        count: 65_536,
    },
    gid: IdRange {
        host: 200_000,
        count: 65_536,
    },
};

fn image() -> anyhow::Result<e2e::images::TestLayer> {
    let mut b = LayerBuilder::new();
    b.dir("bin", 0o755)
        .file("bin/tool", "#!/bin/sh\n", 0o755)
        .file("bin/su", "#!/bin/sh\n", 0o4755)
        .file("bin/wall", "#!/bin/sh\n", 0o2755)
        .owner(0, 42)
        .hardlink("bin/su-again", "bin/su")
        .symlink("bin/link", "tool")
        .dir("home/app", 0o750)
        .owner(1000, 1000)
        .file("home/app/notes", "mine\n", 0o640)
        .owner(1000, 1000)
        .file("odd", "owner outside the map\n", 0o644)
        .owner(70_000, 4343);
    b.finish(TestCompression::Gzip)
}

/// (uid, gid, permission bits) of `rel` in `root`, not following symlinks.
fn owner(root: &Path, rel: &str) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(root.join(rel)).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn check(driver: Driver, opts: StoreOptions, how: &str) -> anyhow::Result<()> {
    let fx = Fixture::with_options(driver, opts)?;
    let infos = fx.apply_image(&[image()?])?;
    let top = Some(&infos[0].chain_id);
    let mapped = fx.target("mapped");
    let idmapped = RootfsOptions {
        idmap: Some(MAP),
        ..Default::default()
    };
    fx.store()
        .create_rootfs("mapped", top, &mapped, &idmapped)?;
    for (rel, want) in [
        (".", (100_000, 200_000, 0o755)),
        ("bin/tool", (100_000, 200_000, 0o755)),
        ("bin/su", (100_000, 200_000, 0o4755)),
        ("bin/wall", (100_000, 200_042, 0o2755)),
        ("home/app", (101_000, 201_000, 0o750)),
        ("home/app/notes", (101_000, 201_000, 0o640)),
        // Owners the map does not hold show as the overflow ids, as an idmapped mount
        // shows them.
        ("odd", (65_534, 204_343, 0o644)),
    ] {
        anyhow::ensure!(
            owner(&mapped, rel) == want,
            "{how}: {rel}: {:?}",
            owner(&mapped, rel)
        );
    }
    anyhow::ensure!(
        std::fs::symlink_metadata(mapped.join("bin/link"))?.uid() == 100_000,
        "{how}: symlink"
    );
    anyhow::ensure!(std::fs::read_to_string(mapped.join("home/app/notes"))? == "mine\n");
    let ino = |rel: &str| std::fs::metadata(mapped.join(rel)).map(|m| m.ino());
    let one_inode = ino("bin/su")? == ino("bin/su-again")?;
    // The overlay's shifted copy copies each name of a hard link up on its own.
    anyhow::ensure!(
        one_inode == (how != "overlay, shifted copy"),
        "{how}: hard link kept: {one_inode}"
    );

    // The layer, and a rootfs without a map, keep the image's own owners.
    let plain = fx.target("plain");
    fx.store()
        .create_rootfs("plain", top, &plain, &RootfsOptions::default())?;
    anyhow::ensure!(owner(&plain, "bin/su") == (0, 0, 0o4755), "{how}: plain");
    anyhow::ensure!(
        owner(&plain, "home/app") == (1000, 1000, 0o750),
        "{how}: plain"
    );

    // How it was done: idmapped overlays copy nothing up; a shifted overlay copies all.
    if let layerfs::StoreConfig::Overlay { root } = &fx.cfg {
        let upper = root.join("rootfs/mapped/upper");
        let copied = std::fs::read_dir(&upper)?.count();
        let want_copied = how == "overlay, shifted copy";
        anyhow::ensure!(
            (copied > 0) == want_copied,
            "{how}: {copied} entries copied up"
        );
    }

    // The same id again is the same rootfs; another map for it is a conflict.
    fx.store()
        .create_rootfs("mapped", top, &mapped, &idmapped)?;
    let other = RootfsOptions {
        idmap: Some(IdMap {
            uid: IdRange {
                host: 300_000,
                count: 65_536,
            },
            ..MAP
        }),
        ..Default::default()
    };
    match fx.store().create_rootfs("mapped", top, &mapped, &other) {
        Err(StoreError::RootfsConflict { .. }) => {}
        other => anyhow::bail!("{how}: another map for the same rootfs: {other:?}"),
    }
    let empty = RootfsOptions {
        idmap: Some(IdMap {
            uid: IdRange {
                host: 300_000,
                count: 0,
            },
            ..MAP
        }),
        ..Default::default()
    };
    match fx
        .store()
        .create_rootfs("bad", top, &fx.target("bad"), &empty)
    {
        Err(StoreError::InvalidRequest(_)) => {}
        other => anyhow::bail!("{how}: an empty map: {other:?}"),
    }
    fx.store().remove_rootfs("mapped")?;
    fx.store().remove_rootfs("plain")?;
    anyhow::ensure!(fx.leftovers()?.is_empty(), "{how}: {:?}", fx.leftovers()?);
    Ok(())
}

#[test]
fn idmapped_root_filesystems_on_overlay() {
    check(
        Driver::Overlay,
        StoreOptions::default(),
        "overlay, idmapped",
    )
    .unwrap();
}

#[test]
fn shifted_root_filesystems_on_overlay() {
    let opts = StoreOptions {
        shift_instead_of_idmap: true,
        ..StoreOptions::default()
    };
    check(Driver::Overlay, opts, "overlay, shifted copy").unwrap();
}

#[test]
fn shifted_root_filesystems_on_zfs() {
    check(Driver::Zfs, StoreOptions::default(), "zfs, shifted clone").unwrap();
}

/// What an ID map costs at CreateContainer, on the `large` image (busybox + 4 x 80 MiB of
/// /usr: about 1300 entries, mostly large files): `create_rootfs` plain and with a map, per
/// store, median of 5.
/// Run it alone: `cargo nextest run -p e2e --test layerfs --run-ignored only rootfs_idmap_cost`
/// (under `flock /var/tmp/pvecri-bench.lock`).
#[test]
#[ignore = "a measurement, not a check"]
fn rootfs_idmap_cost() {
    let image = e2e::images::large_image().unwrap();
    let mut report = Vec::new();
    for (label, driver, opts) in [
        ("overlay", Driver::Overlay, StoreOptions::default()),
        (
            "overlay (shifted copy)",
            Driver::Overlay,
            StoreOptions {
                shift_instead_of_idmap: true,
                ..StoreOptions::default()
            },
        ),
        ("zfs (shifted clone)", Driver::Zfs, StoreOptions::default()),
    ] {
        let fx = Fixture::with_options(driver, opts).unwrap();
        let infos = fx.apply_image(&image.layers).unwrap();
        let top = infos.last().map(|i| &i.chain_id);
        let time = |name: &str, options: &RootfsOptions| {
            let mut runs: Vec<f64> = (0..5)
                .map(|i| {
                    let id = format!("{name}{i}");
                    let started = std::time::Instant::now();
                    fx.store()
                        .create_rootfs(&id, top, &fx.target(&id), options)
                        .unwrap();
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    fx.store().remove_rootfs(&id).unwrap();
                    ms
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            runs[2]
        };
        let plain = time("plain", &RootfsOptions::default());
        let mapped = time(
            "mapped",
            &RootfsOptions {
                idmap: Some(MAP),
                ..Default::default()
            },
        );
        report.push(format!(
            "{label:24} plain {plain:8.1} ms   with ID map {mapped:8.1} ms"
        ));
    }
    println!(
        "create_rootfs, large image, median of 5:\n{}",
        report.join("\n")
    );
}
