//! The `pvecri` binary's start-up errors: each exits non-zero with one line naming the
//! problem, and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pvecri");

fn serve(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The error line; fails the test unless it is exactly one line and the exit code is 1.
fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got {stderr:?}");
    assert!(lines[0].starts_with("pvecri: error: "), "{stderr}");
    lines[0].to_string()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "log_level = \"info\"\nsokcet = \"/x.sock\"\n");
    let line = one_line_error(&serve(&["--config", &cfg]));
    assert!(line.contains("sokcet"), "{line}");
    assert!(line.contains("line 2"), "{line}");
}

#[test]
fn bad_value_names_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[cni]\nbin_dirs = \"/opt/cni/bin\"\n");
    let line = one_line_error(&serve(&["--config", &cfg]));
    assert!(line.contains("cni.bin_dirs"), "{line}");
    assert!(line.contains("/opt/cni/bin"), "{line}");
}

#[test]
fn unreadable_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let path = dir.path().to_str().unwrap();
    let line = one_line_error(&serve(&["--config", path]));
    assert!(
        line.contains(path) && line.contains("cannot read"),
        "{line}"
    );
    let missing = dir.path().join("missing.toml");
    let line = one_line_error(&serve(&["--config", missing.to_str().unwrap()]));
    assert!(line.contains("missing.toml"), "{line}");
}

#[test]
fn relative_state_dir_flag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let line = one_line_error(&serve(&["--config", &cfg, "--state-dir", "rel/dir"]));
    assert!(
        line.contains("state_dir") && line.contains("rel/dir"),
        "{line}"
    );
}

#[test]
fn socket_held_by_a_live_daemon_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let socket = dir.path().join("run/pvecri.sock");
    let socket_arg = socket.to_str().unwrap();
    let state1 = dir.path().join("state1");
    let mut first = Command::new(BIN)
        .args(["serve", "--config", &cfg, "--socket", socket_arg])
        .args(["--state-dir", state1.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "first daemon did not come up");
        assert!(first.try_wait().unwrap().is_none(), "first daemon exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state2 = dir.path().join("state2");
    let out = serve(&[
        "--config",
        &cfg,
        "--socket",
        socket_arg,
        "--state-dir",
        state2.to_str().unwrap(),
    ]);
    let line = one_line_error(&out);
    assert!(
        line.contains(socket_arg) && line.contains("in use"),
        "{line}"
    );
    // The live daemon still answers on its socket.
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(first.wait().unwrap().success());
    assert!(!socket.exists(), "socket removed on clean shutdown");
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let socket = dir.path().join("pvecri.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut daemon = Command::new(BIN)
        .args([
            "serve",
            "--config",
            &cfg,
            "--socket",
            socket.to_str().unwrap(),
        ])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "daemon did not replace the stale socket"
        );
        assert!(daemon.try_wait().unwrap().is_none(), "daemon exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

#[test]
fn config_default_prints_the_commented_defaults() {
    let out = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("socket = \"/run/pvecri/pvecri.sock\""),
        "{text}"
    );
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 5,
        "commented"
    );
}
