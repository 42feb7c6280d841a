//! The `pvecri` command line outside `serve`: `config check` (what the systemd unit runs
//! before every start and the chart's installer before it writes a config), `config
//! default`, `config reference`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use e2e::daemon::binary_path;

fn pvecri(args: &[&str]) -> Output {
    Command::new(binary_path().unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn check(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, text).unwrap();
    pvecri(&["config", "check", file.to_str().unwrap()])
}

/// The one line on stderr of a failed check.
fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "check passed: {out:?}");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn config_check_accepts_the_default_file_and_partial_files() {
    let default = pvecri(&["config", "default"]);
    assert!(default.status.success());
    let out = check(&String::from_utf8(default.stdout).unwrap());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));

    let out = check("[storage]\ndriver = \"zfs\"\n[storage.zfs]\ndataset = \"tank/k8s\"\n");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn config_check_names_the_wrong_key_in_one_line() {
    let err = failure(&check("[storage]\ndriver = \"btrfs\"\n"));
    assert!(
        err.contains("storage.driver") && err.contains("btrfs"),
        "{err}"
    );

    let err = failure(&check("[cni]\nbindirs = [\"/opt/cni/bin\"]\n"));
    assert!(err.contains("bindirs"), "{err}");

    let err = failure(&check("state_dir = \"relative\"\n"));
    assert!(
        err.contains("state_dir") && err.contains("absolute"),
        "{err}"
    );

    let err = failure(&check("socket = \n"));
    assert!(err.contains("line 1"), "{err}");

    let err = failure(&check(
        "[registries.\"r.example\"]\nmirrors = [\"ftp://m\"]\n",
    ));
    assert!(err.contains("mirrors[0]"), "{err}");
}

#[test]
fn config_check_of_a_missing_file() {
    let err = failure(&pvecri(&["config", "check", "/nonexistent/pvecri.toml"]));
    assert!(err.contains("/nonexistent/pvecri.toml"), "{err}");
}

#[test]
fn config_reference_is_the_checked_in_page() {
    let out = pvecri(&["config", "reference"]);
    assert!(out.status.success());
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(page).unwrap(),
        "docs/configuration.md differs from `pvecri config reference`"
    );
}

/// `pvecri node install --restart systemd` runs the host's systemctl in the mount namespace
/// of the host's init (what `nsenter -t 1 -m` does for kata-deploy). This machine's PID 1
/// keeps its namespaces closed, so a process in a mount namespace of its own plays the
/// host's init (`--host-pid`), and the installer runs in another mount namespace whose
/// /usr/bin/systemctl is /dev/null: only the "host" namespace has a systemctl that runs.
/// No systemd runs here, so that systemctl answers that it cannot operate: proof that it
/// ran, in the host's namespace, and that its failure reaches the installer's one-line
/// error. A restart by a real systemd is not exercised here.
#[test]
fn node_install_runs_systemctl_in_the_mount_namespace_of_the_hosts_init() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (mount namespaces)"
    );
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload");
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let bin = binary_path().unwrap();
    for (rel, from) in [
        ("usr/bin/pvecri", bin.clone()),
        ("usr/lib/pvecri/podinit", bin.clone()),
        (
            "usr/lib/systemd/system/pvecri.service",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/pvecri.service"),
        ),
    ] {
        let to = payload.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();

    let mut init = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "120"])
        .spawn()
        .unwrap();
    // unshare execs sleep once its namespace is made.
    let init_ns = format!("/proc/{}/ns/mnt", init.id());
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(&init_ns).is_ok_and(|ns| ns == own_ns) {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare made no namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let script =
        "mount --make-rprivate / && mount --bind /dev/null /usr/bin/systemctl && exec \"$@\"";
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(&bin)
        .args(["node", "install", "--restart", "systemd", "--host-pid"])
        .arg(init.id().to_string())
        .arg("--host-root")
        .arg(&host)
        .arg("--payload")
        .arg(&payload)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let _ = init.kill();
    let _ = init.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`systemctl daemon-reload` on the host failed")
            && err.contains("System has not been booted with systemd"),
        "{err}"
    );
    assert_eq!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .matches("failed")
            .count(),
        1,
        "{err}"
    );
    // The files were placed before the restart was asked for.
    assert!(host.join("usr/local/bin/pvecri").is_file());
    assert!(host.join("etc/systemd/system/pvecri.service").is_file());
}
