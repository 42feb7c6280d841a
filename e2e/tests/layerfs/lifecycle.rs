//! Store behaviour beyond tree contents: shared layers stored once, one application per
//! chain id, digest and media type checks, root filesystems, removal, usage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::images::{Compression as TestCompression, LayerBuilder, TestLayer};
use layerfs::{
    Compression, Digest, DigestKind, RemoveOutcome, RootfsOptions, StoreError, StoreOptions,
};

use crate::support::{Counting, DRIVERS, Driver, Fixture, request, zfs_names};

fn layer(build: impl FnOnce(&mut LayerBuilder)) -> TestLayer {
    let mut b = LayerBuilder::new();
    build(&mut b);
    b.finish(TestCompression::Gzip).unwrap()
}

fn base() -> TestLayer {
    layer(|b| {
        b.dir("etc", 0o755)
            .file("etc/os-release", "ID=test\n", 0o644)
            .dir("usr/lib", 0o755)
            .file("usr/lib/libbig.so", vec![42u8; 300_000], 0o755);
    })
}

fn for_each_driver(test: impl Fn(Driver) -> anyhow::Result<()>) {
    let failures: Vec<String> = DRIVERS
        .into_iter()
        .filter_map(|d| test(d).err().map(|e| format!("{d:?}: {e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn images_sharing_base_layers_store_them_once() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let base = base();
        let a = layer(|b| {
            b.file("app-a", "a\n", 0o755);
        });
        let b = layer(|b| {
            b.file("app-b", "b\n", 0o755);
        });
        let image_a = fx.apply_image(&[base.clone(), a])?;
        // The shared base is not read again: a reader that counts proves it.
        let count = Arc::new(AtomicU64::new(0));
        let req = request(&base, None)?;
        let again = fx.store().apply_layer(
            &req,
            &mut Counting {
                inner: base.blob.open()?,
                count: count.clone(),
            },
        )?;
        anyhow::ensure!(count.load(Ordering::SeqCst) == 0, "existing layer was read");
        anyhow::ensure!(again == image_a[0], "{again:?} != {:?}", image_a[0]);
        let image_b = fx.apply_image(&[base.clone(), b])?;
        anyhow::ensure!(image_a[0] == image_b[0]);
        anyhow::ensure!(image_b[1].parent.as_ref() == Some(&image_a[0].chain_id));

        let stored = fx.stored_layers()?;
        anyhow::ensure!(stored.len() == 3, "stored layers: {stored:?}");
        let base_hex = image_a[0].chain_id.hex().to_owned();
        anyhow::ensure!(stored.iter().filter(|n| **n == base_hex).count() == 1);
        if let Some(dataset) = fx.zfs_dataset() {
            // `zfs list` shows the base once, and both upper layers as clones of it.
            let names = zfs_names(&format!("{dataset}/layers"))?;
            let base_ds = format!("{dataset}/layers/{base_hex}");
            anyhow::ensure!(
                names.iter().filter(|n| **n == base_ds).count() == 1,
                "{names:?}"
            );
            anyhow::ensure!(names.len() == 4, "{names:?}"); // parent + 3 layers
            for upper in [&image_a[1], &image_b[1]] {
                let origin = std::process::Command::new("zfs")
                    .args(["get", "-H", "-o", "value", "origin"])
                    .arg(format!("{dataset}/layers/{}", upper.chain_id.hex()))
                    .output()?;
                let origin = String::from_utf8(origin.stdout)?;
                anyhow::ensure!(
                    origin.trim() == format!("{base_ds}@layer"),
                    "origin {origin}"
                );
            }
        }
        let mut listed: Vec<Digest> = fx
            .store()
            .layers()?
            .into_iter()
            .map(|l| l.chain_id)
            .collect();
        listed.sort();
        let mut want = vec![
            image_a[0].chain_id.clone(),
            image_a[1].chain_id.clone(),
            image_b[1].chain_id.clone(),
        ];
        want.sort();
        anyhow::ensure!(listed == want);
        Ok(())
    });
}

#[test]
fn concurrent_requests_for_one_layer_apply_it_once() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let base = base();
        let req = request(&base, None)?;
        let count = Arc::new(AtomicU64::new(0));
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        let mut reader = Counting {
                            inner: base.blob.open().unwrap(),
                            count: count.clone(),
                        };
                        fx.store().apply_layer(&req, &mut reader)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = results[0]
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clone();
        for r in &results {
            anyhow::ensure!(r.as_ref().ok() == Some(&first), "{r:?}");
        }
        let read = count.load(Ordering::SeqCst);
        anyhow::ensure!(
            read == base.size,
            "read {read} bytes for one {}-byte blob",
            base.size
        );
        anyhow::ensure!(fx.stored_layers()?.len() == 1);
        Ok(())
    });
}

