//! The layer store against real overlay mounts and a real (zfs-fuse) ZFS pool.
//! Needs root. Modules: the tree comparison over test images and hand-made layers,
//! malicious layers, store lifecycle, SIGKILL mid-apply, and a property test of the two
//! layer forms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

#[path = "layerfs/crash.rs"]
mod crash;
#[path = "layerfs/idmap.rs"]
mod idmap;
#[path = "layerfs/lifecycle.rs"]
mod lifecycle;
#[path = "layerfs/malicious.rs"]
mod malicious;
#[path = "layerfs/props.rs"]
mod props;
#[path = "layerfs/support.rs"]
mod support;
#[path = "layerfs/tree.rs"]
mod tree;
