//! pvecri's own record of each pod CT, `<state_dir>/pve/cts/<sandbox id>.json`.
//!
//! The record is written before the create request goes out, with the vmid it will use: a
//! daemon killed while Proxmox creates or starts the CT finds the vmid again after a restart
//! and can wait for the task and remove the CT. The CT itself (its tags and description) is
//! the other half of the truth; see `PveDriver::list`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{NetworkMode, is_pod_id};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtRecord {
    pub id: String,
    pub vmid: u32,
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pod_dir: PathBuf,
    /// `true` when create bound the pod directory onto itself (destroy undoes it).
    pub pod_dir_bound: bool,
    pub privileged: bool,
    pub network: NetworkMode,
    /// The unprivileged CT's ID map; `None` for a privileged CT.
    #[serde(default)]
    pub idmap: Option<crate::spec::IdMap>,
    #[serde(default)]
    pub host_pid: bool,
    #[serde(default)]
    pub host_ipc: bool,
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Set once the create task finished and the raw keys are written.
    pub created: bool,
    /// A warm pool CT, not yet a pod's.
    #[serde(default)]
    pub warm: bool,
}

#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// podinit's console output (LXC's console log) of the CT.
    pub fn console_log(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.console.log"))
    }

    /// The LXC config the CT's Proxmox config includes (host namespaces).
    pub fn included(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.lxc.conf"))
    }

    pub fn get(&self, id: &str) -> std::io::Result<Option<CtRecord>> {
        if !is_pod_id(id) {
            return Ok(None);
        }
        match std::fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Written to a temporary file, synced and renamed: a crash leaves the old or the new
    /// record, never half of one.
    pub fn put(&self, record: &CtRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&record.id);
        let tmp = self.dir.join(format!(".{}.tmp", record.id));
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// How long ago the record was last written.
    pub fn age(&self, id: &str) -> Option<std::time::Duration> {
        std::fs::metadata(self.path(id))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
    }

    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        for path in [self.path(id), self.console_log(id), self.included(id)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every readable record; unreadable ones are reported, not fatal.
    pub fn all(&self) -> (Vec<CtRecord>, Vec<(PathBuf, String)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (good, bad);
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_pod_id(id) {
                continue;
            }
            match self.get(id) {
                Ok(Some(r)) if r.id == id => good.push(r),
                Ok(Some(_)) => bad.push((entry.path(), "names another id".into())),
                Ok(None) => {}
                Err(e) => bad.push((entry.path(), e.to_string())),
            }
        }
        good.sort_by(|a, b| a.id.cmp(&b.id));
        (good, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = crate::spec::tests::ID;

    pub(crate) fn record() -> CtRecord {
        CtRecord {
            id: ID.into(),
            vmid: 900_000,
            name: "default/web".into(),
            namespace: "default".into(),
            uid: "u".into(),
            labels: BTreeMap::new(),
            pod_dir: "/var/lib/pvecri/pods/x".into(),
            pod_dir_bound: true,
            privileged: true,
            network: NetworkMode::Isolated,
            idmap: None,
            host_pid: false,
            host_ipc: false,
            sysctls: BTreeMap::new(),
            created: false,
            warm: false,
        }
    }

    #[test]
    fn records_round_trip_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path().join("cts"));
        assert_eq!(records.get(ID).unwrap(), None);
        assert_eq!(records.all().0, vec![]);
        let mut r = record();
        records.put(&r).unwrap();
        r.created = true;
        records.put(&r).unwrap();
        assert_eq!(records.get(ID).unwrap(), Some(r.clone()));
        std::fs::write(records.dir().join(format!("{}.json", "a".repeat(64))), "{").unwrap();
        std::fs::write(records.dir().join("junk.json"), "{").unwrap();
        let (good, bad) = records.all();
        assert_eq!(good, vec![r]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        records.remove(ID).unwrap();
        records.remove(ID).unwrap();
        assert_eq!(records.get(ID).unwrap(), None);
        assert_eq!(records.get("../etc/passwd").unwrap(), None);
    }
}
