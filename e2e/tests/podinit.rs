//! podinit for real: the static binary as PID 1 of a new PID + mount namespace (under
//! `unshare`), busybox containers, real mounts, cgroups and CRI log files. Needs root.
//!
//! Each pod runs in a cgroup of its own made by the test, so pods of parallel tests never share
//! container cgroups, and the test can check that podinit leaves none behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use podinit::api::{ErrorKind, ExecRequest};
use podinit::{Client, ContainerState, ContainerStatus};
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The static podinit, built once per test run with scripts/build-podinit.
fn podinit_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = workspace_root().join("scripts/build-podinit");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .expect("build-podinit prints the binary's path");
        assert!(path.is_file(), "no podinit at {}", path.display());
        path
    })
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "podinit e2e tests need root (mounts, namespaces, cgroups)"
    );
    for tool in ["/usr/bin/unshare", "/bin/busybox"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is required by the podinit tests"
        );
    }
}

fn busybox_applets() -> &'static [String] {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let out = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
}

/// A minimal root filesystem: busybox and its applets in /bin, an /etc/passwd.
fn make_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    if std::fs::hard_link("/bin/busybox", bin.join("busybox")).is_err() {
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    }
    for a in busybox_applets() {
        if a != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(a)).expect("applet symlink");
        }
    }
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .expect("passwd");
}

/// Where this host's cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on v2, the `unified`
/// mount of a hybrid host), if anywhere.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mp = pre.split(' ').nth(4)?;
        post.starts_with("cgroup2 ").then(|| PathBuf::from(mp))
    })
}

/// The test's own cgroup for one pod (v1: one directory per controller; v2: one directory).
struct TestCgroup {
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// `v2_root`: make it in this cgroup2 hierarchy whatever the host uses.
    fn new(name: &str, v2_root: Option<&Path>) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let mut dirs = Vec::new();
        if let Some(root) = v2_root {
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("v2 entry");
            dirs.push(root.join(rel.trim_start_matches('/')).join(name));
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("v2 entry");
            dirs.push(
                Path::new("/sys/fs/cgroup")
                    .join(rel.trim_start_matches('/'))
                    .join(name),
            );
        } else {
            // Every controller podinit uses: one left out would put the pods of parallel
            // tests in its root, where container cgroups of the same name collide.
            for c in [
                "memory", "cpu", "cpuacct", "pids", "devices", "hugetlb", "cpuset",
            ] {
                let Some(rel) = own.lines().find_map(|l| {
                    let mut it = l.splitn(3, ':');
                    let _ = it.next();
                    let ctrls = it.next()?;
                    let path = it.next()?;
                    ctrls.split(',').any(|x| x == c).then_some(path)
                }) else {
                    continue;
                };
                let dir = Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(rel.trim_start_matches('/'))
                    .join(name);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        for d in &dirs {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("creating test cgroup {}: {e}", d.display()),
            }
            // A new v1 cpuset has no CPUs or memory nodes: nothing could join it.
            if d.join("cpuset.cpus").exists() {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = d.parent().expect("parent").join(f);
                    let v = std::fs::read_to_string(&parent).expect("parent cpuset");
                    std::fs::write(d.join(f), v.trim()).expect("cpuset");
                }
            }
        }
        Self { dirs }
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Subdirectories podinit left behind (container cgroups; on v2 its own leaf is expected).
    fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in &self.dirs {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && e.file_name() != "podinit" {
                    out.push(p);
                }
            }
        }
        out
    }

    fn remove(&self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d.join("podinit"));
            let _ = std::fs::remove_dir(d);
        }
    }
}

struct Pod {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    logs: PathBuf,
    podinit_log: PathBuf,
    child: Child,
    cgroup: TestCgroup,
    client: Client,
}

