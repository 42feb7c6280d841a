//! Malicious layers: each is rejected naming the entry, nothing appears outside the root,
//! and no layer is published.

use std::os::unix::fs::MetadataExt;

use e2e::images::{Compression as TestCompression, LayerBuilder};
use layerfs::StoreError;

use crate::support::{DRIVERS, Driver, Fixture, list_recursive, request};

/// Enough `..` to climb from any layer root to `/`.
const UP: &str = "../../../../../../../../../../../../../../../../../../../..";

fn run(driver: Driver) -> anyhow::Result<()> {
    let fx = Fixture::new(driver)?;
    let store = fx.store();
    let outside = fx.work.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::write(outside.join("sentinel"), "do not touch\n")?;
    let out = outside.to_str().unwrap().trim_start_matches('/').to_owned();

    // A benign base whose symlinks lead outside: fine to have, never to write through.
    let mut base = LayerBuilder::new();
    base.dir("etc", 0o755)
        .file("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
        .symlink("lowerlink", outside.to_str().unwrap())
        .symlink("lowerrel", &format!("{UP}/{out}"))
        .dir("d", 0o755);
    let base = base.finish(TestCompression::Gzip)?;
    let base_info = fx.apply_image(std::slice::from_ref(&base))?.remove(0);

    let case = |build: &dyn Fn(&mut LayerBuilder)| {
        let mut b = LayerBuilder::new();
        build(&mut b);
        b
    };
    let cases: Vec<(&str, String, LayerBuilder)> = vec![
        (
            "dotdot",
            "../pwned".into(),
            case(&|b| {
                b.file("../pwned", "x", 0o644);
            }),
        ),
        (
            "dotdot-inner",
            "d/../../pwned".into(),
            case(&|b| {
                b.file("d/../../pwned", "x", 0o644);
            }),
        ),
        (
            "dotdot-far",
            format!("{UP}/{out}/pwned"),
            case(&|b| {
                b.file(&format!("{UP}/{out}/pwned"), "x", 0o644);
            }),
        ),
        (
            "absolute-dotdot",
            format!("/{UP}/{out}/pwned"),
            case(&|b| {
                b.file(&format!("/{UP}/{out}/pwned"), "x", 0o644);
            }),
        ),
        (
            "absolute-lower-symlink",
            "/lowerlink/pwned".into(),
            case(&|b| {
                b.file("/lowerlink/pwned", "x", 0o644);
            }),
        ),
        (
            "lower-symlink",
            "lowerlink/pwned".into(),
            case(&|b| {
                b.file("lowerlink/pwned", "x", 0o644);
            }),
        ),
        (
            "lower-relative-symlink",
            "lowerrel/pwned".into(),
            case(&|b| {
                b.file("lowerrel/pwned", "x", 0o644);
            }),
        ),
        (
            "lower-symlink-dir",
            "lowerlink/newdir/".into(),
            case(&|b| {
                b.dir("lowerlink/newdir", 0o755);
            }),
        ),
        (
            "same-layer-symlink",
            "s/pwned".into(),
            case(&|b| {
                b.symlink("s", outside.to_str().unwrap())
                    .file("s/pwned", "x", 0o644);
            }),
        ),
        (
            "same-layer-relative-symlink",
            format!("r/{out}/pwned"),
            case(&|b| {
                b.symlink("r", UP)
                    .file(&format!("r/{out}/pwned"), "x", 0o644);
            }),
        ),
        (
            "symlink-chain",
            "c1/pwned".into(),
            case(&|b| {
                b.symlink("c2", "lowerlink")
                    .symlink("c1", "c2")
                    .file("c1/pwned", "x", 0o644);
            }),
        ),
        (
            "hardlink-dotdot",
            "h".into(),
            case(&|b| {
                b.hardlink("h", &format!("{UP}/{out}/sentinel"));
            }),
        ),
        (
            "hardlink-absolute-dotdot",
            "h".into(),
            case(&|b| {
                b.hardlink("h", &format!("/{UP}/{out}/sentinel"));
            }),
        ),
        (
            "hardlink-absolute-through-symlink",
            "/h".into(),
            case(&|b| {
                b.hardlink("/h", "/lowerlink/sentinel");
            }),
        ),
        (
            "hardlink-through-symlink",
            "h".into(),
            case(&|b| {
                b.hardlink("h", "lowerlink/sentinel");
            }),
        ),
        (
            "whiteout-dotdot",
            ".wh...".into(),
            case(&|b| {
                b.whiteout("..");
            }),
        ),
        (
            "whiteout-dotdot-inner",
            "d/.wh...".into(),
            case(&|b| {
                b.whiteout("d/..");
            }),
        ),
        (
            "whiteout-dot",
            ".wh..".into(),
            case(&|b| {
                b.whiteout(".");
            }),
        ),
        (
            "whiteout-through-symlink",
            "lowerlink/.wh.sentinel".into(),
            case(&|b| {
                b.whiteout("lowerlink/sentinel");
            }),
        ),
        (
            "opaque-through-symlink",
            "lowerlink/.wh..wh..opq".into(),
            case(&|b| {
                b.opaque("lowerlink");
            }),
        ),
    ];

    let mut failures = Vec::new();
    for (name, entry, builder) in cases {
        // A benign first entry, so the rejection comes mid-layer with work to discard.
        let mut layer = LayerBuilder::new();
        layer.file("innocent", "fine\n", 0o644);
        for e in builder.entries() {
            layer.entry(e.clone());
        }
        let layer = layer.finish(TestCompression::Gzip)?;
        let req = request(&layer, Some(&base_info.chain_id))?;
        let result = store.apply_layer(&req, &mut layer.blob.open()?);
        match result {
            Err(StoreError::UnsafeEntry { entry: got, .. }) if got == entry => {}
            other => failures.push(format!(
                "{name}: expected UnsafeEntry({entry}), got {other:?}"
            )),
        }
        if store.layer(&req.chain_id)?.is_some() {
            failures.push(format!("{name}: the layer was published"));
        }
        if !fx.leftovers()?.is_empty() {
            failures.push(format!("{name}: leftovers {:?}", fx.leftovers()?));
        }
        let seen = list_recursive(&outside)?;
        if seen != ["sentinel"] {
            failures.push(format!("{name}: outside holds {seen:?}"));
        }
        let sentinel = std::fs::metadata(outside.join("sentinel"))?;
        if sentinel.nlink() != 1
            || std::fs::read_to_string(outside.join("sentinel"))? != "do not touch\n"
        {
            failures.push(format!("{name}: the sentinel was linked or changed"));
        }
        if std::path::Path::new("/pwned").exists() {
            failures.push(format!("{name}: /pwned exists"));
        }
    }
    let anywhere: Vec<String> = list_recursive(fx.work.path())?
        .into_iter()
        .filter(|p| p.contains("pwned") || p.contains("newdir"))
        .collect();
    if !anywhere.is_empty() {
        failures.push(format!("files of rejected layers remain: {anywhere:?}"));
    }
    let layers = store.layers()?;
    if layers.len() != 1 || layers[0].chain_id != base_info.chain_id {
        failures.push(format!("published layers: {layers:?}"));
    }

    // Absolute names are read from the layer root, as containerd reads them: the host path
    // of `outside`, written absolute, lands inside the root, and an absolute hard link
    // target is the lower layer's file.
    let mut inside = LayerBuilder::new();
    inside
        .dir("/", 0o755)
        .file(&format!("/{out}/landed"), "inside\n", 0o644)
        .hardlink("/passwd.link", "/etc/passwd");
    let inside = inside.finish(TestCompression::Gzip)?;
    let req = request(&inside, Some(&base_info.chain_id))?;
    let info = store.apply_layer(&req, &mut inside.blob.open()?)?;
    let target = fx.target("absolute");
    store.create_rootfs(
        "absolute",
        Some(&info.chain_id),
        &target,
        &layerfs::RootfsOptions::default(),
    )?;
    if std::fs::read_to_string(target.join(&out).join("landed"))
        .ok()
        .as_deref()
        != Some("inside\n")
    {
        failures.push(format!("/{out}/landed is not inside the root"));
    }
    let link = std::fs::metadata(target.join("passwd.link"))?;
    if link.ino() != std::fs::metadata(target.join("etc/passwd"))?.ino() {
        failures.push("/passwd.link is not a link to /etc/passwd".into());
    }
    if list_recursive(&outside)? != ["sentinel"] {
        failures.push(format!("outside holds {:?}", list_recursive(&outside)?));
    }
    store.remove_rootfs("absolute")?;
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn malicious_layers_are_rejected_on_both_drivers() {
    let mut failures = Vec::new();
    for driver in DRIVERS {
        if let Err(e) = run(driver) {
            failures.push(format!("{driver:?}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
