//! `large`: a few hundred MB in several layers, made from files on this machine (under
//! /usr) in a deterministic order, built once and cached under [`LARGE_CACHE_DIR`].
//!
//! The cache key hashes the recipe and the list of source files with their sizes, modes,
//! owners and mtimes, so a package upgrade that changes the files makes a new image.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::{CREATED, DEFAULT_PATH, busybox_layer, host_arch};
use super::image::{ImageFormat, TestImage};
use super::layer::{
    Compression, EntryKind, FileSource, LayerBlob, LayerBuilder, TarEntry, TestLayer,
};
use crate::lock::FileLock;

pub const LARGE_CACHE_DIR: &str = "/var/tmp/pvecri-test-images";
/// Layers made from machine files (the image has the busybox layer below them too).
pub const LARGE_LAYERS: usize = 4;
/// Uncompressed bytes of file contents per large layer.
pub const LARGE_LAYER_BUDGET: u64 = 80 << 20;
/// Walked in this order, each depth-first with names sorted bytewise.
pub const LARGE_SOURCES: [&str; 3] = ["/usr/lib", "/usr/share", "/usr/bin"];
const RECIPE: &str = "pvecri-e2e large v1: busybox + 4 x 80 MiB of /usr, gzip 6";

#[derive(Serialize, Deserialize)]
struct CachedLayer {
    digest: String,
    diff_id: String,
    size: u64,
}

/// Builds (or loads from the cache) the `large` image.
pub fn large_image() -> anyhow::Result<TestImage> {
    let layers = plan_large_layers()?;
    let key = cache_key(&layers);
    let cache_root = Path::new(LARGE_CACHE_DIR);
    std::fs::create_dir_all(cache_root)
        .with_context(|| format!("cannot create {LARGE_CACHE_DIR}"))?;
    let dir = cache_root.join(format!("large-{key}"));
    let _lock = FileLock::exclusive(&cache_root.join(format!("large-{key}.lock")))?;
    let finished = match load_cached(&dir, &layers)? {
        Some(layers) => layers,
        None => build_into(&dir, &layers)?,
    };
    let mut all = vec![busybox_layer()?.finish(Compression::Gzip)?];
    all.extend(finished);
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": CREATED,
        "config": { "Env": [DEFAULT_PATH], "Cmd": ["sh"] },
    });
    TestImage::assemble("large", ImageFormat::Oci(Compression::Gzip), config, all)
}

fn load_cached(dir: &Path, plan: &[LayerBuilder]) -> anyhow::Result<Option<Vec<TestLayer>>> {
    let Ok(text) = std::fs::read(dir.join("layers.json")) else {
        return Ok(None);
    };
    let cached: Vec<CachedLayer> =
        serde_json::from_slice(&text).context("corrupt large-image cache index")?;
    if cached.len() != plan.len() {
        return Ok(None);
    }
    let mut layers = Vec::new();
    for (i, (c, builder)) in cached.into_iter().zip(plan).enumerate() {
        let path = layer_path(dir, i);
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(c.size) {
            return Ok(None);
        }
        layers.push(TestLayer {
            media_type: Compression::Gzip.oci_media_type().to_owned(),
            compression: Compression::Gzip,
            digest: c.digest,
            diff_id: c.diff_id,
            size: c.size,
            blob: LayerBlob::File(path),
            entries: builder.entries().to_vec(),
        });
    }
    Ok(Some(layers))
}

fn build_into(dir: &Path, plan: &[LayerBuilder]) -> anyhow::Result<Vec<TestLayer>> {
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&tmp)?;
    let mut index = Vec::new();
    for (i, builder) in plan.iter().enumerate() {
        let layer = builder.finish_to_file(Compression::Gzip, &layer_path(&tmp, i))?;
        index.push(CachedLayer {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
        });
    }
    // Written last: its presence marks a complete cache entry.
    std::fs::write(tmp.join("layers.json"), serde_json::to_vec(&index)?)?;
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    load_cached(dir, plan)?.context("large-image cache unreadable right after building it")
}

fn layer_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("layer-{i}.tar.gz"))
}