static POD_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Pod {
    /// Starts podinit as PID 1 of a new PID and mount namespace on a fresh pod directory.
    fn start(grace: Duration) -> Pod {
        Self::start_with(grace, false)
    }

    /// `force_v2`: podinit sees the host's cgroup2 hierarchy on its `/sys/fs/cgroup` (bound
    /// there in its mount namespace), so it runs its cgroup v2 code on a v1 or hybrid host.
    fn start_with(grace: Duration, force_v2: bool) -> Pod {
        require_root();
        let v2_root = if force_v2 {
            Some(cgroup2_mount().expect("a cgroup2 hierarchy (hybrid or v2 host)"))
        } else {
            None
        };
        let bin = podinit_bin();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod");
        let logs = tmp.path().join("logs");
        std::fs::create_dir_all(&dir).expect("pod dir");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let podinit_log = tmp.path().join("podinit.log");
        let seq = POD_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let cgroup = TestCgroup::new(
            &format!("pvecri-podinit-test-{}-{seq}", std::process::id()),
            v2_root.as_deref(),
        );
        let bind_v2 = match &v2_root {
            Some(r) if r != Path::new("/sys/fs/cgroup") => {
                format!("mount --bind {} /sys/fs/cgroup || exit 1; ", r.display())
            }
            _ => String::new(),
        };
        // The launcher joins the test cgroup, then becomes unshare, whose child is podinit.
        let script = r#"pid=$$; while [ "$1" != "--" ]; do echo $pid > "$1" || exit 1; shift; done; shift; exec "$@""#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("sh");
        cmd.args(cgroup.procs_files());
        cmd.arg("--");
        // A private mount namespace without the host's zfs-fuse mounts: zfs-fuse calls a
        // dataset busy while any namespace holds a copy of its mount, so a copy here (or one
        // propagated in later) would make other tests' `zfs destroy` fail while this runs.
        cmd.args([
            "/usr/bin/unshare",
            "--fork",
            "--pid",
            "--mount",
            "--propagation",
            "private",
            "--mount-proc",
            "/bin/sh",
            "-c",
            &format!("{bind_v2}umount -a -l -t fuse.zfs 2>/dev/null; exec \"$@\""),
            "sh",
        ]);
        cmd.arg(bin)
            .arg("--pod-dir")
            .arg(&dir)
            .arg("--grace-period")
            .arg(format!("{}", grace.as_secs_f64()))
            .arg("--log-level")
            .arg("debug")
            .arg("--log-file")
            .arg(&podinit_log);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning unshare podinit");
        let client = Client::for_pod_dir(&dir).with_timeout(Duration::from_secs(20));
        let mut pod = Pod {
            _tmp: tmp,
            dir,
            logs,
            podinit_log,
            child,
            cgroup,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pod.client.info().is_ok() {
                break;
            }
            if let Ok(Some(st)) = pod.child.try_wait() {
                panic!("podinit exited early ({st}):\n{}", pod.podinit_log_text());
            }
            assert!(
                Instant::now() < deadline,
                "podinit did not answer within 10 s:\n{}",
                pod.podinit_log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pod
    }

    fn podinit_log_text(&self) -> String {
        std::fs::read_to_string(&self.podinit_log).unwrap_or_default()
    }

    /// podinit's PID as the host sees it (the only child of unshare).
    fn podinit_host_pid(&self) -> i32 {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("unshare's children");
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("podinit pid")
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("ctrs").join(id)
    }

    /// Writes a busybox container with `process` and optional spec changes.
    fn add_container(&self, id: &str, process: Value, edit: impl FnOnce(&mut Value)) {
        let bundle = self.bundle(id);
        make_rootfs(&bundle.join("rootfs"));
        let mut spec = json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": process,
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
        });
        edit(&mut spec);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).expect("json"),
        )
        .expect("config.json");
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.logs.join(format!("{id}.log"))
    }

    fn open_log(path: &Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log")
    }

    fn create(&self, id: &str) {
        let log = Self::open_log(&self.log_path(id));
        self.client
            .create(id, Some(log.as_fd()))
            .unwrap_or_else(|e| panic!("create {id}: {e}\n{}", self.podinit_log_text()));
    }

    fn run(&self, id: &str) -> u32 {
        self.create(id);
        self.client
            .start(id)
            .unwrap_or_else(|e| panic!("start {id}: {e}\n{}", self.podinit_log_text()))
    }

    fn wait_exit(&self, id: &str) -> ContainerStatus {
        let st = self.client.wait(id, Duration::from_secs(10)).expect("wait");
        assert_eq!(
            st.state,
            ContainerState::Exited,
            "{id} did not exit: {st:?}"
        );
        st
    }

    fn exec(&self, id: &str, args: &[&str], timeout: Duration) -> podinit::ExecResult {
        self.client
            .exec(&ExecRequest {
                id: id.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                timeout_ms: timeout.as_millis() as u64,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("exec {args:?} in {id}: {e}"))
    }

    /// SIGTERMs podinit and waits for it to exit; returns how long that took.
    fn terminate(&mut self) -> Duration {
        let t0 = Instant::now();
        let pid = self.podinit_host_pid();
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = t0 + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t0.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "podinit did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rss(&self) -> u64 {
        self.client.info().expect("info").rss_bytes
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(children) =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))
                && let Some(pid) = children
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
            {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.cgroup.remove();
    }
}

fn sh(script: &str) -> Value {
    json!({"args": ["/bin/sh", "-c", script], "cwd": "/", "env": ["PATH=/bin"],
           "user": {"uid": 0, "gid": 0}})
}

/// (stream, tag, text) of every line of a CRI log file; checks each timestamp's shape.
fn read_log(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let data = std::fs::read(path).unwrap_or_default();
    assert!(
        data.is_empty() || data.ends_with(b"\n"),
        "log does not end with a newline"
    );
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = podinit::crilog::parse_line(l)
                .unwrap_or_else(|| panic!("not a CRI log line: {:?}", String::from_utf8_lossy(l)));
            let ts = p.timestamp.as_bytes();
            assert!(
                ts.len() >= 20
                    && ts[4] == b'-'
                    && ts[10] == b'T'
                    && ts.ends_with(b"Z")
                    && ts.starts_with(b"20"),
                "bad timestamp {}",
                p.timestamp
            );
            assert!(p.tag == "P" || p.tag == "F", "bad tag {}", p.tag);
            (p.stream.to_string(), p.tag.to_string(), p.text.to_vec())
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_are_cri_lines_and_exit_codes_are_recorded() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container(
        "talker",
        sh(
            "echo hello; echo oops >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; \
            echo; printf 'no newline at the end'; exit 3",
        ),
        |_| {},
    );
    pod.add_container("clean", sh("true"), |_| {});
    let pid = pod.run("talker");
    assert!(pid > 1);
    let st = pod.wait_exit("talker");
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.signal, None);
    assert!(st.started_ns >= st.created_ns && st.finished_ns >= st.started_ns);
    assert!(!st.oom_killed);

    let lines = read_log(&pod.log_path("talker"));
    let stdout: Vec<(String, usize)> = lines
        .iter()
        .filter(|l| l.0 == "stdout")
        .map(|l| (l.1.clone(), l.2.len()))
        .collect();
    assert_eq!(
        stdout,
        vec![
            ("F".to_string(), 5),
            ("P".to_string(), 16384),
            ("P".to_string(), 16384),
            ("F".to_string(), 40000 - 2 * 16384),
            ("F".to_string(), 0),
            ("P".to_string(), "no newline at the end".len()),
        ]
    );
    let texts: Vec<&[u8]> = lines.iter().map(|l| l.2.as_slice()).collect();
    assert!(texts.contains(&b"hello".as_slice()));
    assert!(texts.contains(&b"no newline at the end".as_slice()));
    assert!(
        lines
            .iter()
            .filter(|l| l.1 == "P" && l.2.len() == 16384)
            .all(|l| l.2.iter().all(|&b| b == b'x'))
    );
    let stderr: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").collect();
    assert_eq!(stderr.len(), 1);
    assert_eq!(
        (stderr[0].1.as_str(), stderr[0].2.as_slice()),
        ("F", b"oops".as_slice())
    );

    pod.run("clean");
    let st = pod.wait_exit("clean");
    assert_eq!(st.exit_code, Some(0));

    // The record on disk says the same, for a daemon that reads it without podinit.
    let on_disk = podinit::read_status(&pod.dir, "talker").expect("status.json");
    assert_eq!(on_disk.exit_code, Some(3));
    assert_eq!(on_disk.state, ContainerState::Exited);
}

