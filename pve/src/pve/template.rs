//! The CT template pvecri's pod CTs are created from: an empty root with the mount points
//! LXC and podinit need, and podinit itself at `/sbin/podinit`. It is named after podinit's
//! hash (`pvecri-podinit-<12 hex>.tar.gz`), so a new podinit gets a new template and CTs
//! made from the old one keep theirs.
//!
//! It is uploaded once through the API (`POST .../storage/{storage}/upload`, privilege
//! Datastore.AllocateTemplate). When the API server takes the upload but does not hand the
//! file to the storage handler (the pve-harness runs the API without pveproxy's upload
//! spooling; its message is "missing temporary file name"), the template is written into the
//! storage's directory on this node instead, which is where Proxmox itself would put it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::info;

use super::api::{Api, ApiError};

pub const STORAGE_CFG: &str = "/etc/pve/storage.cfg";
/// Mount points in the CT's root; `tmp` is world-writable.
const ROOT_DIRS: &[&str] = &["dev", "etc", "proc", "pvecri", "run", "sbin", "sys", "tmp"];
/// Fixed times and owners make the archive (and its name) depend on podinit only.
const MTIME: u64 = 1_700_000_000;
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading podinit {path}: {error}")]
    Podinit { path: String, error: std::io::Error },
    #[error("building the CT template: {0}")]
    Build(std::io::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("placing the CT template on storage {storage}: {reason}")]
    Place { storage: String, reason: String },
}

/// The template's file name and bytes for a podinit binary.
pub fn build(podinit: &[u8]) -> Result<(String, Vec<u8>), std::io::Error> {
    let digest = hex::encode(Sha256::digest(podinit));
    let name = format!("pvecri-podinit-{}.tar.gz", &digest[..12]);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let header = |mode: u32, size: u64, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    };
    for dir in ROOT_DIRS {
        let mode = if *dir == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(mode, 0, tar::EntryType::Directory);
        tar.append_data(&mut h, format!("./{dir}/"), std::io::empty())?;
    }
    let mut h = header(0o755, podinit.len() as u64, tar::EntryType::Regular);
    tar.append_data(&mut h, "./sbin/podinit", podinit)?;
    let gz = tar.into_inner()?;
    Ok((name, gz.finish()?))
}

/// Makes sure the template for `podinit` is on `storage`; returns its volume id.
pub async fn ensure(api: &Api, storage: &str, podinit: &Path) -> Result<String, TemplateError> {
    let bytes = tokio::fs::read(podinit)
        .await
        .map_err(|error| TemplateError::Podinit {
            path: podinit.display().to_string(),
            error,
        })?;
    let (name, archive) = tokio::task::spawn_blocking(move || build(&bytes))
        .await
        .map_err(|e| TemplateError::Build(std::io::Error::other(e)))?
        .map_err(TemplateError::Build)?;
    let volid = format!("{storage}:vztmpl/{name}");
    if api.templates(storage).await?.contains(&volid) {
        return Ok(volid);
    }
    info!(%volid, "uploading pvecri's CT template");
    match api.upload_template(storage, &name, archive.clone()).await {
        Ok(upid) => api.wait_task(&upid, UPLOAD_TIMEOUT).await?,
        Err(e @ ApiError::Http { .. }) if e.to_string().contains("missing temporary file name") => {
            info!(%volid, "the API did not take the upload; writing the template into the storage directory");
            let storage_cfg =
                tokio::fs::read_to_string(STORAGE_CFG)
                    .await
                    .map_err(|e| TemplateError::Place {
                        storage: storage.to_string(),
                        reason: format!("reading {STORAGE_CFG}: {e}"),
                    })?;
            let dir = template_dir(&storage_cfg, storage).ok_or_else(|| TemplateError::Place {
                storage: storage.to_string(),
                reason: format!(
                    "{STORAGE_CFG} names no directory-backed storage {storage:?} for templates"
                ),
            })?;
            let file_name = name.clone();
            tokio::task::spawn_blocking(move || write_into(&dir, &file_name, &archive))
                .await
                .map_err(|e| TemplateError::Build(std::io::Error::other(e)))?
                .map_err(|e| TemplateError::Place {
                    storage: storage.to_string(),
                    reason: e.to_string(),
                })?;
        }
        Err(e) => return Err(e.into()),
    }
    if !api.templates(storage).await?.contains(&volid) {
        return Err(TemplateError::Place {
            storage: storage.to_string(),
            reason: format!("{volid} is not listed after the upload"),
        });
    }
    Ok(volid)
}

fn write_into(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `<path>/template/cache` of a directory-backed storage in `storage.cfg`.
pub fn template_dir(storage_cfg: &str, storage: &str) -> Option<PathBuf> {
    const FILE_BASED: &[&str] = &["dir", "nfs", "cifs", "cephfs", "glusterfs", "btrfs"];
    let mut in_section = false;
    let mut kind_ok = false;
    for line in storage_cfg.lines() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !indented {
            in_section = false;
            if let Some((kind, id)) = line.split_once(':') {
                in_section = id.trim() == storage;
                kind_ok = FILE_BASED.contains(&kind.trim());
            }
            continue;
        }
        if in_section
            && let Some(("path", path)) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
        {
            let path = Path::new(path);
            return (kind_ok && path.is_absolute()).then(|| path.join("template/cache"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn template_holds_podinit_and_the_mount_points() {
        let (name, bytes) = build(b"\x7fELF podinit").unwrap();
        assert!(
            name.starts_with("pvecri-podinit-") && name.ends_with(".tar.gz"),
            "{name}"
        );
        assert_eq!(
            build(b"\x7fELF podinit").unwrap(),
            (name.clone(), bytes.clone())
        );
        assert_ne!(build(b"\x7fELF other").unwrap().0, name);
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            if path.ends_with("podinit") {
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                assert_eq!(body, b"\x7fELF podinit");
                assert_eq!(mode, 0o755);
            }
            if path == "tmp/" {
                assert_eq!(mode, 0o1777);
            }
            assert_eq!(e.header().uid().unwrap(), 0);
            seen.push(path);
        }
        assert!(seen.contains(&"pvecri/".to_string()), "{seen:?}");
        assert!(seen.contains(&"sbin/podinit".to_string()), "{seen:?}");
    }

    #[test]
    fn storage_paths() {
        let cfg = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
                   zfspool: local-zfs\n\tpool rpool/data\n\tcontent images,rootdir\n\n\
                   nfs: share\n\texport /x\n\tpath /mnt/pve/share\n\tserver 10.0.0.1\n";
        assert_eq!(
            template_dir(cfg, "local"),
            Some(PathBuf::from("/var/lib/vz/template/cache"))
        );
        assert_eq!(
            template_dir(cfg, "share"),
            Some(PathBuf::from("/mnt/pve/share/template/cache"))
        );
        assert_eq!(template_dir(cfg, "local-zfs"), None);
        assert_eq!(template_dir(cfg, "missing"), None);
    }
}
