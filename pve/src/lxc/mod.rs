//! The `lxc` pod host: plain LXC, under pvecri's own lxcpath.
//!
//! Only starting spawns a process (`lxc-start`, which daemonizes its monitor so that CTs
//! outlive the daemon). Everything else reads `/proc` and uses pidfds, which keeps pod start
//! and stop fast:
//! * the monitor's pid comes from the pid file `lxc-start -p` writes and is trusted only while
//!   its command line is LXC's monitor title for this CT (`[lxc monitor] <lxcpath> <id>`);
//! * the CT's init is the monitor's child in another mount namespace;
//! * stop signals the init through a pidfd (SIGTERM, then SIGKILL), then waits for the monitor
//!   to finish its cleanup (cgroups) and exit. A CT in the host's PID namespace does not end
//!   with its init: what is left in its cgroup is killed too.
//!
//! The CT's state is thus rediscovered from its directory and `/proc` after a restart; the
//! standard tools work on it too (`lxc-ls -P <lxcpath>`, `lxc-attach -P <lxcpath> -n <id>`).

mod ct_dir;
mod logs;
pub mod render;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::Signal;
use tracing::{debug, info, warn};

use crate::cgroup::{self, CtCgroups, Hierarchies};
use crate::error::PodHostError;
use crate::process::{self, Pidfd};
use crate::spec::{CtInfo, CtRuntime, CtStatus, PodSpec, is_pod_id};
use crate::{PodHost, oom, pod_dir, reach, subid};

pub use ct_dir::CtRecord;
use ct_dir::{CREATING_PREFIX, CtDir, DESTROYING_PREFIX, remove_tree};

/// How the lxc driver runs.
#[derive(Debug, Clone)]
pub struct LxcOptions {
    /// pvecri's own lxcpath, `<state_dir>/lxc`.
    pub lxcpath: PathBuf,
    /// The `lxc-start` program (looked up on `PATH` when not a path).
    pub lxc_start: PathBuf,
    /// How long a CT's init may take to die after SIGKILL, and its monitor to clean up after.
    pub kill_grace: Duration,
}

impl LxcOptions {
    pub fn new(lxcpath: PathBuf) -> Self {
        Self {
            lxcpath,
            lxc_start: PathBuf::from("lxc-start"),
            kill_grace: Duration::from_secs(10),
        }
    }
}

