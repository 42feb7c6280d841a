//! End-to-end test harness for pvecri: a shared zfs-fuse pool, a local registry, test
//! images, and the daemon with a CRI client.

pub mod bench;
pub mod cgroups;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod containerd;
pub mod cri_client;
pub mod critest;
pub mod daemon;
pub mod deb;
pub mod images;
pub mod k8s_tools;
pub mod kubelet;
pub mod lock;
pub mod mounts;
pub mod pods;
pub mod procs;
pub mod proxy;
pub mod pve;
pub mod registry;
pub mod streaming;
pub mod tree;
pub mod zfs;