#[test]
fn reopen_log_switches_to_a_new_file() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container(
        "ticker",
        sh("i=0; while true; do echo line$i; i=$((i+1)); sleep 0.02; done"),
        |_| {},
    );
    pod.run("ticker");
    let log = pod.log_path("ticker");
    wait_until("first lines", Duration::from_secs(5), || {
        read_log(&log).len() >= 3
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    let fresh = Pod::open_log(&log);
    pod.client
        .reopen_log("ticker", fresh.as_fd())
        .expect("reopen_log");
    drop(fresh);
    wait_until("lines in the new file", Duration::from_secs(5), || {
        read_log(&log).len() >= 3
    });
    let old_len = std::fs::metadata(&rotated).expect("rotated").len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::metadata(&rotated).expect("rotated").len(),
        old_len,
        "the old file no longer grows"
    );
    let num = |t: &[u8]| -> u64 {
        String::from_utf8_lossy(t)
            .trim_start_matches("line")
            .parse()
            .expect("line number")
    };
    let last_old = read_log(&rotated)
        .last()
        .map(|l| num(&l.2))
        .expect("old lines");
    let first_new = read_log(&log)
        .first()
        .map(|l| num(&l.2))
        .expect("new lines");
    assert_eq!(
        first_new,
        last_old + 1,
        "no line lost or repeated across the switch"
    );

    pod.client.kill("ticker", libc::SIGKILL).expect("kill");
    let st = pod.wait_exit("ticker");
    assert_eq!((st.exit_code, st.signal), (Some(137), Some(9)));
    let again = Pod::open_log(&log);
    let err = pod
        .client
        .reopen_log("ticker", again.as_fd())
        .expect_err("not running");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition));
}

#[test]
fn exec_output_exit_code_timeout_and_lifecycle_errors() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container(
        "app",
        json!({"args": ["sleep", "1000"], "cwd": "/", "env": ["PATH=/bin", "FOO=from-spec"],
               "user": {"uid": 0, "gid": 0}}),
        |_| {},
    );
    pod.run("app");

    let r = pod.exec(
        "app",
        &["sh", "-c", "echo out; echo err >&2; echo $FOO; exit 5"],
        Duration::from_secs(10),
    );
    assert_eq!(r.exit_code, 5);
    assert_eq!(r.stdout, b"out\nfrom-spec\n");
    assert_eq!(r.stderr, b"err\n");
    assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);

    let r = pod
        .client
        .exec(&ExecRequest {
            id: "app".into(),
            args: vec!["sh".into(), "-c".into(), "echo $FOO; id -u".into()],
            env: vec!["FOO=override".into()],
            user: Some(podinit::api::ExecUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![],
            }),
            timeout_ms: 10_000,
            ..Default::default()
        })
        .expect("exec as user");
    assert_eq!(r.stdout, b"override\n1000\n");

    // Outlives its timeout: killed, reported, and promptly.
    let t0 = Instant::now();
    let r = pod.exec("app", &["sleep", "30"], Duration::from_millis(300));
    assert!(r.timed_out);
    assert_eq!((r.exit_code, r.signal), (137, Some(9)));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A background child keeping stdout open does not hold the exec (containerd#9568).
    let t0 = Instant::now();
    let r = pod.exec(
        "app",
        &["sh", "-c", "sleep 30 & echo started"],
        Duration::from_secs(20),
    );
    assert_eq!(
        (r.exit_code, r.stdout.as_slice()),
        (0, b"started\n".as_slice())
    );
    assert!(!r.timed_out);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Output beyond the cap is dropped and flagged.
    let r = pod.exec(
        "app",
        &["sh", "-c", "head -c 17000000 /dev/zero"],
        Duration::from_secs(20),
    );
    assert_eq!(r.stdout.len(), podinit::api::EXEC_OUTPUT_CAP);
    assert!(r.stdout_truncated && !r.stderr_truncated);

    let err = pod
        .client
        .exec(&ExecRequest {
            id: "app".into(),
            args: vec!["not-a-command".into()],
            timeout_ms: 5000,
            ..Default::default()
        })
        .expect_err("missing executable");
    assert_eq!(err.api_kind(), Some(ErrorKind::StartFailed));
    assert!(err.to_string().contains("not-a-command"), "{err}");

    let err = pod
        .client
        .exec(&ExecRequest {
            id: "nope".into(),
            args: vec!["true".into()],
            ..Default::default()
        })
        .expect_err("unknown container");
    assert_eq!(err.api_kind(), Some(ErrorKind::NotFound));

    let err = pod.client.delete("app").expect_err("running");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition));
    let err = pod.client.start("app").expect_err("started twice");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition));
    pod.add_container("other", sh("true"), |_| {});
    pod.create("other");
    let err = pod.client.create("other", None).expect_err("created twice");
    assert_eq!(err.api_kind(), Some(ErrorKind::AlreadyExists));

    // Waiting with a short timeout answers the running state.
    let st = pod
        .client
        .wait("app", Duration::from_millis(100))
        .expect("wait");
    assert_eq!(st.state, ContainerState::Running);

    // `sleep` is PID 1 of its namespace without a SIGTERM handler: the kernel drops SIGTERM
    // from outside (as under runc), SIGKILL always lands.
    pod.client.kill("app", libc::SIGTERM).expect("kill");
    let st = pod
        .client
        .wait("app", Duration::from_millis(300))
        .expect("wait");
    assert_eq!(st.state, ContainerState::Running);
    pod.client.kill("app", libc::SIGKILL).expect("kill");
    let st = pod.wait_exit("app");
    assert_eq!((st.exit_code, st.signal), (Some(137), Some(9)));
    let err = pod
        .client
        .kill("app", libc::SIGKILL)
        .expect_err("not running");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition));
    pod.client.delete("app").expect("delete");
    assert_eq!(
        pod.client.state("app").expect_err("gone").api_kind(),
        Some(ErrorKind::NotFound)
    );
    assert!(
        podinit::read_status(&pod.dir, "app")
            .expect_err("status removed")
            .is_not_found()
    );
}

