//! The Proxmox VE harness (`../shared/pve-harness`: real PVE 8 code, pmxcfs, the HTTPS API)
//! for the `pve` driver's tests.
//!
//! [`PveHarness::acquire`] brings the harness up when it is down (setup is idempotent) and
//! holds a shared lock while the test runs; the last test to let go takes it down again if a
//! test brought it up (when CI's `scripts/test` started it, it stays up for the next tests).
//! Each test also gets its own vmid range ([`PveHarness::vmid_range`]), so that one test's
//! daemon never takes another's CTs for orphans.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::cmd::run;
use crate::lock::FileLock;

/// Environment variable naming the `pve-harness` script.
pub const HARNESS_ENV: &str = "PVE_HARNESS";
const SETUP_LOCK: &str = "/var/tmp/pvecri-pve-harness.lock";
const USERS_LOCK: &str = "/var/tmp/pvecri-pve-harness.users";
const STARTED_MARK: &str = "/var/tmp/pvecri-pve-harness.started-by-tests";
/// vmid ranges handed to tests: 990000 + 100 * slot.
const RANGE_BASE: u32 = 990_000;
const RANGE_SIZE: u32 = 100;
const RANGE_SLOTS: u32 = 90;

/// `$PVE_HARNESS`, else `../shared/pve-harness/pve-harness` beside the checkout (where CI has
/// it), else `/work/shared/pve-harness/pve-harness`.
pub fn harness_script() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(HARNESS_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{HARNESS_ENV}={} does not name a file", p.display());
        }
        return Ok(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        workspace.join("../shared/pve-harness/pve-harness"),
        PathBuf::from("/work/shared/pve-harness/pve-harness"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the pve-harness is missing (looked at {}): set {HARNESS_ENV}",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn home() -> PathBuf {
    std::env::var_os("PVE_HARNESS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pve-harness"))
}