#[test]
fn digest_and_media_type_mismatches_are_rejected_and_not_published() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let store = fx.store();
        let base = base();
        let good = request(&base, None)?;

        let mut wrong_diff = good.clone();
        wrong_diff.diff_id = Digest::of_bytes(b"something else");
        wrong_diff.chain_id = wrong_diff.diff_id.clone();
        match store.apply_layer(&wrong_diff, &mut base.blob.open()?) {
            Err(StoreError::DigestMismatch {
                which: DigestKind::DiffId,
                expected,
                actual,
            }) => {
                anyhow::ensure!(expected == wrong_diff.diff_id && actual == good.diff_id);
            }
            other => anyhow::bail!("wrong diff_id: {other:?}"),
        }
        anyhow::ensure!(store.layer(&wrong_diff.chain_id)?.is_none());

        let mut wrong_blob = good.clone();
        wrong_blob.compressed_digest = Some(Digest::of_bytes(b"other blob"));
        match store.apply_layer(&wrong_blob, &mut base.blob.open()?) {
            Err(StoreError::DigestMismatch {
                which: DigestKind::Compressed,
                ..
            }) => {}
            other => anyhow::bail!("wrong compressed digest: {other:?}"),
        }
        anyhow::ensure!(store.layer(&good.chain_id)?.is_none());

        let mut declared_zstd = good.clone();
        declared_zstd.compression = Compression::Zstd;
        match store.apply_layer(&declared_zstd, &mut base.blob.open()?) {
            Err(StoreError::CompressionMismatch {
                declared: Compression::Zstd,
                ..
            }) => {}
            other => anyhow::bail!("gzip data declared zstd: {other:?}"),
        }
        anyhow::ensure!(matches!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+lz4"),
            Err(StoreError::UnsupportedMediaType(_))
        ));

        let mut truncated = base.blob.read()?;
        truncated.truncate(truncated.len() / 2);
        let err = store
            .apply_layer(&good, &mut truncated.as_slice())
            .unwrap_err();
        anyhow::ensure!(err.is_bad_content(), "truncated blob: {err}");

        anyhow::ensure!(
            fx.leftovers()?.is_empty(),
            "leftovers {:?}",
            fx.leftovers()?
        );
        anyhow::ensure!(store.layers()?.is_empty());
        // And the good one still applies.
        store.apply_layer(&good, &mut base.blob.open()?)?;
        Ok(())
    });
}

#[test]
fn root_filesystems_mount_isolate_and_go_away() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let store = fx.store();
        let infos = fx.apply_image(&[base()])?;
        let top = &infos[0].chain_id;
        let (t1, t2) = (fx.target("c1"), fx.target("c2"));
        store.create_rootfs("c1", Some(top), &t1, &RootfsOptions::default())?;
        store.create_rootfs("c2", Some(top), &t2, &RootfsOptions::default())?;
        // Idempotent for the same id and top; a different top is a conflict.
        store.create_rootfs("c1", Some(top), &t1, &RootfsOptions::default())?;
        let other = Digest::of_bytes(b"x");
        anyhow::ensure!(matches!(
            store.create_rootfs("c1", Some(&other), &t1, &RootfsOptions::default()),
            Err(StoreError::RootfsConflict { .. })
        ));
        anyhow::ensure!(matches!(
            store.create_rootfs(
                "c3",
                Some(&other),
                &fx.target("c3"),
                &RootfsOptions::default()
            ),
            Err(StoreError::LayerNotFound(_))
        ));
        anyhow::ensure!(
            store
                .create_rootfs(
                    "subvol-100-disk-0",
                    Some(top),
                    &fx.target("pve"),
                    &RootfsOptions::default()
                )
                .is_err()
        );

        // Writes stay in their container.
        std::fs::write(t1.join("etc/os-release"), "ID=changed\n")?;
        std::fs::write(t1.join("new-file"), "c1 only\n")?;
        std::fs::remove_file(t1.join("usr/lib/libbig.so"))?;
        anyhow::ensure!(std::fs::read_to_string(t2.join("etc/os-release"))? == "ID=test\n");
        anyhow::ensure!(!t2.join("new-file").exists());
        anyhow::ensure!(t2.join("usr/lib/libbig.so").exists());
        anyhow::ensure!(store.rootfs_ids()? == ["c1", "c2"]);

        // Layers in use stay.
        anyhow::ensure!(store.remove_layer(top)? == RemoveOutcome::InUse);

        store.remove_rootfs("c1")?;
        store.remove_rootfs("c1")?; // idempotent
        anyhow::ensure!(!t1.join("etc").exists(), "c1 is still mounted");
        anyhow::ensure!(store.rootfs_ids()? == ["c2"]);

        // A root filesystem survives reopening the store (a daemon restart).
        let mut fx = fx;
        fx.reopen()?;
        let store = fx.store();
        anyhow::ensure!(store.rootfs_ids()? == ["c2"]);
        anyhow::ensure!(t2.join("etc/os-release").exists());
        store.remove_rootfs("c2")?;
        anyhow::ensure!(store.remove_layer(top)? == RemoveOutcome::Removed);
        anyhow::ensure!(store.remove_layer(top)? == RemoveOutcome::NotFound);
        anyhow::ensure!(store.layers()?.is_empty());

        // An empty root filesystem (no image).
        let t4 = fx.target("empty");
        store.create_rootfs("empty", None, &t4, &RootfsOptions::default())?;
        std::fs::write(t4.join("x"), "x")?;
        store.remove_rootfs("empty")?;
        Ok(())
    });
}