#[test]
fn containers_see_only_their_own_root_filesystem() {
    let pod = Pod::start(Duration::from_secs(2));
    for id in ["a", "b"] {
        pod.add_container(id, sh("exec sleep 1000"), |_| {});
        std::fs::write(pod.bundle(id).join(format!("rootfs/marker-{id}")), id).expect("marker");
        // A volume staged by the daemon, bound read-only.
        let vol = pod.bundle(id).join("mounts/0");
        std::fs::create_dir_all(&vol).expect("vol");
        std::fs::write(vol.join("data"), format!("volume of {id}\n")).expect("vol data");
        let spec_path = pod.bundle(id).join("config.json");
        let mut spec: Value =
            serde_json::from_slice(&std::fs::read(&spec_path).expect("read")).expect("json");
        spec["mounts"] = json!([{"destination": "/vol", "type": "bind",
            "source": vol, "options": ["rbind", "ro"]}]);
        std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("json")).expect("write");
        pod.run(id);
    }
    let ls = pod.exec("a", &["ls", "/"], Duration::from_secs(10));
    let names: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(names.contains(&"marker-a".to_string()), "{names:?}");
    assert!(!names.contains(&"marker-b".to_string()), "{names:?}");
    let r = pod.exec(
        "a",
        &[
            "sh",
            "-c",
            "cat /vol/data; touch /vol/x 2>/dev/null && echo writable; \
             test -e /marker-b || echo no-b; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
             ls /proc | grep -c '^[0-9]'",
        ],
        Duration::from_secs(10),
    );
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "volume of a");
    assert_eq!(lines[1], "no-b", "{out}");
    // Its own PID namespace: PID 1 is its own main process, and only a handful of processes.
    assert_eq!(lines[2].trim(), "sleep 1000");
    let nprocs: u32 = lines[3].parse().expect("count");
    assert!(nprocs <= 4, "{out}");
    // /dev/shm is the pod's, shared by its containers (the IPC namespace is the pod's too).
    let r = pod.exec(
        "a",
        &["sh", "-c", "echo shared-memory > /dev/shm/hello"],
        Duration::from_secs(10),
    );
    assert_eq!(r.exit_code, 0);
    let r = pod.exec("b", &["cat", "/dev/shm/hello"], Duration::from_secs(10));
    assert_eq!(r.stdout, b"shared-memory\n");
    // The pod directory on the host is not reachable.
    let r = pod.exec(
        "b",
        &[
            "sh",
            "-c",
            &format!(
                "test -e {} && echo visible || echo hidden",
                pod.dir.display()
            ),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.stdout, b"hidden\n");
}

