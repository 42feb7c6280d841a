//! Filesystem trees for checking layer application: the tree an OCI applier must produce
//! from a list of layers ([`expected_tree`]), the tree on disk ([`read_tree`]), and their
//! differences ([`compare`]).
//!
//! Semantics follow the OCI image spec's changeset rules: a layer's whiteouts and opaque
//! markers act on lower layers only, so they are applied before the layer's other entries;
//! a later entry for a path replaces an earlier one, except that a directory over a
//! directory keeps its children; a hard link shares its target's inode. Parent paths go
//! through symlinks as containerd resolves them, as if the root were `/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::images::{EntryKind, TarEntry};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    File { sha256: String, size: u64 },
    Dir,
    Symlink(String),
    Fifo,
    CharDevice { major: u64, minor: u64 },
    BlockDevice { major: u64, minor: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// `None` where the result is up to the applier (implicitly created parent directories).
    pub mtime: Option<u64>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Paths with the same inode id are hard links of one file.
    pub inode: u64,
}

/// Paths relative to the root, without leading `/` or `./` and without trailing `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn remove_subtree(&mut self, path: &str) {
        if path.is_empty() {
            self.nodes.clear();
            return;
        }
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        if dir.is_empty() {
            self.nodes.clear();
            return;
        }
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Sets of paths that share an inode (only sets of two or more).
    pub fn hardlink_groups(&self) -> BTreeSet<Vec<String>> {
        let mut by_inode: HashMap<u64, Vec<String>> = HashMap::new();
        for (path, node) in &self.nodes {
            by_inode.entry(node.inode).or_default().push(path.clone());
        }
        by_inode.into_values().filter(|v| v.len() > 1).collect()
    }
}

/// Normalizes a tar entry name; `None` for names that would leave the root (`..`) or name
/// nothing but the root.
pub fn normalize_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// The tree that applying `layers` (bottom first) must give.
/// Errors name entries an applier must refuse: paths with `..`, hard links to nothing.
pub fn expected_tree(layers: &[&[TarEntry]]) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    let mut next_inode = 1u64;
    for (index, entries) in layers.iter().enumerate() {
        // Whiteouts and opaque markers act on lower layers: apply them first.
        for entry in entries.iter() {
            if entry.is_opaque_marker() {
                let dir = entry.path.trim_end_matches('/');
                let dir = dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let dir = if dir.is_empty() {
                    String::new()
                } else {
                    normalize_path(dir).with_context(|| bad(index, entry))?
                };
                tree.remove_children(&resolve_dir(&tree, &dir));
            } else if let Some(target) = entry.whiteout_target() {
                let target = normalize_path(&target).with_context(|| bad(index, entry))?;
                tree.remove_subtree(&resolve_parent(&tree, &target));
            }
        }
        for entry in entries.iter() {
            // `/`, `.` or `./`: the root's own metadata, which is not a node of the tree.
            let root = entry.path.split('/').all(|p| p.is_empty() || p == ".");
            if entry.is_opaque_marker() || entry.whiteout_target().is_some() || root {
                continue;
            }
            let path = normalize_path(&entry.path).with_context(|| bad(index, entry))?;
            let path = resolve_parent(&tree, &path);
            make_parents(&mut tree, &path, &mut next_inode);
            let node = match &entry.kind {
                EntryKind::Hardlink(target) => {
                    let target = normalize_path(target).with_context(|| bad(index, entry))?;
                    let target = resolve_parent(&tree, &target);
                    match tree.get(&target) {
                        Some(node) if node.kind != NodeKind::Dir => node.clone(),
                        Some(_) => bail!(
                            "layer {index}: hard link {} to directory {target}",
                            entry.path
                        ),
                        None => bail!(
                            "layer {index}: hard link {} to missing {target}",
                            entry.path
                        ),
                    }
                }
                kind => {
                    next_inode += 1;
                    node_from_entry(entry, kind, next_inode).with_context(|| bad(index, entry))?
                }
            };
            match tree.nodes.get_mut(&path) {
                Some(existing) if existing.kind == NodeKind::Dir && node.kind == NodeKind::Dir => {
                    // A directory over a directory keeps its children; metadata is the new one's.
                    let inode = existing.inode;
                    *existing = Node { inode, ..node };
                }
                _ => {
                    tree.remove_subtree(&path);
                    tree.nodes.insert(path, node);
                }
            }
        }
    }
    Ok(tree)
}

