//! The daemon harness against the real `pvecri` binary: start, CRI calls over the socket,
//! kill -9, restart, stop, cleanup.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::path::Path;

use e2e::daemon::{Daemon, DaemonOptions};
use e2e::mounts::{current_mounts, mounts_under};
use e2e::pods::podinit_path;
use k8s_cri::v1::{
    CgroupDriver, RuntimeCondition, RuntimeConfigRequest, StatusRequest, StatusResponse,
    VersionRequest,
};

/// The condition of that type in a Status response.
fn condition(status: &StatusResponse, kind: &str) -> RuntimeCondition {
    let conditions = &status.status.as_ref().unwrap().conditions;
    conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:?}"))
        .clone()
}

/// A daemon with the static podinit that `scripts/build-podinit` makes, so that it is ready.
fn options_with_cni_dir(cni_dir: &Path, extra_top_level: &str) -> DaemonOptions {
    let podinit = podinit_path().unwrap();
    DaemonOptions {
        config_toml_extra: format!(
            "podinit_path = {:?}\n{extra_top_level}\n[cni]\nconf_dir = {:?}\n",
            podinit.to_str().unwrap(),
            cni_dir.to_str().unwrap()
        ),
        ..DaemonOptions::default()
    }
}

const BRIDGE_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "pvecri-test",
  "plugins": [
    { "type": "bridge", "bridge": "pvecri0", "isGateway": true, "ipMasq": false,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.88.0.0/16" }]] } },
    { "type": "loopback" }
  ]
}"#;

#[tokio::test]
async fn version_status_and_runtime_config_over_the_socket() {
    let cni = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(options_with_cni_dir(
        cni.path(),
        "cgroup_driver = \"systemd\"",
    ))
    .unwrap();
    let mut client = daemon.runtime_client().await.unwrap();

    let version = client
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "pvecri");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let runtime = condition(&status, "RuntimeReady");
    assert!(runtime.status, "RuntimeReady false: {}", runtime.message);
    let network = condition(&status, "NetworkReady");
    assert!(
        !network.status,
        "NetworkReady with an empty CNI config directory"
    );
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(!network.message.is_empty());
    assert!(status.info.is_empty());

    std::fs::write(cni.path().join("10-pvecri.conflist"), BRIDGE_CONFLIST).unwrap();
    let status = client
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let network = condition(&status, "NetworkReady");
    assert!(
        network.status,
        "NetworkReady still false with a config: {}",
        network.message
    );
    let config = status
        .info
        .get("config")
        .expect("verbose Status carries the config");
    assert!(
        config.contains(daemon.state_dir.to_str().unwrap()),
        "{config}"
    );

    let runtime_config = client
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        runtime_config.linux.unwrap().cgroup_driver,
        CgroupDriver::Systemd as i32
    );

    // The image service answers on the same socket.
    let mut images = daemon.image_client().await.unwrap();
    let _ = images
        .image_fs_info(k8s_cri::v1::ImageFsInfoRequest {})
        .await;
}

#[tokio::test]
async fn runtime_not_ready_without_podinit() {
    let cni = tempfile::tempdir().unwrap();
    let missing = cni.path().join("no-podinit-here");
    let daemon = Daemon::start(DaemonOptions {
        config_toml_extra: format!("podinit_path = {:?}\n", missing.to_str().unwrap()),
        ..DaemonOptions::default()
    })
    .unwrap();
    let mut client = daemon.runtime_client().await.unwrap();
    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let runtime = condition(&status, "RuntimeReady");
    assert!(!runtime.status, "ready without a podinit");
    assert_eq!(runtime.reason, "PodinitNotFound");
    assert!(
        runtime.message.contains("podinit_path"),
        "{}",
        runtime.message
    );
}

#[tokio::test]
async fn kill9_restart_stop_and_cleanup() {
    let cni = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(options_with_cni_dir(cni.path(), "")).unwrap();
    let first_pid = daemon.pid().unwrap();
    daemon.kill9().unwrap();
    assert!(daemon.pid().is_none());
    assert!(
        daemon.socket.exists(),
        "kill -9 should leave the socket file behind"
    );
    assert!(
        daemon.runtime_client().await.is_err(),
        "a killed daemon still answers"
    );

    daemon.restart().unwrap();
    assert_ne!(daemon.pid().unwrap(), first_pid);
    let mut client = daemon.runtime_client().await.unwrap();
    client.version(VersionRequest::default()).await.unwrap();

    let status = daemon.stop().unwrap();
    assert!(status.success(), "pvecri exited with {status} on SIGTERM");
    assert!(
        daemon.stop().is_err(),
        "stopping a stopped daemon must fail"
    );
    assert!(
        !daemon.log().is_empty(),
        "the daemon's log was not captured"
    );

    // Something a test left mounted under the state directory is unmounted on drop.
    daemon.restart().unwrap();
    let leftover = daemon.state_dir.join("pods/p1/ctrs/c1/rootfs");
    std::fs::create_dir_all(&leftover).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "leftover", leftover.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let state_dir = daemon.state_dir.clone();
    let top = daemon.socket.parent().unwrap().to_owned();
    drop(daemon);
    assert!(mounts_under(&current_mounts().unwrap(), &state_dir).is_empty());
    assert!(!top.exists(), "{} left behind", top.display());
}

#[test]
fn start_up_failure_reports_the_log() {
    let options = DaemonOptions {
        config_toml_extra: "no_such_key = 1\n".into(),
        ..DaemonOptions::default()
    };
    let err = Daemon::start(options)
        .err()
        .expect("a config with an unknown key started");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited during start-up"), "{msg}");
    assert!(
        msg.contains("no_such_key"),
        "the daemon's own error is not in: {msg}"
    );
}