/// What each large layer holds, in order: its files up to the budget, preceded by their
/// ancestor directories.
pub fn plan_large_layers() -> anyhow::Result<Vec<LayerBuilder>> {
    let mut layers = Vec::new();
    let mut current: Vec<(String, EntryKind, std::fs::Metadata)> = Vec::new();
    let mut used = 0u64;
    let mut walker = SortedWalk::new(&LARGE_SOURCES);
    while layers.len() < LARGE_LAYERS {
        let Some((path, meta)) = walker.next_entry()? else {
            break;
        };
        let Some(rel) = path
            .to_str()
            .and_then(|p| p.strip_prefix('/'))
            .map(str::to_owned)
        else {
            continue; // non-UTF-8 names are left out
        };
        let kind = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            let Some(target) = target.to_str() else {
                continue;
            };
            EntryKind::Symlink(target.to_owned())
        } else if meta.is_file() {
            used += meta.len();
            EntryKind::File(FileSource::Path {
                path: path.clone(),
                size: meta.len(),
            })
        } else {
            continue;
        };
        current.push((rel, kind, meta));
        if used >= LARGE_LAYER_BUDGET {
            layers.push(layer_from(std::mem::take(&mut current))?);
            used = 0;
        }
    }
    if !current.is_empty() && layers.len() < LARGE_LAYERS {
        layers.push(layer_from(current)?);
    }
    anyhow::ensure!(
        layers.len() == LARGE_LAYERS,
        "not enough files under {LARGE_SOURCES:?} for {LARGE_LAYERS} layers of {LARGE_LAYER_BUDGET} bytes"
    );
    Ok(layers)
}

fn layer_from(files: Vec<(String, EntryKind, std::fs::Metadata)>) -> anyhow::Result<LayerBuilder> {
    let mut dirs = BTreeSet::new();
    for (rel, _, _) in &files {
        let mut parent = Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    let mut b = LayerBuilder::new();
    // BTreeSet order puts every directory before its children.
    for dir in dirs {
        let meta = std::fs::symlink_metadata(Path::new("/").join(&dir))?;
        let name = format!("{}/", dir.display());
        b.entry(entry_with_meta(name, EntryKind::Dir, &meta));
    }
    for (rel, kind, meta) in files {
        b.entry(entry_with_meta(rel, kind, &meta));
    }
    Ok(b)
}

fn entry_with_meta(path: String, kind: EntryKind, meta: &std::fs::Metadata) -> TarEntry {
    let mode = if matches!(kind, EntryKind::Symlink(_)) {
        0o777
    } else {
        meta.mode() & 0o7777
    };
    let mut e = TarEntry::new(path, kind, mode);
    e.uid = u64::from(meta.uid());
    e.gid = u64::from(meta.gid());
    e.mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    e
}

fn cache_key(layers: &[LayerBuilder]) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE.as_bytes());
    for (i, layer) in layers.iter().enumerate() {
        h.update(format!("layer {i}\n").as_bytes());
        for e in layer.entries() {
            let kind = match &e.kind {
                EntryKind::File(_) => "f".to_owned(),
                EntryKind::Dir => "d".to_owned(),
                EntryKind::Symlink(t) => format!("l {t}"),
                other => format!("{other:?}"),
            };
            h.update(
                format!(
                    "{}\0{kind}\0{} {:o} {} {} {}\n",
                    e.path,
                    e.size(),
                    e.mode,
                    e.uid,
                    e.gid,
                    e.mtime
                )
                .as_bytes(),
            );
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// Depth-first walk of several roots, names sorted bytewise, not following symlinks.
struct SortedWalk {
    /// Entries still to visit, last = next.
    stack: Vec<PathBuf>,
}

impl SortedWalk {
    fn new(roots: &[&str]) -> SortedWalk {
        SortedWalk {
            stack: roots.iter().rev().map(PathBuf::from).collect(),
        }
    }

    fn next_entry(&mut self) -> anyhow::Result<Option<(PathBuf, std::fs::Metadata)>> {
        while let Some(path) = self.stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue; // vanished or unreadable: not part of the image
            };
            if meta.is_dir() {
                let mut children: Vec<PathBuf> = match std::fs::read_dir(&path) {
                    Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                    Err(_) => continue,
                };
                children.sort_by(|a, b| {
                    a.as_os_str()
                        .as_encoded_bytes()
                        .cmp(b.as_os_str().as_encoded_bytes())
                });
                self.stack.extend(children.into_iter().rev());
                continue;
            }
            return Ok(Some((path, meta)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_within_budget() {
        let a = plan_large_layers().unwrap();
        let b = plan_large_layers().unwrap();
        assert_eq!(cache_key(&a), cache_key(&b));
        assert_eq!(a.len(), LARGE_LAYERS);
        for layer in &a {
            let bytes: u64 = layer.entries().iter().map(TarEntry::size).sum();
            assert!(
                bytes >= LARGE_LAYER_BUDGET,
                "layer holds only {bytes} bytes"
            );
            // Every file's parent directory comes before it in the same layer.
            let mut seen = BTreeSet::new();
            for e in layer.entries() {
                if let Some(parent) = Path::new(e.path.trim_end_matches('/')).parent()
                    && !parent.as_os_str().is_empty()
                {
                    assert!(
                        seen.contains(&format!("{}/", parent.display())),
                        "{} before its parent",
                        e.path
                    );
                }
                if matches!(e.kind, EntryKind::Dir) {
                    seen.insert(e.path.clone());
                }
            }
        }
    }
}