fn bad(index: usize, entry: &TarEntry) -> String {
    format!(
        "layer {index}: entry {:?} escapes the root or names nothing",
        entry.path
    )
}

/// The real path of directory `dir`: symlinks followed as if the root were `/` (an absolute
/// target from the root, `..` stopping there), missing components kept by name.
fn resolve_dir(tree: &Tree, dir: &str) -> String {
    let mut pending: std::collections::VecDeque<String> =
        dir.split('/').map(str::to_owned).collect();
    let mut real: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                real.pop();
                continue;
            }
            _ => {}
        }
        real.push(c);
        if let Some(Node {
            kind: NodeKind::Symlink(target),
            ..
        }) = tree.get(&real.join("/"))
            && links < 40
        {
            links += 1;
            real.pop();
            if target.starts_with('/') {
                real.clear();
            }
            for part in target.split('/').rev() {
                pending.push_front(part.to_owned());
            }
        }
    }
    real.join("/")
}

/// `path` with its parent resolved by [`resolve_dir`] (the last component is not followed).
fn resolve_parent(tree: &Tree, path: &str) -> String {
    match path.rsplit_once('/') {
        Some((parent, name)) => {
            let parent = resolve_dir(tree, parent);
            if parent.is_empty() {
                name.to_owned()
            } else {
                format!("{parent}/{name}")
            }
        }
        None => path.to_owned(),
    }
}

fn make_parents(tree: &mut Tree, path: &str, next_inode: &mut u64) {
    let mut end = 0;
    while let Some(slash) = path[end..].find('/') {
        let parent = &path[..end + slash];
        end += slash + 1;
        match tree.get(parent) {
            Some(node) if node.kind == NodeKind::Dir => continue,
            Some(_) => tree.remove_subtree(parent),
            None => {}
        }
        *next_inode += 1;
        tree.nodes.insert(
            parent.to_owned(),
            Node {
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: None,
                xattrs: BTreeMap::new(),
                inode: *next_inode,
            },
        );
    }
}

fn node_from_entry(entry: &TarEntry, kind: &EntryKind, inode: u64) -> anyhow::Result<Node> {
    let kind = match kind {
        EntryKind::File(_) => {
            let contents = entry.contents()?;
            NodeKind::File {
                sha256: hex::encode(Sha256::digest(&contents)),
                size: contents.len() as u64,
            }
        }
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink(target) => NodeKind::Symlink(target.clone()),
        EntryKind::Fifo => NodeKind::Fifo,
        EntryKind::CharDevice { major, minor } => NodeKind::CharDevice {
            major: u64::from(*major),
            minor: u64::from(*minor),
        },
        EntryKind::BlockDevice { major, minor } => NodeKind::BlockDevice {
            major: u64::from(*major),
            minor: u64::from(*minor),
        },
        EntryKind::Hardlink(_) => bail!("hard links are resolved by the caller"),
        EntryKind::Raw { .. } => bail!("raw entries have no expected node"),
    };
    Ok(Node {
        mode: if matches!(kind, NodeKind::Symlink(_)) {
            0o777
        } else {
            entry.mode & 0o7777
        },
        kind,
        uid: entry.uid,
        gid: entry.gid,
        mtime: Some(entry.mtime),
        xattrs: entry.xattrs.iter().cloned().collect(),
        inode,
    })
}