#[test]
fn start_errors_name_the_problem() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container(
        "missing",
        json!({"args": ["/bin/definitely-not-here"], "cwd": "/", "env": ["PATH=/bin"],
               "user": {"uid": 0, "gid": 0}}),
        |_| {},
    );
    pod.create("missing");
    let err = pod.client.start("missing").expect_err("must fail");
    assert_eq!(err.api_kind(), Some(ErrorKind::StartFailed));
    let msg = err.to_string();
    assert!(
        msg.contains("/bin/definitely-not-here") && msg.contains("No such file"),
        "{msg}"
    );
    let st = pod.client.state("missing").expect("state");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(128));
    assert!(
        st.start_error
            .as_deref()
            .is_some_and(|m| m.contains("definitely-not-here"))
    );

    pod.add_container(
        "notinpath",
        json!({"args": ["nosuchtool"], "cwd": "/", "env": ["PATH=/bin"],
               "user": {"uid": 0, "gid": 0}}),
        |_| {},
    );
    pod.create("notinpath");
    let msg = pod
        .client
        .start("notinpath")
        .expect_err("fails")
        .to_string();
    assert!(msg.contains("executable file not found"), "{msg}");

    pod.add_container(
        "badcwd",
        json!({"args": ["true"], "cwd": "/bin/busybox/sub", "env": ["PATH=/bin"],
               "user": {"uid": 0, "gid": 0}}),
        |_| {},
    );
    pod.create("badcwd");
    let msg = pod.client.start("badcwd").expect_err("fails").to_string();
    assert!(msg.contains("cwd"), "{msg}");

    pod.add_container("badtmpfs", sh("true"), |s| {
        s["mounts"] = json!([{"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["size=not-a-size"]}]);
    });
    pod.create("badtmpfs");
    let err = pod.client.start("badtmpfs").expect_err("mount fails");
    assert_eq!(err.api_kind(), Some(ErrorKind::StartFailed));
    assert!(err.to_string().contains("mount /scratch"), "{err}");

    // Problems visible in the spec are refused at create already.
    pod.add_container("badmount", sh("true"), |s| {
        s["mounts"] = json!([{"destination": "/x", "type": "bind",
            "source": "/nonexistent/source", "options": ["rbind"]}]);
    });
    let err = pod.client.create("badmount", None).expect_err("bad mount");
    assert_eq!(err.api_kind(), Some(ErrorKind::InvalidArgument));
    assert!(err.to_string().contains("/nonexistent/source"), "{err}");

    // podinit is unharmed.
    assert!(pod.client.info().is_ok());
}

#[test]
fn dropping_the_client_mid_exec_leaves_podinit_running() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("app", sh("exec sleep 1000"), |_| {});
    pod.run("app");
    {
        let mut conn = UnixStream::connect(pod.dir.join("podinit.sock")).expect("connect");
        conn.write_all(
            br#"{"op":"exec","id":"app","args":["sh","-c","exec sleep 31"],"timeout_ms":0}"#,
        )
        .expect("send");
        conn.write_all(b"\n").expect("send");
        let pid_seen = Instant::now() + Duration::from_secs(5);
        loop {
            let r = pod.exec("app", &["ps"], Duration::from_secs(5));
            if String::from_utf8_lossy(&r.stdout).contains("sleep 31") {
                break;
            }
            assert!(Instant::now() < pid_seen, "exec never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        assert!(conn.read(&mut buf).is_err(), "no reply while the exec runs");
    }
    // The connection is gone: podinit answers, and the abandoned exec was killed.
    let info = pod.client.info().expect("podinit alive");
    assert_eq!(info.pid, 1);
    wait_until("the abandoned exec to die", Duration::from_secs(5), || {
        let r = pod.exec("app", &["ps"], Duration::from_secs(5));
        !String::from_utf8_lossy(&r.stdout).contains("sleep 31")
    });
    assert_eq!(
        pod.client.state("app").expect("state").state,
        ContainerState::Running
    );
}

#[test]
fn sigterm_stops_containers_and_leaves_final_status_files() {
    let grace = Duration::from_millis(1500);
    let mut pod = Pod::start(grace);
    pod.add_container(
        "polite",
        sh("trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done"),
        |_| {},
    );
    pod.add_container(
        "stubborn",
        sh("trap '' TERM; while true; do sleep 0.05; done"),
        |_| {},
    );
    // Shares the pod's PID namespace: its stop signal is the annotated one.
    pod.add_container(
        "quitter",
        sh("trap 'exit 7' QUIT; while true; do sleep 0.05; done"),
        |s| {
            s["linux"]["namespaces"] = json!([{"type": "mount"}]);
            s["annotations"] = json!({podinit::api::STOP_SIGNAL_ANNOTATION: "SIGQUIT"});
        },
    );
    pod.add_container("idle", sh("true"), |_| {});
    for id in ["polite", "stubborn", "quitter"] {
        pod.run(id);
    }
    pod.create("idle");
    // Let the traps be installed.
    std::thread::sleep(Duration::from_millis(200));

    let took = pod.terminate();
    assert!(
        took >= grace,
        "the stubborn one got its grace period ({took:?})"
    );
    assert!(took < grace + Duration::from_secs(5), "{took:?}");

    let st = |id| podinit::read_status(&pod.dir, id).expect("status.json");
    let polite = st("polite");
    assert_eq!(
        (polite.state, polite.exit_code),
        (ContainerState::Exited, Some(0))
    );
    let stubborn = st("stubborn");
    assert_eq!(
        (stubborn.state, stubborn.exit_code, stubborn.signal),
        (ContainerState::Exited, Some(137), Some(9))
    );
    assert_eq!(st("quitter").exit_code, Some(7));
    assert_eq!(st("idle").state, ContainerState::Created);
    assert!(
        read_log(&pod.log_path("polite"))
            .iter()
            .any(|l| l.2 == b"bye")
    );
    assert!(!pod.dir.join("podinit.sock").exists(), "socket removed");
    assert!(
        pod.cgroup.leftovers().is_empty(),
        "container cgroups left behind: {:?}",
        pod.cgroup.leftovers()
    );
    let client_err = pod.client.info().expect_err("podinit gone");
    assert!(client_err.is_unavailable(), "{client_err}");
}

#[test]
fn memory_limit_oom_kill_is_reported() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container(
        "hog",
        sh("dd if=/dev/zero of=/dev/null bs=64M count=1"),
        |s| {
            s["linux"]["resources"] = json!({"memory": {"limit": 32 * MIB, "swap": 32 * MIB}});
        },
    );
    pod.run("hog");
    let st = pod.wait_exit("hog");
    assert_eq!((st.exit_code, st.signal), (Some(137), Some(9)), "{st:?}");
    assert!(st.oom_killed, "{st:?}");
}

#[test]
fn terminal_output_is_logged_as_stdout() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("tty", sh("tty; echo from-tty >&2"), |s| {
        s["process"]["terminal"] = json!(true);
    });
    pod.run("tty");
    assert_eq!(pod.wait_exit("tty").exit_code, Some(0));
    let lines = read_log(&pod.log_path("tty"));
    let texts: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l.0.clone(), String::from_utf8_lossy(&l.2).into_owned()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("stdout".to_string(), "/dev/pts/0".to_string()),
            ("stdout".to_string(), "from-tty".to_string()),
        ]
    );
}

