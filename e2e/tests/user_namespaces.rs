//! Pods with their own user namespace (`hostUsers: false`): unprivileged CTs with the ID
//! map the kubelet gives, image files shown as the container's own (idmapped overlay
//! layers, or a shifted ZFS clone), idmapped volumes, and the mappings refused as containerd
//! refuses them. Through the real daemon, LXC and podinit, on both layer stores. The bodies
//! are in `pod_tests/user_namespaces.rs`, which `pve.rs` runs with the Proxmox driver.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

mod pod_tests;

use pod_tests::user_namespaces::*;

e2e::on_both_stores!(a_user_namespace_pod_owns_its_image_and_volumes);

e2e::on_overlay!(bad_user_namespaces_are_refused);
