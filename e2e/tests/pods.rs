//! Pods and containers through the real daemon, real LXC, real CNI (bridge plugin) and
//! the static podinit, on both layer stores. Each test has its own daemon, registry and
//! network, and runs once per store (`<test>::overlay`, `<test>::zfs`). The bodies are in
//! `pod_tests/pods.rs`; `pve.rs` runs them with the Proxmox driver.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

mod pod_tests;

use pod_tests::pods::*;

e2e::on_both_stores!(
    two_containers_share_the_pod_network,
    logs_are_cri_format_and_reopen_starts_a_new_file,
    exit_codes_and_reasons,
    exec_sync_output_exit_code_and_timeout,
    volumes_are_visible_and_readonly_is_honoured,
    host_network_pods_share_the_host_network,
    stop_sends_the_image_stop_signal_then_sigkill,
    port_mappings_reach_the_pod_through_portmap,
);

// The filter is a property of the container, not of the store: one store is enough.
e2e::on_overlay!(
    runtime_default_seccomp_is_enforced_in_the_process_and_in_exec,
    warm_pool_adopts_and_refills,
);
