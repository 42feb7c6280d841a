//! Restarting services on the host from inside the installer's pod: `systemctl` run in the
//! mount namespace of the host's PID 1 (the pod has `hostPID`), as `nsenter -t 1 -m` would
//! (tests name another process whose mount namespace plays the host's);
//! or, on a host without systemd (and in tests, whose host root is a temporary directory),
//! request files that a supervisor or a test can act on.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host's systemctl, resolved in the host's mount namespace.
const SYSTEMCTL: &str = "/usr/bin/systemctl";
/// Request files go here, under the host root.
pub const REQUEST_DIR: &str = "run/pvecri-node";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "cannot enter the host's mount namespace through {path}: {error} (the pod needs hostPID and privileges)"
    )]
    Namespace {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`systemctl {args}` on the host failed ({status}): {stderr}")]
    Systemctl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("writing the request {path}: {error}")]
    Request {
        path: PathBuf,
        error: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostService {
    Pvecri,
    Kubelet,
}

impl HostService {
    pub fn unit(self) -> &'static str {
        match self {
            Self::Pvecri => "pvecri.service",
            Self::Kubelet => "kubelet.service",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Pvecri => "pvecri",
            Self::Kubelet => "kubelet",
        }
    }
}

/// What the installer asks of the host's service manager.
pub trait Restarter {
    /// Re-reads unit files (after a unit or drop-in changed).
    fn reload(&self) -> Result<(), HostError>;
    /// Starts the service at boot.
    fn enable(&self, service: HostService) -> Result<(), HostError>;
    fn restart(&self, service: HostService, why: &str) -> Result<(), HostError>;
    /// Stops the service and no longer starts it at boot.
    fn stop(&self, service: HostService) -> Result<(), HostError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartMethod {
    /// systemd when the host runs it (and the pod sees the host's PID 1), else request files.
    Auto,
    Systemd,
    /// Request files under `<host root>/run/pvecri-node/`.
    File,
    /// Restart nothing: the admin does.
    None,
}

/// The host's systemd, driven through the mount namespace of the host's init.
pub struct Systemd {
    /// The process whose mount namespace is the host's: 1 with `hostPID`.
    pub host_pid: u32,
}

impl Systemd {
    fn systemctl(&self, args: &[&str]) -> Result<(), HostError> {
        let ns_path = PathBuf::from(format!("/proc/{}/ns/mnt", self.host_pid));
        let ns = File::open(&ns_path).map_err(|error| HostError::Namespace {
            path: ns_path.clone(),
            error,
        })?;
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(SYSTEMCTL);
        cmd.args(args);
        // SAFETY: runs in the forked child before exec; setns is async-signal-safe and the
        // child is single-threaded, as joining a mount namespace requires. `ns` outlives
        // the spawn, so `fd` stays valid.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().map_err(|error| HostError::Namespace {
            path: ns_path,
            error,
        })?;
        drop(ns);
        if out.status.success() {
            tracing::info!(args = args.join(" "), "systemctl on the host");
            Ok(())
        } else {
            Err(HostError::Systemctl {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " "),
            })
        }
    }
}

impl Restarter for Systemd {
    fn reload(&self) -> Result<(), HostError> {
        self.systemctl(&["daemon-reload"])
    }
    fn enable(&self, service: HostService) -> Result<(), HostError> {
        self.systemctl(&["enable", service.unit()])
    }
    fn restart(&self, service: HostService, why: &str) -> Result<(), HostError> {
        tracing::info!(unit = service.unit(), why, "restarting");
        self.systemctl(&["restart", service.unit()])
    }
    fn stop(&self, service: HostService) -> Result<(), HostError> {
        self.systemctl(&["disable", "--now", service.unit()])
    }
}

/// Request files: `<dir>/pvecri.restart`, `kubelet.restart`, `pvecri.stop`, ..., each
/// holding the time and the reason.
pub struct RequestFiles {
    pub dir: PathBuf,
}

impl RequestFiles {
    fn request(&self, name: &str, why: &str) -> Result<(), HostError> {
        let path = self.dir.join(name);
        let text = format!("{} {why}\n", chrono::Utc::now().to_rfc3339());
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|error| HostError::Request {
                path: path.clone(),
                error,
            })?;
        tracing::info!(request = %path.display(), why, "no systemd on the host: requested");
        Ok(())
    }
}

impl Restarter for RequestFiles {
    fn reload(&self) -> Result<(), HostError> {
        self.request("daemon-reload", "unit files changed")
    }
    fn enable(&self, service: HostService) -> Result<(), HostError> {
        self.request(&format!("{}.enable", service.short()), "enable at boot")
    }
    fn restart(&self, service: HostService, why: &str) -> Result<(), HostError> {
        self.request(&format!("{}.restart", service.short()), why)
    }
    fn stop(&self, service: HostService) -> Result<(), HostError> {
        self.request(&format!("{}.stop", service.short()), "pvecri uninstalled")
    }
}

/// Logs what the admin has to do.
pub struct Nothing;

impl Restarter for Nothing {
    fn reload(&self) -> Result<(), HostError> {
        tracing::warn!("restart method none: run `systemctl daemon-reload` on the node");
        Ok(())
    }
    fn enable(&self, service: HostService) -> Result<(), HostError> {
        tracing::warn!(
            unit = service.unit(),
            "restart method none: enable it on the node"
        );
        Ok(())
    }
    fn restart(&self, service: HostService, why: &str) -> Result<(), HostError> {
        tracing::warn!(
            unit = service.unit(),
            why,
            "restart method none: restart it on the node"
        );
        Ok(())
    }
    fn stop(&self, service: HostService) -> Result<(), HostError> {
        tracing::warn!(
            unit = service.unit(),
            "restart method none: stop it on the node"
        );
        Ok(())
    }
}

/// Whether the host runs systemd and this process sees the host's init as `host_pid`.
pub fn host_runs_systemd(host_root: &Path, host_pid: u32) -> bool {
    host_root.join("run/systemd/system").is_dir()
        && std::fs::read_to_string(format!("/proc/{host_pid}/comm"))
            .is_ok_and(|c| c.trim() == "systemd")
}

pub fn restarter(method: RestartMethod, host_root: &Path, host_pid: u32) -> Box<dyn Restarter> {
    let files = || {
        Box::new(RequestFiles {
            dir: host_root.join(REQUEST_DIR),
        })
    };
    match method {
        RestartMethod::Systemd => Box::new(Systemd { host_pid }),
        RestartMethod::File => files(),
        RestartMethod::None => Box::new(Nothing),
        RestartMethod::Auto if host_runs_systemd(host_root, host_pid) => {
            Box::new(Systemd { host_pid })
        }
        RestartMethod::Auto => files(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_files_name_the_service_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = RequestFiles {
            dir: dir.path().join("req"),
        };
        r.restart(HostService::Kubelet, "drop-in written").unwrap();
        let text = std::fs::read_to_string(dir.path().join("req/kubelet.restart")).unwrap();
        assert!(text.trim_end().ends_with(" drop-in written"), "{text}");
    }

    #[test]
    fn auto_without_systemd_in_the_host_root_uses_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!host_runs_systemd(dir.path(), 1));
        let r = restarter(RestartMethod::Auto, dir.path(), 1);
        r.stop(HostService::Pvecri).unwrap();
        assert!(dir.path().join(REQUEST_DIR).join("pvecri.stop").is_file());
    }
}