#[test]
fn podinit_footprint_and_latency() {
    let pod = Pod::start(Duration::from_secs(2));
    let idle = pod.rss();
    for id in ["one", "two"] {
        pod.add_container(id, sh("while true; do echo tick; sleep 0.1; done"), |s| {
            s["linux"]["resources"] = json!({"memory": {"limit": 64 * MIB}, "pids": {"limit": 64}});
        });
        pod.run(id);
    }
    let r = pod.exec("one", &["echo", "hi"], Duration::from_secs(5));
    assert_eq!(r.stdout, b"hi\n");
    std::thread::sleep(Duration::from_millis(300));
    let busy = pod.rss();
    eprintln!(
        "podinit RSS: idle {:.2} MiB, with 2 running containers {:.2} MiB",
        idle as f64 / MIB as f64,
        busy as f64 / MIB as f64
    );
    assert!(idle < 3 * MIB, "idle RSS {idle}");
    assert!(busy < 3 * MIB, "RSS with 2 containers {busy}");

    // Latencies through the client (rootfs preparation excluded), 10 rounds each.
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut create = Vec::new();
    let mut start = Vec::new();
    let mut exec = Vec::new();
    for i in 0..10 {
        let id = format!("lat{i}");
        pod.add_container(&id, sh("exec sleep 1000"), |_| {});
        let t0 = Instant::now();
        pod.create(&id);
        let t1 = Instant::now();
        pod.client.start(&id).expect("start");
        let t2 = Instant::now();
        pod.exec(&id, &["true"], Duration::from_secs(5));
        let t3 = Instant::now();
        create.push(t1 - t0);
        start.push(t2 - t1);
        exec.push(t3 - t2);
        pod.client.kill(&id, libc::SIGKILL).expect("kill");
        pod.wait_exit(&id);
        pod.client.delete(&id).expect("delete");
    }
    eprintln!(
        "podinit latency (median of 10): create {:?}, start {:?}, exec of `true` {:?}",
        median(create),
        median(start),
        median(exec)
    );
}

/// A loop device over a small file of ours filled with `fill`, detached on drop.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(fill: u8) -> Loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![fill; 64 * 1024]).expect("image");
        let out = Command::new("/sbin/losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .expect("losetup (Debian package mount)");
        assert!(out.status.success(), "losetup: {out:?}");
        Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            _dir: dir,
        }
    }

    fn numbers(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).expect("loop dev").rdev();
        (libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("/sbin/losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
    }
}

/// podinit's device policy on cgroup v2 (a BPF program per container), and on the host's own
/// hierarchy (v1 devices files here): a container may mknod a block device of the node but
/// not open it; /dev/null works; one granted the device read-only by its spec reads it and
/// cannot write it; one allowed everything opens it.
#[test]
fn device_policy_on_both_cgroup_versions() {
    let lo = Loop::new(b'L');
    let (major, minor) = lo.numbers();
    for force_v2 in [true, false] {
        let pod = Pod::start_with(Duration::from_secs(2), force_v2);
        let mode = pod.client.info().expect("info").cgroup;
        if force_v2 {
            assert_eq!(mode, "v2");
        }
        pod.add_container("plain", sh("exec sleep 1000"), |_| {});
        pod.run("plain");
        let r = pod.exec(
            "plain",
            &[
                "sh",
                "-c",
                &format!(
                    "mknod /dev/l b {major} {minor} && echo made && echo x > /dev/null && \
                     head -c 1 /dev/l"
                ),
            ],
            Duration::from_secs(5),
        );
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            "made\n",
            "{mode}: {r:?}"
        );
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
            "{mode}: {r:?}"
        );

        pod.add_container("granted", sh("exec sleep 1000"), |s| {
            s["linux"]["devices"] = json!([{"path": "/dev/xvda", "type": "b",
                                             "major": major, "minor": minor}]);
            s["linux"]["resources"] = json!({"devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": major, "minor": minor, "access": "r"}]});
        });
        pod.run("granted");
        let r = pod.exec(
            "granted",
            &["head", "-c", "4", "/dev/xvda"],
            Duration::from_secs(5),
        );
        assert_eq!(r.stdout, b"LLLL", "{mode}: {r:?}");
        let r = pod.exec(
            "granted",
            &["dd", "if=/dev/zero", "of=/dev/xvda", "count=1"],
            Duration::from_secs(5),
        );
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
            "{mode}: {r:?}"
        );

        pod.add_container("open", sh("exec sleep 1000"), |s| {
            s["linux"]["resources"] = json!({"devices": [{"allow": true, "access": "rwm"}]});
        });
        pod.run("open");
        let r = pod.exec(
            "open",
            &[
                "sh",
                "-c",
                &format!("mknod /dev/l b {major} {minor} && head -c 4 /dev/l"),
            ],
            Duration::from_secs(5),
        );
        assert_eq!(r.stdout, b"LLLL", "{mode}: {r:?}");
    }
}

// ---- streaming: exec_stream, attach, connect (CRI Exec, Attach, PortForward) ----

/// Reads the second reply line of a streaming session.
fn stream_end<T: serde::de::DeserializeOwned>(
    conn: &mut UnixStream,
    mut rest: Vec<u8>,
    timeout: Duration,
) -> T {
    conn.set_read_timeout(Some(timeout)).expect("timeout");
    while !rest.contains(&b'\n') {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).expect("reading the end of the stream");
        assert!(n > 0, "podinit closed the stream without its end");
        rest.extend_from_slice(&buf[..n]);
    }
    let nl = rest.iter().position(|&b| b == b'\n').expect("line");
    podinit::client::decode_reply_line(&rest[..nl]).expect("end reply")
}

