//! The CRI semantics the kubelet relies on, and bad requests: each gets the right gRPC
//! status and leaves everything else running. Runs on both layer stores; the bodies are in
//! `pod_tests/pods_cri.rs`, which `pve.rs` runs with the Proxmox driver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

mod pod_tests;

use pod_tests::pods_cri::*;

e2e::on_both_stores!(
    a_stop_before_the_handler_is_set_is_not_lost,
    bad_requests_get_their_status_and_leave_the_rest_running,
    ids_names_lists_and_idempotent_removal,
    pods_start_and_go_concurrently,
);

e2e::on_overlay!(
    stopping_a_pod_with_exited_and_created_containers_is_quiet,
    verbose_container_status_gives_the_host_pid,
);
