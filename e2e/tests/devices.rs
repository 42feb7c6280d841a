//! Device control: podinit's cgroup v2 device program on a real cgroup2 hierarchy (this host's
//! hybrid `unified` mount, or one the test mounts), and through the real daemon and LXC: the
//! default policy (a root container may mknod the node's disk but not open it), CRI devices
//! with their permissions, privileged containers with the host's devices, refused requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use podinit::devices::{DevicePolicy, Rule, bpf, ebpf};

/// A cgroup2 hierarchy: the host's (v2 or hybrid), else a private mount the guard removes.
struct Cgroup2 {
    root: PathBuf,
    _mount: Option<tempfile::TempDir>,
}

impl Cgroup2 {
    fn find_or_mount() -> Cgroup2 {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            let Some((l, r)) = line.split_once(" - ") else {
                continue;
            };
            if r.starts_with("cgroup2 ") {
                let mp = l.split(' ').nth(4).unwrap();
                return Cgroup2 {
                    root: PathBuf::from(mp),
                    _mount: None,
                };
            }
        }
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("cgroup2"),
            dir.path(),
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        Cgroup2 {
            root: dir.path().to_path_buf(),
            _mount: Some(dir),
        }
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        if let Some(d) = &self._mount {
            let _ = nix::mount::umount2(d.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A test cgroup removed on drop (after its processes are gone).
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A tmpfs of our own for device nodes (a shared /tmp or /dev/shm may be `nodev`).
struct NodeDir(tempfile::TempDir);

impl NodeDir {
    fn new() -> NodeDir {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("mode=700"),
        )
        .unwrap();
        NodeDir(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Opens each node from a shell moved into `cgroup` first; returns each open's stderr ("" when
/// it worked). `mode` is `r` or `w`.
fn open_in(cgroup: &Path, tries: &[(&Path, &str)]) -> Vec<String> {
    let mut script = format!("echo $$ > {}/cgroup.procs || exit 99\n", cgroup.display());
    for (node, mode) in tries {
        let redir = if *mode == "w" {
            format!("exec 3>{}", node.display())
        } else {
            format!("exec 3<{}", node.display())
        };
        // A subshell per node: its redirection error is reported, the loop goes on.
        script.push_str(&format!("( {redir} ) 2>&1 | tr -d '\\n'; echo\n"));
    }
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The default policy's program, loaded into the kernel (so the verifier accepts it) and
/// attached to a cgroup: a process there can use /dev/null but cannot open a node of the
/// host's disk it made itself, nor a char device outside the defaults; mknod stays allowed.
/// A second, stricter program attached below must hold as well (BPF_F_ALLOW_MULTI).
#[test]
fn device_program_on_a_real_cgroup() {
    let cg2 = Cgroup2::find_or_mount();
    let dir = TestCgroup(
        cg2.root
            .join(format!("pvecri-devtest-{}", std::process::id())),
    );
    std::fs::create_dir(&dir.0).unwrap();
    let policy = DevicePolicy::from_rules(&[]).unwrap();
    let prog = bpf::load(&ebpf::program(&policy)).expect("the verifier accepts the program");
    let fd = std::fs::File::open(&dir.0).unwrap();
    bpf::attach(prog.as_fd(), fd.as_fd()).unwrap();

    let nodes = NodeDir::new();
    let disk = nodes.path().join("disk");
    let kmsg = nodes.path().join("kmsg");
    // Made outside the cgroup; the cgroup decides at open time.
    nix::sys::stat::mknod(
        &disk,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(254, 0),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &kmsg,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 11),
    )
    .unwrap();
    let got = open_in(
        &dir.0,
        &[
            (Path::new("/dev/null"), "w"),
            (Path::new("/dev/zero"), "r"),
            (&disk, "r"),
            (&kmsg, "r"),
        ],
    );
    assert_eq!(got[0], "", "/dev/null: {got:?}");
    assert_eq!(got[1], "", "/dev/zero: {got:?}");
    assert!(got[2].contains("Operation not permitted"), "disk: {got:?}");
    assert!(got[3].contains("Operation not permitted"), "kmsg: {got:?}");

    // mknod is allowed by the program (c/b *:* m).
    let script = format!(
        "echo $$ > {}/cgroup.procs && mknod {}/made b 254 0 && echo made",
        dir.0.display(),
        nodes.path().display()
    );
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "made",
        "{out:?}"
    );
    assert!(
        std::fs::symlink_metadata(nodes.path().join("made"))
            .unwrap()
            .file_type()
            .is_block_device()
    );

    // A child with a program that also refuses /dev/zero: both programs apply.
    let child = TestCgroup(dir.0.join("child"));
    std::fs::create_dir(&child.0).unwrap();
    let mut stricter = DevicePolicy::from_rules(&[]).unwrap();
    stricter
        .apply(&Rule {
            allow: false,
            what: Some(podinit::devices::Match {
                typ: podinit::devices::DevType::Char,
                major: Some(1),
                minor: Some(5),
            }),
            // Not m: that would punch a hole in `c *:* m`.
            access: podinit::devices::Access::parse("rw").unwrap(),
        })
        .unwrap();
    let prog2 = bpf::load(&ebpf::program(&stricter)).unwrap();
    let fd2 = std::fs::File::open(&child.0).unwrap();
    bpf::attach(prog2.as_fd(), fd2.as_fd()).unwrap();
    let got = open_in(
        &child.0,
        &[
            (Path::new("/dev/null"), "w"),
            (Path::new("/dev/zero"), "r"),
            (&disk, "r"),
        ],
    );
    assert_eq!(got[0], "", "{got:?}");
    assert!(got[1].contains("Operation not permitted"), "{got:?}");
    assert!(got[2].contains("Operation not permitted"), "{got:?}");

    // An allow-all program below does not lift the parent's refusal.
    let open = TestCgroup(dir.0.join("open"));
    std::fs::create_dir(&open.0).unwrap();
    let prog3 = bpf::load(&ebpf::program(&DevicePolicy::allow_all())).unwrap();
    let fd3 = std::fs::File::open(&open.0).unwrap();
    bpf::attach(prog3.as_fd(), fd3.as_fd()).unwrap();
    let got = open_in(&open.0, &[(&disk, "r"), (Path::new("/dev/zero"), "r")]);
    assert!(got[0].contains("Operation not permitted"), "{got:?}");
    assert_eq!(got[1], "", "{got:?}");
    drop((open, child));
}

// ---- through the daemon ----

use e2e::pods::{PodEnv, Store, container_config, exec, exec_ok, wait_container_state};
use k8s_cri::v1::{ContainerState, Device, LinuxContainerConfig, LinuxContainerSecurityContext};
use tonic::Code;

const RUNNING: std::time::Duration = std::time::Duration::from_secs(20);

/// A loop device over a 1 MiB file of ours, detached on drop.
struct Loop {
    dev: PathBuf,
    file: PathBuf,
    _dir: tempfile::TempDir,
    /// The node's mode before [`Loop::open_to_all`].
    old_mode: std::cell::Cell<Option<u32>>,
}

impl Loop {
    fn new(fill: u8) -> Loop {
        e2e::cmd::require_program("/sbin/losetup", "mount").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![fill; 1 << 20]).unwrap();
        let out = e2e::cmd::run(
            Command::new("/sbin/losetup")
                .args(["--find", "--show"])
                .arg(&file),
        )
        .unwrap();
        Loop {
            dev: PathBuf::from(out.trim()),
            file,
            _dir: dir,
            old_mode: std::cell::Cell::new(None),
        }
    }
}

impl Loop {
    fn numbers(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev), libc::minor(rdev))
    }
}

impl Loop {
    /// Mode 0666 until drop (the node is ours while the loop device is).
    fn open_to_all(&self) {
        use std::os::unix::fs::PermissionsExt;
        let old = std::fs::metadata(&self.dev).unwrap().permissions().mode() & 0o7777;
        self.old_mode.set(Some(old));
        std::fs::set_permissions(&self.dev, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.old_mode.get() {
            let _ = std::fs::set_permissions(&self.dev, std::fs::Permissions::from_mode(mode));
        }
        let _ = Command::new("/sbin/losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
    }
}

fn with_linux(
    mut cfg: k8s_cri::v1::ContainerConfig,
    sc: LinuxContainerSecurityContext,
) -> k8s_cri::v1::ContainerConfig {
    cfg.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    cfg
}

/// ExecSync of `sh -c SCRIPT` whatever its exit; stdout and stderr together.
async fn sh_out(rt: &mut e2e::cri_client::RuntimeClient, id: &str, script: &str) -> String {
    let r = exec(rt, id, &["sh", "-c", script], 30).await.unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    )
}

/// An ordinary container (root, containerd's default capabilities, CAP_MKNOD among them) may
/// make a node of a disk of the node (a loop device standing in for it: this machine's own
/// sandbox refuses everyone its real disk) but not open it, nor a char device outside runc's
/// defaults (`/dev/kmsg`); /dev/null, zero, full, random and urandom work. A privileged
/// container next to it, in the same pod CT, opens the same nodes: it is the container's device
/// cgroup that refuses, not the CT nor the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_refuses_the_nodes_disk() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("devices-default");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let disk = Loop::new(b'D');
    let (major, minor) = disk.numbers();
    // The control: this test itself can open both.
    for node in [&disk.dev, Path::new("/dev/kmsg")] {
        std::fs::File::open(node).unwrap_or_else(|e| panic!("{}: {e}", node.display()));
    }