/// Reads the tree under `root` (not following symlinks; `root` itself is not a node).
/// Extended attributes are read when `xattrs` is set (zfs-fuse has none).
pub fn read_tree(root: &Path, xattrs: bool) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    let mut inodes: HashMap<(u64, u64), u64> = HashMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(&rel)
        };
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry
                .file_name()
                .to_str()
                .with_context(|| format!("non-UTF-8 name in {}", dir.display()))?
                .to_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = root.join(&path);
            let meta = std::fs::symlink_metadata(&full)?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                NodeKind::Dir
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full)?;
                NodeKind::Symlink(
                    target
                        .to_str()
                        .context("non-UTF-8 symlink target")?
                        .to_owned(),
                )
            } else if ft.is_file() {
                let contents = std::fs::read(&full)
                    .with_context(|| format!("cannot read {}", full.display()))?;
                NodeKind::File {
                    sha256: hex::encode(Sha256::digest(&contents)),
                    size: contents.len() as u64,
                }
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() {
                NodeKind::CharDevice {
                    major: libc::major(meta.rdev()).into(),
                    minor: libc::minor(meta.rdev()).into(),
                }
            } else if ft.is_block_device() {
                NodeKind::BlockDevice {
                    major: libc::major(meta.rdev()).into(),
                    minor: libc::minor(meta.rdev()).into(),
                }
            } else {
                bail!("{} is a socket or of unknown type", full.display());
            };
            let next = inodes.len() as u64 + 1;
            let inode = *inodes.entry((meta.dev(), meta.ino())).or_insert(next);
            tree.nodes.insert(
                path,
                Node {
                    mode: meta.mode() & 0o7777,
                    uid: u64::from(meta.uid()),
                    gid: u64::from(meta.gid()),
                    mtime: Some(u64::try_from(meta.mtime()).unwrap_or(0)),
                    xattrs: if xattrs {
                        read_xattrs(&full)?
                    } else {
                        BTreeMap::new()
                    },
                    kind,
                    inode,
                },
            );
        }
    }
    Ok(tree)
}

fn read_xattrs(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut out = BTreeMap::new();
    let names = xattr_call(|buf, len| {
        // SAFETY: c_path is NUL-terminated; buf is valid for len bytes (or null with len 0).
        unsafe { libc::llistxattr(c_path.as_ptr(), buf.cast(), len) }
    })
    .with_context(|| format!("cannot list xattrs of {}", path.display()))?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name)?;
        let value = xattr_call(|buf, len| {
            // SAFETY: both strings are NUL-terminated; buf is valid for len bytes (or null with len 0).
            unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), buf.cast(), len) }
        })
        .with_context(|| {
            format!(
                "cannot read xattr {} of {}",
                String::from_utf8_lossy(name),
                path.display()
            )
        })?;
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}

/// Runs a size-probing xattr call: first for the size, then into a buffer of that size.
/// A filesystem without xattrs reads as having none.
fn xattr_call(mut call: impl FnMut(*mut u8, usize) -> isize) -> std::io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(err),
            };
        }
        let mut buf = vec![0u8; size.unsigned_abs()];
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got.unsigned_abs());
            return Ok(buf);
        }
        // ERANGE: it grew between the calls; ask again.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(std::io::Error::last_os_error());
        }
    }
}

/// What [`compare`] looks at.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Compare mtimes of files, symlinks and special files.
    pub mtimes: bool,
    /// Also compare directory mtimes (appliers that add children later change them).
    pub dir_mtimes: bool,
    pub xattrs: bool,
    /// Added to expected uids and gids (100000 for an unprivileged Proxmox CT).
    pub id_shift: u64,
    /// Paths (and everything below them) that only the actual tree may have.
    pub ignore: Vec<String>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            mtimes: true,
            dir_mtimes: false,
            xattrs: false,
            id_shift: 0,
            ignore: Vec::new(),
        }
    }
}