fn pipe_pair() -> (std::fs::File, std::fs::File) {
    let (r, w) = podinit::sys::pipe().expect("pipe");
    (std::fs::File::from(r), std::fs::File::from(w))
}

fn read_to_end_within(mut f: impl Read + std::os::fd::AsRawFd, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "output did not end within {timeout:?}");
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        match f.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // EIO: a pty master whose slave side closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return out,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn exec_stream_pipes_stdin_close_and_exit_codes() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("app", sh("exec sleep 1000"), |_| {});
    pod.run("app");
    let (in_r, mut in_w) = pipe_pair();
    let (out_r, out_w) = pipe_pair();
    let (err_r, err_w) = pipe_pair();
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat; echo to-err >&2; exit 3".into(),
        ],
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut s = pod
        .client
        .exec_stream(&req, &[in_r.as_fd(), out_w.as_fd(), err_w.as_fd()])
        .expect("exec_stream");
    drop((in_r, out_w, err_w));
    assert!(!s.started.tty && s.fds.is_empty());
    in_w.write_all(b"through stdin\n").expect("stdin");
    // Closing stdin ends `cat`; the command goes on to its exit.
    drop(in_w);
    let out = read_to_end_within(out_r, Duration::from_secs(10));
    let err = read_to_end_within(err_r, Duration::from_secs(10));
    assert_eq!(out, b"through stdin\n");
    assert_eq!(err, b"to-err\n");
    let exit: podinit::api::ExecExit = stream_end(
        &mut s.conn,
        std::mem::take(&mut s.rest),
        Duration::from_secs(10),
    );
    assert_eq!((exit.exit_code, exit.signal), (3, None));

    // Only stdout asked for: stdin is /dev/null, stderr goes nowhere.
    let (out_r, out_w) = pipe_pair();
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat; echo done; echo x >&2".into(),
        ],
        stdout: true,
        ..Default::default()
    };
    let mut s = pod
        .client
        .exec_stream(&req, &[out_w.as_fd()])
        .expect("exec_stream");
    drop(out_w);
    assert_eq!(
        read_to_end_within(out_r, Duration::from_secs(10)),
        b"done\n"
    );
    let exit: podinit::api::ExecExit = stream_end(
        &mut s.conn,
        std::mem::take(&mut s.rest),
        Duration::from_secs(10),
    );
    assert_eq!(exit.exit_code, 0);

    // A missing executable fails the start with the reason.
    let (out_r, out_w) = pipe_pair();
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec!["no-such-tool".into()],
        stdout: true,
        ..Default::default()
    };
    let err = pod
        .client
        .exec_stream(&req, &[out_w.as_fd()])
        .expect_err("missing executable");
    drop((out_r, out_w));
    assert_eq!(err.api_kind(), Some(ErrorKind::StartFailed), "{err}");
    assert!(err.to_string().contains("no-such-tool"), "{err}");

    // A wrong number of fds is refused.
    let err = pod
        .client
        .exec_stream(
            &podinit::api::ExecStreamRequest {
                id: "app".into(),
                args: vec!["true".into()],
                stdin: true,
                stdout: true,
                ..Default::default()
            },
            &[],
        )
        .expect_err("fds missing");
    assert_eq!(err.api_kind(), Some(ErrorKind::InvalidArgument), "{err}");
}

#[test]
fn exec_stream_killed_reports_signal_and_dropped_session_kills_the_command() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("app", sh("exec sleep 1000"), |_| {});
    pod.run("app");
    let (out_r, out_w) = pipe_pair();
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec!["sh".into(), "-c".into(), "echo $$; exec sleep 41".into()],
        stdout: true,
        ..Default::default()
    };
    let mut s = pod
        .client
        .exec_stream(&req, &[out_w.as_fd()])
        .expect("exec_stream");
    drop(out_w);
    let mut line = Vec::new();
    let mut r = std::io::BufReader::new(out_r);
    std::io::BufRead::read_until(&mut r, b'\n', &mut line).expect("pid");
    let pid: i32 = String::from_utf8_lossy(&line).trim().parse().expect("pid");
    // Killed from inside the container: the exit says so.
    let k = pod.exec(
        "app",
        &["kill", "-9", &pid.to_string()],
        Duration::from_secs(5),
    );
    assert_eq!(k.exit_code, 0, "{k:?}");
    let exit: podinit::api::ExecExit = stream_end(
        &mut s.conn,
        std::mem::take(&mut s.rest),
        Duration::from_secs(10),
    );
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));

    // The daemon dropping the session kills what it ran.
    let (out_r, out_w) = pipe_pair();
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec!["sh".into(), "-c".into(), "exec sleep 42".into()],
        stdout: true,
        ..Default::default()
    };
    let s = pod
        .client
        .exec_stream(&req, &[out_w.as_fd()])
        .expect("exec_stream");
    drop(out_w);
    let running = |pat: &str| {
        let r = pod.exec("app", &["ps"], Duration::from_secs(5));
        String::from_utf8_lossy(&r.stdout).contains(pat)
    };
    assert!(running("sleep 42"));
    drop(s);
    wait_until("the dropped exec to die", Duration::from_secs(5), || {
        !running("sleep 42")
    });
    drop(out_r);
}