    let id = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("plain", &env.images.one_layer, &["sleep", "3600"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let made = exec_ok(
        &mut rt,
        &id,
        &format!("mknod /dev/hostdisk b {major} {minor} && mknod /dev/kmsg2 c 1 11 && echo made"),
    )
    .await
    .unwrap();
    assert_eq!(made.trim(), "made");
    for script in [
        "dd if=/dev/hostdisk of=/dev/null bs=512 count=1",
        "dd if=/dev/zero of=/dev/hostdisk bs=512 count=1 seek=100000000",
        "cat /dev/kmsg2",
    ] {
        let out = sh_out(&mut rt, &id, script).await;
        assert!(out.contains("Operation not permitted"), "{script}: {out}");
    }
    let out = exec_ok(
        &mut rt,
        &id,
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c \
         && head -c 4 /dev/random | wc -c && (echo x > /dev/full) 2>&1; true",
    )
    .await
    .unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["4", "4", "4", "sh: write error: No space left on device"],
        "{out}"
    );
    // Only the usual nodes: none of the node's devices came along.
    let listing = exec_ok(&mut rt, &id, "ls /dev").await.unwrap();
    assert!(!listing.contains("loop"), "{listing}");

    let privileged = with_linux(
        container_config("privileged", &env.images.one_layer, &["sleep", "3600"]),
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let pid = env
        .run_container(&mut rt, &pod_id, &pod, privileged)
        .await
        .unwrap();
    wait_container_state(&mut rt, &pid, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let read = exec_ok(
        &mut rt,
        &pid,
        &format!(
            "mknod /dev/hostdisk2 b {major} {minor} && head -c 4 /dev/hostdisk2 && \
             mknod /dev/kmsg3 c 1 11 && dd if=/dev/kmsg3 bs=1024 count=1 2>/dev/null | wc -c"
        ),
    )
    .await
    .unwrap();
    let (head, rest) = read.split_at(4);
    assert_eq!(head, "DDDD");
    assert_ne!(rest.trim(), "0", "{read}");
}

/// CRI devices (as a device plugin asks for them): a loop device with `rw` at another path, a
/// second one with `r` only, and a directory of nodes. The container reads and writes the
/// first (the host sees the write in the backing file), reads but cannot write the second, and
/// other loop devices of the node stay closed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_devices_with_their_permissions() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("devices-cri");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let rw = Loop::new(0);
    let ro = Loop::new(b'R');
    let other = Loop::new(b'O');

    let mut cfg = container_config("with-devices", &env.images.one_layer, &["sleep", "3600"]);
    cfg.devices = vec![
        Device {
            container_path: "/dev/xvda".into(),
            host_path: rw.dev.display().to_string(),
            permissions: "rwm".into(),
        },
        Device {
            container_path: "/dev/disks/ro".into(),
            host_path: ro.dev.display().to_string(),
            permissions: "r".into(),
        },
    ];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let ls = exec_ok(&mut rt, &id, "ls -l /dev/xvda /dev/disks/ro")
        .await
        .unwrap();
    let (maj, min) = rw.numbers();
    assert!(
        ls.lines().any(|l| l.starts_with('b')
            && l.contains(&format!("{maj},"))
            && l.contains(&format!(" {min} "))
            && l.ends_with("/dev/xvda")),
        "{ls}"
    );

    exec_ok(
        &mut rt,
        &id,
        "printf pvecri-was-here | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync 2>/dev/null",
    )
    .await
    .unwrap();
    let back = std::fs::read(&rw.file).unwrap();
    assert!(back.starts_with(b"pvecri-was-here"), "{:?}", &back[..20]);

    let head = exec_ok(&mut rt, &id, "head -c 8 /dev/disks/ro")
        .await
        .unwrap();
    assert_eq!(head, "RRRRRRRR");
    let out = sh_out(
        &mut rt,
        &id,
        "dd if=/dev/zero of=/dev/disks/ro bs=512 count=1 conv=fsync",
    )
    .await;
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(std::fs::read(&ro.file).unwrap()[0], b'R');

    // Another loop device of the node, made by hand in the container: closed.
    let (maj, min) = other.numbers();
    let out = sh_out(
        &mut rt,
        &id,
        &format!("mknod /dev/other b {maj} {min} && head -c 1 /dev/other"),
    )
    .await;
    assert!(out.contains("Operation not permitted"), "{out}");
}

/// A privileged container gets every device node of the node's /dev (as containerd gives
/// them) and may open them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_containers_get_the_nodes_devices() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("devices-privileged");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let disk = Loop::new(b'P');

    let cfg = with_linux(
        container_config("privileged", &env.images.one_layer, &["sleep", "3600"]),
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    // Every char and block device directly in the node's /dev, with its numbers.
    let mut want = Vec::new();
    for e in std::fs::read_dir("/dev").unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = meta.file_type();
        if !(ft.is_char_device() || ft.is_block_device())
            || ["console", "ptmx"].contains(&name.as_str())
        {
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        want.push(format!(
            "{name} {:x}:{:x}",
            libc::major(meta.rdev()),
            libc::minor(meta.rdev())
        ));
    }
    want.sort();
    let got = exec_ok(
        &mut rt,
        &id,
        "cd /dev && for f in *; do if [ -b $f ] || [ -c $f ]; then stat -c '%n %t:%T' $f; fi; done",
    )
    .await
    .unwrap();
    let got: Vec<&str> = got.lines().collect();
    for w in &want {
        assert!(
            got.contains(&w.as_str()),
            "{w} missing in the container: {got:?}"
        );
    }
    // /dev/ptmx stays the link to the container's own devpts.
    let ptmx = exec_ok(&mut rt, &id, "readlink /dev/ptmx").await.unwrap();
    assert_eq!(ptmx.trim(), "pts/ptmx");
    let name = disk.dev.file_name().unwrap().to_string_lossy().into_owned();
    let head = exec_ok(&mut rt, &id, &format!("head -c 4 /dev/{name}"))
        .await
        .unwrap();
    assert_eq!(head, "PPPP");
}

/// Devices that are not on the node, or are no devices, refuse the create with the path
/// named, and nothing of the container is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_devices_are_refused() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("devices-bad");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let plain = tempfile::NamedTempFile::new().unwrap();
    let plain_path = plain.path().display().to_string();
    for (host, perms, code, needle) in [
        (
            "/dev/pvecri-no-such-device",
            "rw",
            Code::NotFound,
            "/dev/pvecri-no-such-device",
        ),
        (
            plain_path.as_str(),
            "rw",
            Code::InvalidArgument,
            "not a device node",
        ),
        ("/dev/null", "rx", Code::InvalidArgument, "permissions"),
    ] {
        let mut cfg = container_config("bad", &env.images.one_layer, &["true"]);
        cfg.devices = vec![Device {
            container_path: "/dev/x".into(),
            host_path: host.into(),
            permissions: perms.into(),
        }];
        let err = env
            .create_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .expect_err(host);
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), code, "{host}: {status:?}");
        assert!(status.message().contains(needle), "{host}: {status:?}");
        assert!(status.message().contains(host), "{host}: {status:?}");
    }
    let ctrs = env.pod_dir(&pod_id).join("ctrs");
    let left = std::fs::read_dir(&ctrs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

/// In a pod with its own user namespace (`hostUsers: false`) nothing may mknod: CRI devices
/// are bound into the container instead, as runc binds them, with the host's owner and mode
/// (devtmpfs cannot be idmapped), so the test's loop devices are made 0666 as device plugins'
/// nodes usually are. The daemon confines the container's device cgroup from the host
/// (podinit may not there): the `r` device reads and refuses writes, the `rw` one takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_pods_get_their_devices_bound_and_confined() {
    use k8s_cri::v1::{
        IdMapping, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
        NamespaceOption, UserNamespace,
    };
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let host = 65_536 * (2 + rand::random::<u32>() % 1000);
    let map = |host_id| {
        vec![IdMapping {
            host_id,
            container_id: 0,
            length: 65_536,
        }]
    };
    let mut pod = env.pod_config("devices-userns");
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: map(host),
                    gids: map(host),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let rw = Loop::new(b'W');
    let ro = Loop::new(b'R');
    for l in [&rw, &ro] {
        l.open_to_all();
    }
    let mut cfg = container_config("with-devices", &env.images.one_layer, &["sleep", "3600"]);
    cfg.devices = vec![
        Device {
            container_path: "/dev/xvda".into(),
            host_path: rw.dev.display().to_string(),
            permissions: "rw".into(),
        },
        Device {
            container_path: "/dev/xvdb".into(),
            host_path: ro.dev.display().to_string(),
            permissions: "r".into(),
        },
    ];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let maps = exec_ok(&mut rt, &id, "cat /proc/self/uid_map")
        .await
        .unwrap();
    assert!(maps.contains(&host.to_string()), "{maps}");
    let ls = exec_ok(&mut rt, &id, "ls -ln /dev/xvda /dev/xvdb")
        .await
        .unwrap();
    assert!(
        ls.lines().all(|l| l.starts_with('b')),
        "the host's nodes: {ls}"
    );
    assert_eq!(
        exec_ok(&mut rt, &id, "head -c 4 /dev/xvdb").await.unwrap(),
        "RRRR"
    );
    let out = sh_out(
        &mut rt,
        &id,
        "dd if=/dev/zero of=/dev/xvdb bs=512 count=1 conv=fsync",
    )
    .await;
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(std::fs::read(&ro.file).unwrap()[0], b'R');
    exec_ok(
        &mut rt,
        &id,
        "printf userns | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync 2>/dev/null",
    )
    .await
    .unwrap();
    assert!(std::fs::read(&rw.file).unwrap().starts_with(b"userns"));
    // Nothing in the pod may make device nodes at all.
    let out = sh_out(&mut rt, &id, "mknod /dev/x c 1 3").await;
    assert!(out.contains("Operation not permitted"), "{out}");
}