/// Every difference between the trees, one line each (empty when they match).
pub fn compare(expected: &Tree, actual: &Tree, options: &CompareOptions) -> Vec<String> {
    let ignored = |p: &str| {
        options
            .ignore
            .iter()
            .any(|i| p == i || p.starts_with(&format!("{i}/")))
    };
    let mut diffs = Vec::new();
    for (path, want) in &expected.nodes {
        let Some(got) = actual.nodes.get(path) else {
            diffs.push(format!("missing: {path}"));
            continue;
        };
        if want.kind != got.kind {
            diffs.push(format!(
                "{path}: kind {:?}, expected {:?}",
                got.kind, want.kind
            ));
            continue;
        }
        let is_symlink = matches!(want.kind, NodeKind::Symlink(_));
        if !is_symlink && want.mode != got.mode {
            diffs.push(format!(
                "{path}: mode {:o}, expected {:o}",
                got.mode, want.mode
            ));
        }
        if (want.uid + options.id_shift, want.gid + options.id_shift) != (got.uid, got.gid) {
            diffs.push(format!(
                "{path}: owner {}:{}, expected {}:{}",
                got.uid,
                got.gid,
                want.uid + options.id_shift,
                want.gid + options.id_shift
            ));
        }
        let check_mtime = options.mtimes && (want.kind != NodeKind::Dir || options.dir_mtimes);
        if let (true, Some(m)) = (check_mtime, want.mtime)
            && got.mtime != Some(m)
        {
            diffs.push(format!("{path}: mtime {:?}, expected {m}", got.mtime));
        }
        if options.xattrs && want.xattrs != got.xattrs {
            diffs.push(format!(
                "{path}: xattrs {:?}, expected {:?}",
                got.xattrs, want.xattrs
            ));
        }
    }
    for path in actual.nodes.keys() {
        if !expected.nodes.contains_key(path) && !ignored(path) {
            diffs.push(format!("unexpected: {path}"));
        }
    }
    let (want_links, got_links) = (expected.hardlink_groups(), actual.hardlink_groups());
    for group in want_links.difference(&got_links) {
        diffs.push(format!("not hard-linked together: {group:?}"));
    }
    for group in got_links.difference(&want_links) {
        diffs.push(format!("unexpected hard links: {group:?}"));
    }
    diffs
}