fn read_env() -> anyhow::Result<HashMap<String, String>> {
    let path = home().join("env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the harness env {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The running harness, held for one test.
pub struct PveHarness {
    script: PathBuf,
    env: HashMap<String, String>,
    users: Option<Flock<File>>,
    range: Option<(Flock<File>, u32)>,
}

impl PveHarness {
    pub fn acquire() -> anyhow::Result<PveHarness> {
        let script = harness_script()?;
        let setup = FileLock::exclusive(Path::new(SETUP_LOCK))?;
        run(Command::new(&script).arg("setup")).context("pve-harness setup")?;
        let up = Command::new(&script)
            .arg("status")
            .output()
            .context("pve-harness status")?
            .status
            .success();
        if !up {
            run(Command::new(&script).arg("up")).context("pve-harness up")?;
            std::fs::write(STARTED_MARK, b"")?;
        }
        let users = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(USERS_LOCK)?;
        let users = Flock::lock(users, FlockArg::LockShared)
            .map_err(|(_, e)| e)
            .context("locking the harness for this test")?;
        drop(setup);
        let mut h = PveHarness {
            script,
            env: read_env()?,
            users: Some(users),
            range: None,
        };
        h.range = Some(take_range()?);
        Ok(h)
    }

    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{key} is not in the harness env"))
    }

    pub fn script(&self) -> &Path {
        &self.script
    }

    /// The namespace holder: run the daemon in its mount and UTS namespaces.
    pub fn ns_pid(&self) -> anyhow::Result<u32> {
        Ok(self.get("PVE_HARNESS_NS_PID")?.parse()?)
    }

    pub fn node(&self) -> anyhow::Result<&str> {
        self.get("PVE_HARNESS_NODE")
    }

    pub fn api_base(&self) -> anyhow::Result<&str> {
        self.get("PVE_HARNESS_API_BASE")
    }

    pub fn token_secret(&self) -> anyhow::Result<String> {
        let path = self.get("PVE_HARNESS_TOKEN_SECRET_FILE")?;
        Ok(std::fs::read_to_string(path)?.trim().to_string())
    }

    /// `root@pam!pvecri=SECRET`, the harness's Administrator token.
    pub fn token_line(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{}={}",
            self.get("PVE_HARNESS_TOKEN_ID")?,
            self.token_secret()?
        ))
    }

    /// This test's vmids: `(first, last)`.
    pub fn vmid_range(&self) -> (u32, u32) {
        let first = self.range.as_ref().map(|(_, f)| *f).unwrap_or(RANGE_BASE);
        (first, first + RANGE_SIZE - 1)
    }

    /// A token file (mode 0600) in `dir` holding `line`.
    pub fn write_token_file(&self, dir: &Path, line: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join("pve-token");
        std::fs::write(&path, format!("{line}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// `[pod_host]` and `[pve]` for a daemon using the harness through `api_url`.
    pub fn daemon_config(&self, token_file: &Path, api_url: &str, warm_pool: usize) -> String {
        let (first, last) = self.vmid_range();
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        format!(
            "[pod_host]\ndriver = \"pve\"\n\n[pve]\napi_url = {}\nnode = {}\ntoken_file = {}\n\
             ca_file = {}\nstorage = {}\nvmid_range = [{first}, {last}]\nwarm_pool = {warm_pool}\n",
            q(api_url),
            q(self.node().unwrap_or("pve1")),
            q(&token_file.display().to_string()),
            q(self.get("PVE_HARNESS_CA_FILE").unwrap_or_default()),
            q(self.get("PVE_HARNESS_STORAGE").unwrap_or("local")),
        )
    }

    /// The CT config file as seen from the host.
    pub fn conf_path(&self, vmid: u32) -> anyhow::Result<PathBuf> {
        Ok(Path::new(self.get("PVE_HARNESS_CT_CONF_DIR_HOST")?).join(format!("{vmid}.conf")))
    }

    /// Proxmox's own strict parse of a CT config (`parse_pct_config`), as JSON; its message
    /// when Proxmox rejects the file.
    pub fn parse_conf(&self, vmid: u32) -> anyhow::Result<serde_json::Value> {
        let path = self.conf_path(vmid)?;
        let out = crate::cmd::output(
            Command::new(&self.script)
                .arg("parse")
                .arg(&path)
                .arg(vmid.to_string()),
        )?;
        if !out.status.success() {
            bail!(
                "Proxmox's parser rejects {}: {}\n--- file ---\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                std::fs::read_to_string(&path).unwrap_or_default()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The LXC config Proxmox generates from a CT config.
    pub fn lxc_conf(&self, vmid: u32) -> anyhow::Result<String> {
        run(Command::new(&self.script)
            .arg("lxcconf")
            .arg(self.conf_path(vmid)?)
            .arg(vmid.to_string()))
    }

    /// A client of the harness's API with its Administrator token.
    pub fn api(&self) -> anyhow::Result<pve::pve::api::Api> {
        let token = pve::pve::config::Token::parse(&self.token_line()?)
            .map_err(|e| anyhow::anyhow!("harness token: {e}"))?;
        let tls = pve::pve::tls::client_config(&pve::pve::config::TlsTrust::CaFile(
            self.get("PVE_HARNESS_CA_FILE")?.into(),
        ))?;
        pve::pve::api::Api::new(self.api_base()?, self.node()?, &token, tls)
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Adds an API token `user@pve!name` (a new user whose rights the token has) with the
    /// ACL entries `(path, role)`, and the `roles` `(name, privileges)` they use; written into
    /// pmxcfs as `pveum` would (the harness has no `/access` API). Returns `ID=SECRET`.
    pub fn add_token(
        &self,
        user: &str,
        name: &str,
        roles: &[(&str, &[&str])],
        acls: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let secret = format!("{:032x}", rand::random::<u128>());
        let userid = format!("{user}@pve");
        let tokenid = format!("{userid}!{name}");
        let mut lines = format!("user:{userid}:1:0::::::\ntoken:{tokenid}:0:0::\n");
        for (role, privs) in roles {
            lines.push_str(&format!("role:{role}:{}:\n", privs.join(",")));
        }
        for (path, role) in acls {
            lines.push_str(&format!("acl:1:{path}:{userid}:{role}:\n"));
        }
        let script = "set -e; printf '%s' \"$1\" >> /etc/pve/user.cfg; \
                      printf '%s %s\\n' \"$2\" \"$3\" >> /etc/pve/priv/token.cfg";
        run(Command::new(&self.script)
            .args(["exec", "sh", "-c", script, "sh"])
            .arg(&lines)
            .arg(&tokenid)
            .arg(&secret))?;
        Ok(format!("{tokenid}={secret}"))
    }

    /// pvecri's CTs (tag `pvecri`) in this test's range, as the API lists them.
    pub async fn our_cts(&self) -> anyhow::Result<Vec<pve::pve::api::CtState>> {
        let (first, last) = self.vmid_range();
        Ok(self
            .api()?
            .list_cts()
            .await?
            .into_iter()
            .filter(|c| (first..=last).contains(&c.vmid))
            .collect())
    }

    /// Destroys every CT of this test's range (what a failed test left).
    pub async fn destroy_range(&self) -> anyhow::Result<usize> {
        let api = self.api()?;
        let mut n = 0;
        for ct in self.our_cts().await? {
            let upid = api.destroy_ct(ct.vmid).await?;
            api.wait_task(&upid, std::time::Duration::from_secs(120))
                .await?;
            n += 1;
        }
        Ok(n)
    }
}

/// An unused vmid range for this test, held by a lock file until the harness is dropped.
fn take_range() -> anyhow::Result<(Flock<File>, u32)> {
    let start = rand::random::<u32>() % RANGE_SLOTS;
    for i in 0..RANGE_SLOTS {
        let slot = (start + i) % RANGE_SLOTS;
        let path = format!("/var/tmp/pvecri-pve-range-{slot}.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok((lock, RANGE_BASE + slot * RANGE_SIZE));
        }
    }
    bail!("all {RANGE_SLOTS} test vmid ranges are in use")
}

/// Where the API server spools an upload (`PVE::APIServer::AnyEvent`).
const UPLOAD_SPOOL_DIR: &str = "/var/tmp";
const UPLOAD_SPOOL_PREFIX: &str = "pveupload-";

impl PveHarness {
    /// Removes the API server's spooled copies of pvecri's template uploads. The harness runs
    /// the API in one process, without pveproxy handing the spooled file to pvedaemon, so the
    /// upload handler refuses it ("missing temporary file name", and pvecri writes the
    /// template into the storage directory instead) and the spooled copy stays in /var/tmp;
    /// on a real node the handler's worker removes it. Only files whose bytes are those of a
    /// pvecri template in the harness's storage are removed.
    fn remove_spooled_template_uploads(&self) {
        let Ok(storage) = self.get("PVE_HARNESS_STORAGE_PATH") else {
            return;
        };
        let cache = Path::new(storage).join("template/cache");
        let templates: Vec<Vec<u8>> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("pvecri-podinit-")
            })
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect();
        let Ok(spool) = std::fs::read_dir(UPLOAD_SPOOL_DIR) else {
            return;
        };
        for entry in spool.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(UPLOAD_SPOOL_PREFIX)
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !templates.iter().any(|t| t.len() as u64 == meta.len()) {
                continue;
            }
            if let Ok(bytes) = std::fs::read(entry.path())
                && templates.contains(&bytes)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for PveHarness {
    fn drop(&mut self) {
        self.remove_spooled_template_uploads();
        self.range = None;
        self.users = None;
        let Ok(_setup) = FileLock::exclusive(Path::new(SETUP_LOCK)) else {
            return;
        };
        if !Path::new(STARTED_MARK).exists() {
            return;
        }
        let Ok(users) = OpenOptions::new().write(true).open(USERS_LOCK) else {
            return;
        };
        // Nobody else holds it: this was the last test using the harness a test started.
        if let Ok(_last) = Flock::lock(users, FlockArg::LockExclusiveNonblock) {
            match run(Command::new(&self.script).arg("down")) {
                Ok(_) => {
                    let _ = std::fs::remove_file(STARTED_MARK);
                }
                Err(e) => eprintln!("e2e: pve-harness down: {e:#}"),
            }
        }
    }
}
