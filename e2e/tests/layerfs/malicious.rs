//! Malicious layers: names that climb above the root are rejected naming the entry, and no
//! layer is published; symlinks, absolute names and hard link targets that lead out of the
//! root resolve inside it, as containerd resolves them. Nothing appears outside the root.

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
            "hardlink-dotdot",
            "h".into(),
            case(&|b| {
                b.hardlink("h", &format!("{UP}/{out}/sentinel"));
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

    // Names, symlinks and hard link targets that lead out of the root resolve inside it,
    // as containerd resolves them (the root taken as `/`): absolute names, `..` at the start
    // of an absolute name, symlinks of a lower layer or of the same layer, absolute or
    // relative, chained. Nothing reaches the real `outside`.
    let abs = outside.to_str().unwrap();
    let mut l1 = LayerBuilder::new();
    l1.dir("/", 0o755)
        .file(&format!("/{out}/landed"), "inside\n", 0o644)
        .hardlink("/passwd.link", "/etc/passwd")
        .file(&format!("/{UP}/{out}/abs-dotdot"), "inside\n", 0o644)
        .file("/lowerlink/abs-lower", "inside\n", 0o644)
        .file("lowerlink/lower", "inside\n", 0o644)
        .file("lowerrel/lower-rel", "inside\n", 0o644)
        .dir("lowerlink/newdir", 0o755)
        .symlink("s", abs)
        .file("s/same", "inside\n", 0o644)
        .symlink("r", UP)
        .file(&format!("r/{out}/same-rel"), "inside\n", 0o644)
        .symlink("c2", "lowerlink")
        .symlink("c1", "c2")
        .file("c1/chain", "inside\n", 0o644)
        .file(&format!("{out}/sentinel"), "inside\n", 0o644)
        .hardlink("h", "lowerlink/sentinel")
        .hardlink("/h2", "/lowerrel/sentinel")
        .file(&format!("{out}/victim"), "inside\n", 0o644)
        .dir(&format!("{out}/sub"), 0o755)
        .file(&format!("{out}/sub/old"), "inside\n", 0o644);
    let l1 = l1.finish(TestCompression::Gzip)?;
    let mut l2 = LayerBuilder::new();
    l2.whiteout("lowerlink/victim").opaque("lowerrel/sub").file(
        "lowerrel/sub/new",
        "inside\n",
        0o644,
    );
    let l2 = l2.finish(TestCompression::Gzip)?;
    let req1 = request(&l1, Some(&base_info.chain_id))?;
    let info1 = store.apply_layer(&req1, &mut l1.blob.open()?)?;
    let req2 = request(&l2, Some(&info1.chain_id))?;
    let info2 = store.apply_layer(&req2, &mut l2.blob.open()?)?;
    let target = fx.target("inside");
    store.create_rootfs(
        "inside",
        Some(&info2.chain_id),
        &target,
        &layerfs::RootfsOptions::default(),
    )?;
    let landed = target.join(&out);
    for name in [
        "landed",
        "abs-dotdot",
        "abs-lower",
        "lower",
        "lower-rel",
        "same",
        "same-rel",
        "chain",
        "sentinel",
    ] {
        if std::fs::read_to_string(landed.join(name)).ok().as_deref() != Some("inside\n") {
            failures.push(format!("{name} did not land at /{out}/{name}"));
        }
    }
    if !landed.join("newdir").is_dir() {
        failures.push(format!("/{out}/newdir is not a directory"));
    }
    let sentinel_ino = std::fs::metadata(landed.join("sentinel"))?.ino();
    for link in ["h", "h2"] {
        if std::fs::metadata(target.join(link))?.ino() != sentinel_ino {
            failures.push(format!("/{link} is not a link to /{out}/sentinel"));
        }
    }
    if landed.join("victim").exists() {
        failures.push("the whiteout through lowerlink did not remove the victim".into());
    }
    if list_recursive(&landed.join("sub"))? != ["new"] {
        failures.push(format!(
            "the opaque directory through lowerrel holds {:?}",
            list_recursive(&landed.join("sub"))?
        ));
    }
    let link = std::fs::metadata(target.join("passwd.link"))?;
    if link.ino() != std::fs::metadata(target.join("etc/passwd"))?.ino() {
        failures.push("/passwd.link is not a link to /etc/passwd".into());
    }
    store.remove_rootfs("inside")?;
    if list_recursive(&outside)? != ["sentinel"] {
        failures.push(format!("outside holds {:?}", list_recursive(&outside)?));
    }
    let sentinel = std::fs::metadata(outside.join("sentinel"))?;
    if sentinel.nlink() != 1
        || std::fs::read_to_string(outside.join("sentinel"))? != "do not touch\n"
    {
        failures.push("the sentinel was linked or changed".into());
    }
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
