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