#[test]
fn layers_with_children_or_in_flight_are_in_use() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let infos = fx.apply_image(&[
            base(),
            layer(|b| {
                b.file("top", "t", 0o644);
            }),
        ])?;
        let store = fx.store();
        anyhow::ensure!(store.remove_layer(&infos[0].chain_id)? == RemoveOutcome::InUse);
        anyhow::ensure!(store.remove_layer(&infos[1].chain_id)? == RemoveOutcome::Removed);
        anyhow::ensure!(store.remove_layer(&infos[0].chain_id)? == RemoveOutcome::Removed);
        Ok(())
    });
}

#[test]
fn usage_counts_layers_and_containers() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        let store = fx.store();
        let empty = store.usage()?;
        let infos = fx.apply_image(&[base()])?;
        anyhow::ensure!(infos[0].size >= 300_000, "layer size {}", infos[0].size);
        let with_layer = store.usage()?;
        anyhow::ensure!(
            with_layer.used_bytes >= empty.used_bytes + 300_000,
            "{empty:?} -> {with_layer:?}"
        );
        anyhow::ensure!(
            with_layer.used_inodes >= empty.used_inodes + 5,
            "{empty:?} -> {with_layer:?}"
        );
        anyhow::ensure!(with_layer.mountpoint.is_dir());

        let target = fx.target("u");
        store.create_rootfs(
            "u",
            Some(&infos[0].chain_id),
            &target,
            &RootfsOptions::default(),
        )?;
        for i in 0..20 {
            std::fs::write(target.join(format!("f{i}")), vec![1u8; 100_000])?;
        }
        // zfs accounts written data when its transaction group syncs, and zfs-fuse syncs
        // late on a loaded machine (20 s was seen to be too short with critest running).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = store.usage()?;
            if now.used_bytes >= with_layer.used_bytes + 1_500_000
                && now.used_inodes >= with_layer.used_inodes + 20
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "container writes not counted: {with_layer:?} -> {now:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        store.remove_rootfs("u")?;
        Ok(())
    });
}

#[test]
fn zfs_quota_limits_a_root_filesystem_and_overlay_refuses_one() {
    let fx = Fixture::new(Driver::Zfs).unwrap();
    let infos = fx.apply_image(&[base()]).unwrap();
    let target = fx.target("q");
    fx.store()
        .create_rootfs(
            "q",
            Some(&infos[0].chain_id),
            &target,
            &RootfsOptions {
                quota_bytes: Some(4 << 20),
                ..Default::default()
            },
        )
        .unwrap();
    let quota = std::process::Command::new("zfs")
        .args(["get", "-H", "-p", "-o", "value", "refquota"])
        .arg(format!("{}/rootfs/q", fx.zfs_dataset().unwrap()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&quota.stdout).trim(),
        (4u64 << 20).to_string()
    );
    // And it holds: writing 16 MiB fails with "disk quota exceeded".
    let mut file = std::fs::File::create(target.join("filler")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let failed = (0..16).find_map(|_| {
        std::io::Write::write_all(&mut file, &chunk)
            .and_then(|()| file.sync_data())
            .err()
    });
    let err = failed.expect("16 MiB written into a 4 MiB quota");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    drop(file);
    fx.store().remove_rootfs("q").unwrap();

    let fx = Fixture::new(Driver::Overlay).unwrap();
    let infos = fx.apply_image(&[base()]).unwrap();
    let err = fx
        .store()
        .create_rootfs(
            "q",
            Some(&infos[0].chain_id),
            &fx.target("q"),
            &RootfsOptions {
                quota_bytes: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Unsupported { .. }), "{err}");
}

#[test]
fn overlay_mounts_long_chains_with_both_mount_apis() {
    for legacy in [false, true] {
        let opts = StoreOptions {
            legacy_overlay_mount: legacy,
            ..StoreOptions::default()
        };
        let fx = Fixture::with_options(Driver::Overlay, opts).unwrap();
        // 120 layers: their paths alone are far beyond mount(2)'s one-page option limit.
        let layers: Vec<TestLayer> = (0..120)
            .map(|i| {
                layer(|b| {
                    b.file(&format!("f{i:03}"), format!("{i}\n"), 0o644);
                })
            })
            .collect();
        let infos = fx.apply_image(&layers).unwrap();
        let target = fx.target("long");
        fx.store()
            .create_rootfs(
                "long",
                Some(&infos.last().unwrap().chain_id),
                &target,
                &RootfsOptions::default(),
            )
            .unwrap();
        for i in [0, 59, 119] {
            assert_eq!(
                std::fs::read_to_string(target.join(format!("f{i:03}"))).unwrap(),
                format!("{i}\n")
            );
        }
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 120);
        // The mount was made the intended way: fsconfig with full layer paths, or mount(2)
        // with /proc/self/fd names because the full paths exceed a page.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.contains(&format!(" {} ", target.display())))
            .expect("the root filesystem is in mountinfo");
        let layers_dir = fx.work.path().join("store/layers");
        if legacy {
            assert!(line.contains("lowerdir=/proc/self/fd/"), "{line}");
        } else {
            assert!(line.contains(&layers_dir.display().to_string()), "{line}");
        }
        fx.store().remove_rootfs("long").unwrap();
    }
}

