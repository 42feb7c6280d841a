//! Pods in the host's PID, IPC and network namespaces (`hostPID`, `hostIPC`, `hostNetwork`),
//! the shape of node DaemonSets, through the real daemon, LXC and podinit. The layer store
//! plays no part in this, so these run on the overlay store only. The bodies are in
//! `pod_tests/host_namespaces.rs`, which `pve.rs` runs with the Proxmox driver.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

mod pod_tests;

use pod_tests::host_namespaces::*;

e2e::on_overlay!(
    a_host_namespace_pod_sees_the_host_and_ends_only_its_own,
    a_crashed_host_pid_pod_leaves_no_process_behind,
    containers_cannot_have_host_namespaces_their_pod_lacks,
    a_privileged_node_agent_with_a_bidirectional_volume,
    a_host_pid_pod_survives_a_daemon_restart,
);