/// [`compare`] as a result, listing the differences in the error.
pub fn ensure_same(expected: &Tree, actual: &Tree, options: &CompareOptions) -> anyhow::Result<()> {
    let diffs = compare(expected, actual, options);
    if diffs.is_empty() {
        Ok(())
    } else {
        bail!("{} differences:\n  {}", diffs.len(), diffs.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{
        LayerBuilder, multi_layer_adds, multi_layer_changes, multi_layer_recreates,
    };

    fn kinds(tree: &Tree, prefix: &str) -> Vec<String> {
        tree.nodes
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    #[test]
    fn multi_layer_upper_layers_give_the_documented_tree() {
        let mut base = LayerBuilder::new();
        base.dir("etc", 0o755)
            .file("etc/motd", "hi\n", 0o644)
            .dir("usr/bin", 0o755);
        let (adds, changes, recreates) = (
            multi_layer_adds(),
            multi_layer_changes(),
            multi_layer_recreates(),
        );
        let tree = expected_tree(&[
            base.entries(),
            adds.entries(),
            changes.entries(),
            recreates.entries(),
        ])
        .unwrap();
        assert_eq!(
            kinds(&tree, "data"),
            [
                "data",
                "data/abs-sym",
                "data/dir",
                "data/dir/c",
                "data/fifo",
                "data/keep.txt",
                "data/null",
                "data/owned.txt",
                "data/sym",
                "data/xattr.txt"
            ]
        );
        assert_eq!(kinds(&tree, "opaque"), ["opaque", "opaque/new1"]);
        assert_eq!(
            kinds(&tree, "replace"),
            [
                "replace",
                "replace/kind",
                "replace/kind/inner",
                "replace/me.txt"
            ]
        );
        assert!(tree.get("etc/motd").is_none());
        assert_eq!(tree.get("data/dir").unwrap().mode, 0o700);
        let me = tree.get("replace/me.txt").unwrap();
        assert_eq!((me.mode, me.mtime), (0o600, Some(1_300_000_000)));
        assert_eq!(
            tree.get("data/null").unwrap().kind,
            NodeKind::CharDevice { major: 1, minor: 3 }
        );
        assert_eq!(tree.get("usr/bin/suidprog").unwrap().mode, 0o4755);
        assert_eq!(
            tree.get("data/xattr.txt")
                .unwrap()
                .xattrs
                .get("user.pvecri")
                .map(Vec::as_slice),
            Some(&b"test"[..])
        );
        let groups: Vec<Vec<String>> = tree.hardlink_groups().into_iter().collect();
        assert_eq!(
            groups,
            vec![vec![
                "link/hard.txt".to_owned(),
                "link/target.txt".to_owned()
            ]]
        );
        // The implicit parent `home` (not in these layers) is an applier-defined directory.
        assert_eq!(tree.get("home").unwrap().mtime, None);
    }

    #[test]
    fn whiteouts_do_not_touch_their_own_layer() {
        let mut lower = LayerBuilder::new();
        lower.file("a", "lower", 0o644);
        let mut upper = LayerBuilder::new();
        upper
            .file("b", "same layer", 0o644)
            .whiteout("b")
            .whiteout("a")
            .file("x/y", "", 0o644)
            .opaque("x");
        let tree = expected_tree(&[lower.entries(), upper.entries()]).unwrap();
        assert!(tree.get("a").is_none());
        assert!(
            tree.get("b").is_some(),
            "a whiteout removed an entry of its own layer"
        );
        assert!(
            tree.get("x/y").is_some(),
            "an opaque marker removed an entry of its own layer"
        );
    }

    #[test]
    fn escaping_names_and_dangling_hard_links_are_errors() {
        let mut b = LayerBuilder::new();
        b.file("../x", "", 0o644);
        assert!(expected_tree(&[b.entries()]).is_err());
        let mut b = LayerBuilder::new();
        b.whiteout("../x");
        assert!(expected_tree(&[b.entries()]).is_err());
        let mut b = LayerBuilder::new();
        b.hardlink("h", "nowhere");
        assert!(expected_tree(&[b.entries()]).is_err());
        assert_eq!(normalize_path("/etc//passwd"), Some("etc/passwd".into()));
        assert_eq!(normalize_path("./a/./b/"), Some("a/b".into()));
        assert_eq!(normalize_path("./"), None);
    }

    #[test]
    fn compare_reports_each_kind_of_difference() {
        let mut b = LayerBuilder::new();
        b.file("f", "x", 0o644)
            .file("g", "y", 0o600)
            .owner(5, 5)
            .file("h", "z", 0o644);
        let expected = expected_tree(&[b.entries()]).unwrap();
        let mut actual = expected.clone();
        actual.nodes.get_mut("f").unwrap().mode = 0o600;
        actual.nodes.get_mut("g").unwrap().uid = 100_005;
        actual.nodes.get_mut("g").unwrap().gid = 100_005;
        actual.nodes.remove("h");
        let extra = actual.nodes["f"].clone();
        actual.nodes.insert(
            "extra".into(),
            Node {
                inode: 999,
                ..extra
            },
        );
        let diffs = compare(&expected, &actual, &CompareOptions::default());
        assert_eq!(diffs.len(), 4, "{diffs:?}");
        let shifted = CompareOptions {
            id_shift: 100_000,
            ignore: vec!["extra".into()],
            ..CompareOptions::default()
        };
        let diffs = compare(&expected, &actual, &shifted);
        // f's mode, f's and h's owners under the shift, h missing.
        assert!(
            diffs.iter().any(|d| d.starts_with("missing: h")),
            "{diffs:?}"
        );
        assert!(!diffs.iter().any(|d| d.contains("extra")), "{diffs:?}");
        assert!(ensure_same(&expected, &expected, &CompareOptions::default()).is_ok());
    }

    proptest::proptest! {
        /// Whatever the raw name, a normalized path stays inside the root.
        #[test]
        fn normalized_paths_stay_inside(raw in "[a./]{0,12}|[^\\x00]{0,40}") {
            if let Some(p) = normalize_path(&raw) {
                proptest::prop_assert!(!p.starts_with('/'));
                proptest::prop_assert!(p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{p}");
            } else {
                proptest::prop_assert!(raw.split('/').any(|c| c == "..") || raw.split('/').all(|c| c.is_empty() || c == "."));
            }
        }
    }
}