#[test]
fn overlay_applies_children_before_their_parents_complete() {
    let opts = StoreOptions {
        parent_wait: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let fx = Fixture::with_options(Driver::Overlay, opts).unwrap();
    let store = fx.store();
    assert!(store.parallel_apply());
    let parent = base();
    // Needs its parent: a hard link to a lower file, and a file in a directory it lacks.
    let child = layer(|b| {
        b.hardlink("lib-link", "usr/lib/libbig.so")
            .file("etc/extra", "x\n", 0o644);
    });
    let preq = request(&parent, None).unwrap();
    let creq = request(&child, Some(&preq.chain_id)).unwrap();
    std::thread::scope(|s| {
        let c = s.spawn(|| store.apply_layer(&creq, &mut child.blob.open().unwrap()));
        std::thread::sleep(Duration::from_millis(300));
        store
            .apply_layer(&preq, &mut parent.blob.open().unwrap())
            .unwrap();
        c.join().unwrap().unwrap();
    });
    let target = fx.target("p");
    store
        .create_rootfs(
            "p",
            Some(&creq.chain_id),
            &target,
            &RootfsOptions::default(),
        )
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("lib-link")).unwrap(),
        vec![42u8; 300_000]
    );
    assert_eq!(
        std::fs::read_to_string(target.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    store.remove_rootfs("p").unwrap();

    // A child whose parent never comes fails clearly once the wait is over.
    let orphan = layer(|b| {
        b.hardlink("x", "nowhere/y");
    });
    let missing = Digest::of_bytes(b"never applied");
    let oreq = request(&orphan, Some(&missing)).unwrap();
    let started = Instant::now();
    match store.apply_layer(&oreq, &mut orphan.blob.open().unwrap()) {
        Err(StoreError::ParentMissing { parent, .. }) => assert_eq!(parent, missing),
        other => panic!("expected ParentMissing, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    // A child that does not need its parent is published without it.
    let independent = layer(|b| {
        b.dir("own", 0o755).file("own/file", "mine\n", 0o644);
    });
    let ireq = request(&independent, Some(&missing)).unwrap();
    store
        .apply_layer(&ireq, &mut independent.blob.open().unwrap())
        .unwrap();
    // But no root filesystem can be made of it.
    assert!(matches!(
        store.create_rootfs("i", Some(&ireq.chain_id), &fx.target("i"), &RootfsOptions::default()),
        Err(StoreError::LayerNotFound(d)) if d == missing
    ));
}

#[test]
fn zfs_applies_children_only_on_complete_parents() {
    let fx = Fixture::new(Driver::Zfs).unwrap();
    assert!(!fx.store().parallel_apply());
    let child = layer(|b| {
        b.file("x", "x", 0o644);
    });
    let missing = Digest::of_bytes(b"never applied");
    let req = request(&child, Some(&missing)).unwrap();
    match fx
        .store()
        .apply_layer(&req, &mut child.blob.open().unwrap())
    {
        Err(StoreError::ParentMissing { parent, .. }) => assert_eq!(parent, missing),
        other => panic!("expected ParentMissing, got {other:?}"),
    }
    assert!(fx.leftovers().unwrap().is_empty());
}

#[test]
fn a_second_process_cannot_open_an_open_store() {
    for_each_driver(|driver| {
        let fx = Fixture::new(driver)?;
        match layerfs::open_store(&fx.cfg) {
            Err(StoreError::Locked { .. }) => Ok(()),
            Err(other) => anyhow::bail!("expected Locked, got {other}"),
            Ok(_) => anyhow::bail!("opened a store that is already open"),
        }
    });
}
