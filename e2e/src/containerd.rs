//! Debian's containerd (1.6) with runc and its CRI plugin, for comparison benchmarks: its
//! own root, state, socket and config in a tempdir, its own CNI network, a local sandbox
//! image. Drop removes its pods through CRI, stops it, and unmounts what it left.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::cmd::require_program;
use crate::cri_client::{self, ImageClient, RuntimeClient};
use crate::mounts::unmount_under;

const CONTAINERD: &str = "/usr/bin/containerd";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What containerd's CRI plugin is configured with.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// `sandbox_image`: the pause image, as the registry names it.
    pub sandbox_image: String,
    /// `host:port` of a plain-HTTP registry to reach through a mirror entry.
    pub registry: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
}

pub struct Containerd {
    child: Option<Child>,
    dir: TempDir,
    pub socket: PathBuf,
    pub log_path: PathBuf,
}

impl Containerd {
    pub fn start(options: &ContainerdOptions) -> anyhow::Result<Containerd> {
        require_program(CONTAINERD, "containerd")?;
        require_program("/usr/sbin/runc", "runc")?;
        // A short path: the socket must fit in sun_path, the shim's too.
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")?;
        let socket = dir.path().join("c.sock");
        let config = render_config(dir.path(), &socket, options);
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.path().join("containerd.log");
        let log = File::create(&log_path)?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let mut c = Containerd {
            child: Some(child),
            dir,
            socket,
            log_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = c.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "containerd exited at start ({status}); log:\n{}",
                    std::fs::read_to_string(&c.log_path).unwrap_or_default()
                );
            }
            if UnixStream::connect(&c.socket).is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!("containerd did not listen within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, SIGKILL after 10 s) and kills the shims it left. Its
    /// directory, with the images it pulled, stays until drop.
    pub fn stop(&mut self) {
        // Shims outlive containerd by design; with the pods gone they exit by themselves.
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.shim_pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub async fn runtime_client(&self) -> anyhow::Result<RuntimeClient> {
        cri_client::runtime_client(&self.socket).await
    }

    pub async fn image_client(&self) -> anyhow::Result<ImageClient> {
        cri_client::image_client(&self.socket).await
    }

    /// An image client once the CRI plugin answers: it initialises after the socket opens,
    /// and a timed call must not include that.
    pub async fn ready_image_client(&self) -> anyhow::Result<ImageClient> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut c) = self.image_client().await
                && c.list_images(k8s_cri::v1::ListImagesRequest { filter: None })
                    .await
                    .is_ok()
            {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI did not answer within {START_TIMEOUT:?}; log:\n{}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The containerd-shim-runc-v2 processes serving this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        let address = self.socket.display().to_string();
        crate::procs::all_pids()
            .into_iter()
            .filter(|&pid| {
                let cmdline = crate::procs::cmdline(pid);
                cmdline
                    .first()
                    .is_some_and(|c| c.ends_with("containerd-shim-runc-v2"))
                    && cmdline.iter().any(|a| a == &address)
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let socket = self.socket.clone();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        && let Err(e) = rt.block_on(crate::cri_client::remove_all_pods(&socket))
                    {
                        eprintln!("e2e: removing containerd's pods: {e:#}");
                    }
                });
            });
        }
        self.stop();
        if let Err(e) = unmount_under(self.dir.path(), |_| false) {
            eprintln!("e2e: unmounting containerd's leftovers: {e:#}");
        }
    }
}

fn render_config(dir: &Path, socket: &Path, o: &ContainerdOptions) -> String {
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    format!(
        r#"version = 2
root = {root}
state = {state}
# Plugins that need what this machine lacks, or that would reach outside the tempdir.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {socket}
[ttrpc]
  address = {ttrpc}
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  # This machine refuses a negative oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.{registry}]
    endpoint = [{endpoint}]
"#,
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        socket = q(socket),
        ttrpc = q(&dir.join("t.sock")),
        opt = q(&dir.join("opt")),
        pause = s(&o.sandbox_image),
        cni_bin = q(&o.cni_bin_dir),
        cni_conf = q(&o.cni_conf_dir),
        registry = s(&o.registry),
        endpoint = s(&format!("http://{}", o.registry)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_toml_with_our_paths() {
        let text = render_config(
            Path::new("/tmp/x"),
            Path::new("/tmp/x/c.sock"),
            &ContainerdOptions {
                sandbox_image: "127.0.0.1:5000/pause:latest".into(),
                registry: "127.0.0.1:5000".into(),
                cni_conf_dir: "/tmp/cni".into(),
                cni_bin_dir: "/usr/lib/cni".into(),
            },
        );
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["grpc"]["address"].as_str(), Some("/tmp/x/c.sock"));
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(
            cri["registry"]["mirrors"]["127.0.0.1:5000"]["endpoint"][0].as_str(),
            Some("http://127.0.0.1:5000")
        );
    }
}