#[test]
fn exec_stream_on_a_terminal_sizes_and_resizes_it() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("app", sh("exec sleep 1000"), |_| {});
    pod.run("app");
    let req = podinit::api::ExecStreamRequest {
        id: "app".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            // Reports its size, then again on SIGWINCH, and leaves on "q".
            // (`read` returns early on the signal, so the loop does not end on it.)
            "stty size; tty; trap 'stty size' WINCH; echo armed; while true; do read l; [ \"$l\" = q ] && exit 7; done".into(),
        ],
        tty: true,
        term_size: Some(podinit::api::TermSize { rows: 31, cols: 101 }),
        ..Default::default()
    };
    let mut s = pod.client.exec_stream(&req, &[]).expect("exec_stream");
    assert!(s.started.tty);
    let master = std::fs::File::from(s.fds.pop().expect("pty master"));
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str, master: &std::fs::File| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} in {:?}",
                String::from_utf8_lossy(&seen)
            );
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(master),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } <= 0 {
                continue;
            }
            let n = (&*master).read(&mut buf).expect("read pty");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    wait_for("31 101\r\n", &master);
    wait_for("/dev/pts/", &master);
    wait_for("armed", &master);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
    // SAFETY: TIOCSWINSZ reads a winsize from a live local.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0);
    wait_for("40 132\r\n", &master);
    (&master).write_all(b"q\n").expect("type q");
    let exit: podinit::api::ExecExit = stream_end(
        &mut s.conn,
        std::mem::take(&mut s.rest),
        Duration::from_secs(10),
    );
    assert_eq!(exit.exit_code, 7);
}

#[test]
fn attach_reaches_the_containers_stdin_and_output_and_stdin_once_closes_it() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("shell", sh("echo ready; exec sh"), |s| {
        s["annotations"] = json!({
            podinit::api::STDIN_ANNOTATION: "true",
            podinit::api::STDIN_ONCE_ANNOTATION: "true",
        });
    });
    pod.run("shell");
    wait_until("the first output", Duration::from_secs(5), || {
        !read_log(&pod.log_path("shell")).is_empty()
    });
    let (in_r, mut in_w) = pipe_pair();
    let (out_r, out_w) = pipe_pair();
    let (err_r, err_w) = pipe_pair();
    let req = podinit::api::AttachRequest {
        id: "shell".into(),
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let mut s = pod
        .client
        .attach(&req, &[in_r.as_fd(), out_w.as_fd(), err_w.as_fd()])
        .expect("attach");
    drop((in_r, out_w, err_w));
    assert!(!s.started.tty && s.started.stdin);
    in_w.write_all(b"echo via-attach; echo oops >&2\n")
        .expect("stdin");
    let mut out = std::io::BufReader::new(out_r);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("stdout");
    assert_eq!(line, "via-attach\n");
    let mut err = std::io::BufReader::new(err_r);
    let mut eline = String::new();
    std::io::BufRead::read_line(&mut err, &mut eline).expect("stderr");
    assert_eq!(eline, "oops\n");
    // The log has it too.
    wait_until("the log line", Duration::from_secs(5), || {
        read_log(&pod.log_path("shell"))
            .iter()
            .any(|l| l.2 == b"via-attach")
    });
    // stdin_once: closing the attached stdin closes the container's; sh exits.
    drop(in_w);
    let end: podinit::api::AttachEnded = stream_end(
        &mut s.conn,
        std::mem::take(&mut s.rest),
        Duration::from_secs(10),
    );
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(pod.wait_exit("shell").exit_code, Some(0));

    // Attaching to a container that is not running is refused.
    let err = pod
        .client
        .attach(
            &podinit::api::AttachRequest {
                id: "shell".into(),
                stdout: true,
                ..Default::default()
            },
            &[pipe_pair().1.as_fd()],
        )
        .expect_err("exited");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition));
}

#[test]
fn attach_to_a_terminal_container_and_detach_leaves_it_running() {
    let pod = Pod::start(Duration::from_secs(2));
    pod.add_container("tty", sh("exec sh"), |s| {
        s["process"]["terminal"] = json!(true);
        s["annotations"] = json!({podinit::api::STDIN_ANNOTATION: "true"});
    });
    pod.run("tty");
    for round in 0..2 {
        let (in_r, mut in_w) = pipe_pair();
        let (out_r, out_w) = pipe_pair();
        let req = podinit::api::AttachRequest {
            id: "tty".into(),
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let s = pod
            .client
            .attach(&req, &[in_r.as_fd(), out_w.as_fd()])
            .expect("attach");
        drop((in_r, out_w));
        assert!(s.started.tty);
        assert_eq!(s.fds.len(), 1, "a pty master for resizing");
        in_w.write_all(format!("echo round-$((40+{round}))\n").as_bytes())
            .expect("type");
        let mut out = std::io::BufReader::new(out_r);
        let want = format!("round-{}", 40 + round);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).expect("output");
            if line.trim_end() == want {
                break;
            }
            assert!(Instant::now() < deadline, "no {want}");
        }
        // Detaching (dropping the session) leaves the container running.
        drop(s);
        drop(in_w);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pod.client.state("tty").expect("state").state,
            ContainerState::Running
        );
    }
}

#[test]
fn connect_hands_over_a_socket_to_a_loopback_port() {
    let pod = Pod::start(Duration::from_secs(2));
    // podinit shares the test's network namespace here: a listener of the test stands in
    // for a server in the pod.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let fd = pod.client.connect_port(port).expect("connect");
    let mut sock = std::net::TcpStream::from(fd);
    sock.set_nonblocking(false).expect("blocking");
    let (mut peer, _) = listener.accept().expect("accept");
    sock.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    peer.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
    peer.write_all(b"pong").expect("write");
    sock.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"pong");
    drop(listener);
    // Nothing listens there now.
    let err = pod.client.connect_port(port).expect_err("refused");
    assert_eq!(err.api_kind(), Some(ErrorKind::FailedPrecondition), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