pub struct LxcDriver {
    opts: LxcOptions,
    hierarchies: Hierarchies,
    /// One lock per CT id: lifecycle calls on one CT run one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A running CT as found in `/proc`.
struct Running {
    monitor: u32,
    init: Option<u32>,
}

impl LxcDriver {
    /// Prepares the lxcpath and reads the host's cgroup layout. Leftovers of creates and
    /// destroys cut short by a crash are removed.
    pub fn new(opts: LxcOptions) -> Result<Self, PodHostError> {
        let lxcpath = &opts.lxcpath;
        let text_ok = lxcpath
            .to_str()
            .is_some_and(|t| !t.chars().any(|c| c.is_control() || c.is_whitespace()));
        if !lxcpath.is_absolute() || !text_ok {
            return Err(PodHostError::DriverUnavailable {
                driver: "lxc".into(),
                reason: format!(
                    "lxcpath {} must be absolute, without whitespace or control characters",
                    lxcpath.display()
                ),
            });
        }
        if find_program(&opts.lxc_start).is_none() {
            return Err(PodHostError::DriverUnavailable {
                driver: "lxc".into(),
                reason: format!(
                    "{} not found on PATH (install LXC, Debian package `lxc`)",
                    opts.lxc_start.display()
                ),
            });
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true).mode(0o711);
            builder
                .create(lxcpath)
                .map_err(|e| PodHostError::io_at("creating lxcpath", lxcpath, e))?;
        }
        let hierarchies = Hierarchies::detect()?;
        let entries = std::fs::read_dir(lxcpath)
            .map_err(|e| PodHostError::io_at("reading lxcpath", lxcpath, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(CREATING_PREFIX) || name.starts_with(DESTROYING_PREFIX) {
                info!(dir = %entry.path().display(), "removing leftover of an interrupted create/destroy");
                // An interrupted create may have bound the pod directory already.
                if name.starts_with(CREATING_PREFIX)
                    && let Ok(record) = CtDir::new(lxcpath, &name).read_record()
                    && record.pod_dir_bound
                {
                    pod_dir::release(&record.pod_dir).map_err(|e| {
                        PodHostError::io_at("unmounting pod directory", &record.pod_dir, e)
                    })?;
                }
                remove_tree(&entry.path())
                    .map_err(|e| PodHostError::io_at("removing", &entry.path(), e))?;
            }
        }
        debug!(lxcpath = %lxcpath.display(), layout = ?hierarchies.layout, "lxc pod host ready");
        Ok(Self {
            opts,
            hierarchies,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn lxcpath(&self) -> &Path {
        &self.opts.lxcpath
    }

    /// The CT's directory (config, logs, rootfs), for diagnostics.
    pub fn ct_dir(&self, id: &str) -> PathBuf {
        self.opts.lxcpath.join(id)
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    fn dir(&self, id: &str) -> Result<CtDir, PodHostError> {
        if !is_pod_id(id) {
            return Err(PodHostError::NotFound(id.to_string()));
        }
        Ok(CtDir::new(&self.opts.lxcpath, id))
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id);
    }

    /// LXC retitles its daemonized monitor `[lxc monitor] <lxcpath> <name>`; should the
    /// retitling fail, the monitor still carries our `lxc-start -n <id> -P <lxcpath>` command
    /// line. Anything else at that pid is not (any more) this CT's monitor.
    fn is_monitor_of(&self, pid: u32, id: &str) -> bool {
        process::cmdline(pid).is_some_and(|c| is_monitor_cmdline(&c, &self.opts.lxcpath, id))
    }

    fn running(&self, ct: &CtDir, id: &str) -> Result<Option<Running>, PodHostError> {
        let pid_file = ct.monitor_pid();
        let Some(monitor) = process::read_pid_file(&pid_file)
            .map_err(|e| PodHostError::io_at("reading", &pid_file, e))?
        else {
            return Ok(None);
        };
        if !self.is_monitor_of(monitor, id) {
            return Ok(None);
        }
        Ok(Some(Running {
            monitor,
            init: init_of(monitor),
        }))
    }

    fn status_of(&self, ct: &CtDir, id: &str) -> Result<CtStatus, PodHostError> {
        if !ct.exists() {
            return Ok(CtStatus::NotFound);
        }
        Ok(match self.running(ct, id)? {
            Some(Running {
                init: Some(init_pid),
                ..
            }) => CtStatus::Running { init_pid },
            _ => CtStatus::Stopped,
        })
    }

    /// Log excerpts for an error about `ct`: LXC's log since `lxc_from`, podinit's console.
    fn log_report(ct: &CtDir, lxc_from: u64) -> String {
        let lxc = logs::section(
            "LXC log",
            &ct.lxc_log(),
            &logs::tail_since(&ct.lxc_log(), lxc_from),
        );
        let console = logs::section(
            "console",
            &ct.console_log(),
            &logs::tail_since(&ct.console_log(), 0),
        );
        format!("{lxc}{console}")
    }

    async fn start_locked(&self, ct: &CtDir, id: &str) -> Result<CtRuntime, PodHostError> {
        let record = ct
            .read_record()
            .map_err(|e| PodHostError::io_at("reading", &ct.record(), e))?;
        if let Some(running) = self.running(ct, id)? {
            if let Some(init) = running.init {
                return Ok(CtRuntime::for_init(init));
            }
            // A monitor without init is finishing a stop or an aborted start.
            self.wait_monitor_gone(ct, id, running.monitor).await?;
        }
        // A CT that died without LXC's cleanup (monitor killed, aborted start) leaves its
        // cgroups behind, and LXC refuses to start into an existing one.
        self.remove_cgroups(id, &record.cgroups).await?;
        cgroup::prepare_parents(&self.hierarchies, &record.cgroups.container)?;
        let _ = std::fs::remove_file(ct.monitor_pid());

        let lxc_from = logs::len(&ct.lxc_log());
        let stderr_path = ct.start_stderr();
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| PodHostError::io_at("creating", &stderr_path, e))?;
        let mut command = tokio::process::Command::new(&self.opts.lxc_start);
        command
            // This order is what `is_monitor_cmdline` recognises.
            .arg("-n")
            .arg(id)
            .arg("-P")
            .arg(&self.opts.lxcpath)
            .arg("-p")
            .arg(ct.monitor_pid())
            .arg("-d")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let shown = format!(
            "{} -n {id} -P {} -d",
            self.opts.lxc_start.display(),
            self.opts.lxcpath.display()
        );
        // lxc-start -d returns once the CT reports RUNNING (or failed); its monitor lives on.
        let status = command
            .status()
            .await
            .map_err(|e| PodHostError::io(format!("running {shown}"), e))?;
        if !status.success() {
            // lxc-start returns as soon as the CT reports ABORTING; let its monitor finish
            // cleaning up so that the CT is fully down when the error is reported.
            if let Some(running) = self.running(ct, id)? {
                self.wait_monitor_gone(ct, id, running.monitor).await?;
            }
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let said: Vec<String> = said
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            return Err(PodHostError::Command {
                command: shown,
                status: match status.code() {
                    Some(code) => format!("exited with code {code}"),
                    None => format!("ended by {status}"),
                },
                detail: format!(
                    "{}{}",
                    logs::section("stderr", &stderr_path, &said),
                    Self::log_report(ct, lxc_from)
                ),
            });
        }
        match self.running(ct, id)? {
            Some(Running {
                init: Some(init), ..
            }) => {
                debug!(id, init, "pod CT started");
                Ok(CtRuntime::for_init(init))
            }
            Some(Running { monitor, .. }) => {
                // Let the monitor finish its cleanup: the CT is down when this returns.
                let _ = self.wait_monitor_gone(ct, id, monitor).await;
                Err(PodHostError::Ct {
                    id: id.to_string(),
                    message: format!("its init exited right after start (monitor pid {monitor})"),
                    log: Self::log_report(ct, lxc_from),
                })
            }
            None => Err(PodHostError::Ct {
                id: id.to_string(),
                message: "lxc-start succeeded but its monitor is gone: the CT stopped at once"
                    .to_string(),
                log: Self::log_report(ct, lxc_from),
            }),
        }
    }

    async fn stop_locked(
        &self,
        ct: &CtDir,
        id: &str,
        timeout: Duration,
    ) -> Result<(), PodHostError> {
        let Some(running) = self.running(ct, id)? else {
            return Ok(());
        };
        let io = |what: &str, e| PodHostError::io(format!("pod CT {id}: {what}"), e);
        let Some(monitor) = Pidfd::open(running.monitor).map_err(|e| io("pidfd of monitor", e))?
        else {
            return Ok(());
        };
        // The pid may have been reused between reading /proc and opening the pidfd.
        if !self.is_monitor_of(running.monitor, id) {
            return Ok(());
        }
        let lxc_from = logs::len(&ct.lxc_log());
        if let Some(init_pid) = init_of(running.monitor)
            && let Some(init) = Pidfd::open(init_pid).map_err(|e| io("pidfd of init", e))?
            && process::children(running.monitor).contains(&init_pid)
        {
            let mut exited = false;
            if !timeout.is_zero() && init.signal(Signal::TERM).map_err(|e| io("SIGTERM", e))? {
                exited = init
                    .wait_exit(timeout)
                    .await
                    .map_err(|e| io("waiting for init", e))?;
                if !exited {
                    info!(id, ?timeout, "pod CT init ignored SIGTERM; killing it");
                }
            }
            if !exited {
                init.signal(Signal::KILL).map_err(|e| io("SIGKILL", e))?;
                if !init
                    .wait_exit(self.opts.kill_grace)
                    .await
                    .map_err(|e| io("waiting for init", e))?
                {
                    return Err(PodHostError::Ct {
                        id: id.to_string(),
                        message: format!(
                            "its init (pid {init_pid}) is still alive {:?} after SIGKILL",
                            self.opts.kill_grace
                        ),
                        log: String::new(),
                    });
                }
            }
        }
        if let Ok(record) = ct.read_record()
            && record.host_pid
        {
            self.kill_leftovers(id, &record.cgroups).await?;
        }
        if !monitor
            .wait_exit(self.opts.kill_grace)
            .await
            .map_err(|e| io("waiting for the LXC monitor", e))?
        {
            return Err(PodHostError::Ct {
                id: id.to_string(),
                message: format!(
                    "its LXC monitor (pid {}) did not exit within {:?} after the init died",
                    running.monitor, self.opts.kill_grace
                ),
                log: Self::log_report(ct, lxc_from),
            });
        }
        debug!(id, "pod CT stopped");
        Ok(())
    }

    async fn wait_monitor_gone(
        &self,
        ct: &CtDir,
        id: &str,
        monitor: u32,
    ) -> Result<(), PodHostError> {
        let Some(fd) = Pidfd::open(monitor)
            .map_err(|e| PodHostError::io(format!("pod CT {id}: pidfd of monitor"), e))?
        else {
            return Ok(());
        };
        if !self.is_monitor_of(monitor, id) {
            return Ok(());
        }
        let gone = fd
            .wait_exit(self.opts.kill_grace)
            .await
            .map_err(|e| PodHostError::io(format!("pod CT {id}: waiting for monitor"), e))?;
        if gone {
            return Ok(());
        }
        Err(PodHostError::Ct {
            id: id.to_string(),
            message: format!(
                "its LXC monitor (pid {monitor}) has no init and did not exit within {:?}",
                self.opts.kill_grace
            ),
            log: Self::log_report(ct, 0),
        })
    }

    /// Removes the CT's cgroups, killing first whatever still lives in them (only a CT in the
    /// host's PID namespace, or one whose monitor was killed, leaves processes behind).
    async fn remove_cgroups(&self, id: &str, cgroups: &CtCgroups) -> Result<(), PodHostError> {
        self.kill_leftovers(id, cgroups).await?;
        cgroup::remove_everywhere(&self.hierarchies.roots, &cgroups.container)?;
        cgroup::remove_everywhere(&self.hierarchies.roots, &cgroups.monitor)?;
        Ok(())
    }

    /// SIGKILLs every process in the CT's cgroup tree until none is left (new ones may be
    /// forked while the first are killed), for at most the kill grace.
    async fn kill_leftovers(&self, id: &str, cgroups: &CtCgroups) -> Result<(), PodHostError> {
        let deadline = tokio::time::Instant::now() + self.opts.kill_grace;
        loop {
            let left = cgroup::procs_everywhere(&self.hierarchies.roots, &cgroups.container);
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PodHostError::Ct {
                    id: id.to_string(),
                    message: format!(
                        "processes {left:?} are still in its cgroup {} {:?} after SIGKILL",
                        cgroups.container, self.opts.kill_grace
                    ),
                    log: String::new(),
                });
            }
            debug!(id, ?left, "killing what the pod CT left in its cgroup");
            for pid in left {
                process::kill_now(pid)
                    .map_err(|e| PodHostError::io(format!("pod CT {id}: killing {pid}"), e))?;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything create does on disk, in a staging directory that is renamed into place at
    /// the end, so that a crash never leaves something that looks like a finished CT.
    fn create_locked(&self, spec: &PodSpec, ct: &CtDir) -> Result<(), PodHostError> {
        let id = spec.id.as_str();
        let cgroups = CtCgroups::new(spec.cgroup_driver, spec.cgroup_parent.as_deref(), id)?;
        let oom_score_adj = match spec.oom_score_adj {
            Some(wanted) => {
                let own = oom::current()
                    .map_err(|e| PodHostError::io("reading /proc/self/oom_score_adj", e))?;
                let adj = oom::clamp(wanted, own);
                if adj != wanted {
                    info!(
                        id,
                        wanted,
                        set = adj,
                        "oom_score_adj raised to the daemon's own value"
                    );
                }
                Some(adj)
            }
            None => None,
        };
        let config = render::render(&render::CtConfig {
            name: &spec.name,
            hostname: &spec.hostname,
            ct_dir: &ct.dir,
            podinit: &spec.podinit,
            pod_dir: &spec.pod_dir,
            network: spec.network,
            cgroups: &cgroups,
            layout: self.hierarchies.layout,
            resources: &spec.resources,
            sysctls: &spec.sysctls,
            oom_score_adj,
            idmap: spec.user_idmap(),
            host_pid: spec.host_pid,
            host_ipc: spec.host_ipc,
        });

        let staging = CtDir::new(&self.opts.lxcpath, &format!("{CREATING_PREFIX}{id}"));
        remove_tree(&staging.dir).map_err(|e| PodHostError::io_at("removing", &staging.dir, e))?;
        let root_owner = (!spec.privileged).then(|| spec.ct_root_host_ids());
        let result = (|| {
            staging
                .build(root_owner)
                .map_err(|e| PodHostError::io_at("creating CT directory", &staging.dir, e))?;
            std::fs::write(staging.config(), &config)
                .map_err(|e| PodHostError::io_at("writing", &staging.config(), e))?;

            std::fs::create_dir_all(&spec.pod_dir)
                .map_err(|e| PodHostError::io_at("creating pod directory", &spec.pod_dir, e))?;
            let pod_dir_bound = !pod_dir::is_mount_point(&spec.pod_dir)
                .map_err(|e| PodHostError::io_at("inspecting", &spec.pod_dir, e))?;
            // Recorded before the mount: a crash from here on leaves a staging record that
            // says which mount to undo.
            staging
                .write_record(&CtRecord {
                    id: id.to_string(),
                    name: spec.name.clone(),
                    namespace: spec.namespace.clone(),
                    labels: spec.labels.clone(),
                    pod_dir: spec.pod_dir.clone(),
                    pod_dir_bound,
                    cgroups: cgroups.clone(),
                    privileged: spec.privileged,
                    host_pid: spec.host_pid,
                    warm: spec.warm,
                })
                .map_err(|e| PodHostError::io_at("writing", &staging.record(), e))?;
            pod_dir::make_shared(&spec.pod_dir, pod_dir_bound)
                .map_err(|e| PodHostError::io_at("making a shared mount of", &spec.pod_dir, e))?;
            let finish = || -> Result<(), PodHostError> {
                if let Some((uid, gid)) = root_owner {
                    // podinit, root of the CT, must be able to create its socket there.
                    std::os::unix::fs::chown(&spec.pod_dir, Some(uid), Some(gid)).map_err(|e| {
                        PodHostError::io_at("handing to the CT's root", &spec.pod_dir, e)
                    })?;
                }
                std::fs::rename(&staging.dir, &ct.dir)
                    .map_err(|e| PodHostError::io_at("renaming into place", &ct.dir, e))
            };
            finish().inspect_err(|_| {
                if pod_dir_bound {
                    let _ = pod_dir::release(&spec.pod_dir);
                }
            })
        })();
        if result.is_err() {
            let _ = remove_tree(&staging.dir);
        }
        result
    }

    /// An unprivileged CT's root must reach its rootfs, the pod directory and podinit.
    fn check_reachable_by_ct_root(&self, spec: &PodSpec, ct: &CtDir) -> Result<(), PodHostError> {
        let (uid, gid) = spec.ct_root_host_ids();
        let unsupported = |reason: String| PodHostError::Unsupported {
            id: spec.id.clone(),
            reason,
        };
        for path in [ct.rootfs(), spec.pod_dir.clone(), spec.podinit.clone()] {
            if let Some(dir) = reach::first_blocking_dir(&path, uid, gid) {
                return Err(unsupported(format!(
                    "the unprivileged CT's root (host uid {uid}) cannot traverse {} on the way \
                     to {}: grant it x access (e.g. mode 0711) or an ACL",
                    dir.display(),
                    path.display()
                )));
            }
        }
        if !reach::may_execute(&spec.podinit, uid, gid) {
            return Err(unsupported(format!(
                "the unprivileged CT's root (host uid {uid}) cannot read and execute podinit {}",
                spec.podinit.display()
            )));
        }
        Ok(())
    }

    async fn destroy_locked(&self, ct: &CtDir, id: &str) -> Result<(), PodHostError> {
        if !ct.dir.exists() {
            return Ok(());
        }
        self.stop_locked(ct, id, Duration::ZERO).await?;
        match ct.read_record() {
            Ok(record) => {
                self.remove_cgroups(id, &record.cgroups).await?;
                if record.pod_dir_bound {
                    pod_dir::release(&record.pod_dir).map_err(|e| {
                        PodHostError::io_at("unmounting pod directory", &record.pod_dir, e)
                    })?;
                }
            }
            Err(e) => {
                warn!(id, error = %e, "pod CT record unreadable; removing the CT directory only")
            }
        }
        let doomed = self.opts.lxcpath.join(format!("{DESTROYING_PREFIX}{id}"));
        remove_tree(&doomed).map_err(|e| PodHostError::io_at("removing", &doomed, e))?;
        std::fs::rename(&ct.dir, &doomed)
            .map_err(|e| PodHostError::io_at("renaming for removal", &ct.dir, e))?;
        remove_tree(&doomed).map_err(|e| PodHostError::io_at("removing", &doomed, e))?;
        debug!(id, "pod CT destroyed");
        Ok(())
    }
}

fn is_monitor_cmdline(cmdline: &str, lxcpath: &Path, id: &str) -> bool {
    let lxcpath = lxcpath.display();
    if cmdline == format!("[lxc monitor] {lxcpath} {id}") {
        return true;
    }
    let Some((argv0, rest)) = cmdline.split_once(' ') else {
        return false;
    };
    argv0.ends_with("lxc-start") && rest.starts_with(&format!("-n {id} -P {lxcpath} "))
}

/// The CT's init: the monitor's child living in another mount namespace (a CT always gets
/// its own; its PID namespace may be the host's). Helpers LXC forks meanwhile stay in the
/// monitor's.
fn init_of(monitor: u32) -> Option<u32> {
    let monitor_ns = process::mount_namespace(monitor)?;
    process::children(monitor)
        .into_iter()
        .find(|child| process::mount_namespace(*child).is_some_and(|ns| ns != monitor_ns))
}

fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[async_trait]
impl PodHost for LxcDriver {
    fn driver(&self) -> &'static str {
        "lxc"
    }

    fn supports_user_namespaces(&self) -> bool {
        true
    }

    async fn create(&self, spec: &PodSpec) -> Result<(), PodHostError> {
        spec.validate()?;
        let id = spec.id.as_str();
        if !spec.podinit.is_file() {
            return Err(PodHostError::Unsupported {
                id: id.to_string(),
                reason: format!("podinit {} is not a file", spec.podinit.display()),
            });
        }
        if let Some(map) = spec.user_idmap()
            && let Some(reason) = subid::check_root_delegation(&map)
        {
            return Err(PodHostError::Unsupported {
                id: id.to_string(),
                reason,
            });
        }
        let ct = self.dir(id)?;
        if !spec.privileged {
            self.check_reachable_by_ct_root(spec, &ct)?;
        }
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        if ct.dir.exists() {
            return Err(PodHostError::AlreadyExists(id.to_string()));
        }
        self.create_locked(spec, &ct)?;
        debug!(id, name = %spec.name, "pod CT created");
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<CtRuntime, PodHostError> {
        let ct = self.dir(id)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        if !ct.exists() {
            return Err(PodHostError::NotFound(id.to_string()));
        }
        self.start_locked(&ct, id).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), PodHostError> {
        let Ok(ct) = self.dir(id) else {
            return Ok(());
        };
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.stop_locked(&ct, id, timeout).await
    }

    async fn destroy(&self, id: &str) -> Result<(), PodHostError> {
        let Ok(ct) = self.dir(id) else {
            return Ok(());
        };
        let lock = self.lock(id);
        let guard = lock.lock().await;
        self.destroy_locked(&ct, id).await?;
        drop(guard);
        self.forget_lock(id);
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<CtStatus, PodHostError> {
        match self.dir(id) {
            Ok(ct) => self.status_of(&ct, id),
            Err(_) => Ok(CtStatus::NotFound),
        }
    }

    async fn list(&self) -> Result<Vec<CtInfo>, PodHostError> {
        let lxcpath = &self.opts.lxcpath;
        let entries = std::fs::read_dir(lxcpath)
            .map_err(|e| PodHostError::io_at("reading lxcpath", lxcpath, e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().filter(|n| is_pod_id(n)) else {
                continue;
            };
            let ct = CtDir::new(lxcpath, id);
            if !ct.exists() {
                continue;
            }
            let record = ct.read_record().unwrap_or_else(|e| {
                warn!(id, error = %e, "pod CT record unreadable");
                CtRecord {
                    id: id.to_string(),
                    name: String::new(),
                    namespace: String::new(),
                    labels: Default::default(),
                    pod_dir: PathBuf::new(),
                    pod_dir_bound: false,
                    cgroups: CtCgroups {
                        container: String::new(),
                        monitor: String::new(),
                        monitor_pivot: String::new(),
                    },
                    privileged: true,
                    host_pid: false,
                    warm: false,
                }
            });
            if record.warm {
                continue;
            }
            found.push(CtInfo {
                id: id.to_string(),
                name: record.name,
                namespace: record.namespace,
                labels: record.labels,
                status: self.status_of(&ct, id)?,
                handle: format!("lxc:{}/{id}", lxcpath.display()),
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn list_warm(&self) -> Result<Vec<String>, PodHostError> {
        let lxcpath = &self.opts.lxcpath;
        let entries = std::fs::read_dir(lxcpath)
            .map_err(|e| PodHostError::io_at("reading lxcpath", lxcpath, e))?;
        let mut warm: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| is_pod_id(id))
            .filter(|id| CtDir::new(lxcpath, id).read_record().is_ok_and(|r| r.warm))
            .collect();
        warm.sort();
        Ok(warm)
    }

    /// A warm CT is privileged with its own network; sysctls, limits and the hostname are
    /// set on adoption. Its cgroup stays under the default parent.
    fn warm_fits(&self, spec: &PodSpec) -> bool {
        spec.privileged
            && spec.network == crate::spec::NetworkMode::Isolated
            && !spec.host_pid
            && !spec.host_ipc
    }

    async fn adopt(&self, spec: &PodSpec) -> Result<CtRuntime, PodHostError> {
        spec.validate()?;
        let id = spec.id.as_str();
        let ct = self.dir(id)?;
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let mut record = ct
            .read_record()
            .ok()
            .filter(|r| r.warm)
            .ok_or_else(|| PodHostError::NotFound(id.to_string()))?;
        let CtStatus::Running { init_pid } = self.status_of(&ct, id)? else {
            return Err(PodHostError::Ct {
                id: id.to_string(),
                message: "the warm CT is not running".into(),
                log: Self::log_report(&ct, 0),
            });
        };
        let keys = cgroup::resource_keys(self.hierarchies.layout, &spec.resources);
        cgroup::apply_keys(&self.hierarchies, &record.cgroups.container, &keys)?;
        let hostname = spec.hostname.clone();
        let sysctls = spec.sysctls.clone();
        tokio::task::spawn_blocking(move || {
            crate::nsenter::set_hostname(init_pid, &hostname)?;
            crate::nsenter::apply_sysctls(init_pid, &sysctls)
        })
        .await
        .map_err(|e| PodHostError::io("namespace worker", std::io::Error::other(e)))?
        .map_err(|e| PodHostError::io(format!("pod CT {id}: hostname and sysctls"), e))?;
        if let Some(wanted) = spec.oom_score_adj
            && let Ok(own) = oom::current()
        {
            let adj = oom::clamp(wanted, own);
            std::fs::write(format!("/proc/{init_pid}/oom_score_adj"), adj.to_string())
                .map_err(|e| PodHostError::io(format!("pod CT {id}: oom_score_adj"), e))?;
        }
        record.warm = false;
        record.name = spec.name.clone();
        record.namespace = spec.namespace.clone();
        record.labels = spec.labels.clone();
        ct.write_record(&record)
            .map_err(|e| PodHostError::io_at("writing", &ct.record(), e))?;
        debug!(id, init_pid, "warm CT adopted");
        Ok(CtRuntime::for_init(init_pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = crate::spec::tests::ID;

    #[test]
    fn monitors_are_recognised_by_title_or_by_our_command_line() {
        let lxcpath = Path::new("/var/lib/pvecri/lxc");
        let title = format!("[lxc monitor] /var/lib/pvecri/lxc {ID}");
        assert!(is_monitor_cmdline(&title, lxcpath, ID));
        let ours =
            format!("/usr/bin/lxc-start -n {ID} -P /var/lib/pvecri/lxc -p /x/monitor.pid -d");
        assert!(is_monitor_cmdline(&ours, lxcpath, ID));
        let other = ID.replace('0', "1");
        for not_it in [
            format!("[lxc monitor] /var/lib/lxc {ID}"),
            format!("[lxc monitor] /var/lib/pvecri/lxc {other}"),
            format!("lxc-start -n {other} -P /var/lib/pvecri/lxc -d"),
            format!("lxc-start -n {ID} -P /var/lib/pvecri/lxc2 -d"),
            format!("bash -n {ID} -P /var/lib/pvecri/lxc -d"),
            "sleep 1000".to_string(),
        ] {
            assert!(!is_monitor_cmdline(&not_it, lxcpath, ID), "{not_it}");
        }
    }
}
