//! The Debian package and the installer image, built by the repository's own scripts
//! (`scripts/build-deb`, `scripts/build-image`) from the binaries under test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cmd::{require_program, run};
use crate::daemon::binary_path;
use crate::pods::podinit_path;

/// A package at this path is used as is instead of one built from the binaries under test
/// (CI sets it to the release package it built).
pub const PVECRI_DEB_ENV: &str = "PVECRI_DEB";

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Builds `pvecri_<version>-<revision>_<arch>.deb` into `out` from the pvecri binary and the
/// static podinit under test; returns its path.
pub fn build_deb(out: &Path, revision: u32) -> anyhow::Result<PathBuf> {
    require_program("/usr/bin/dpkg-deb", "dpkg")?;
    require_program("/usr/bin/strip", "binutils")?;
    let stdout = run(Command::new(workspace_dir().join("scripts/build-deb"))
        .arg("--pvecri")
        .arg(binary_path()?)
        .arg("--podinit")
        .arg(podinit_path()?)
        .arg("--out")
        .arg(out)
        .env("DEB_REVISION", revision.to_string())
        .env("DEB_COMPRESSION", "gzip"))?;
    let deb = PathBuf::from(stdout.trim());
    if !deb.is_file() {
        bail!("scripts/build-deb printed {stdout:?}, which is no file");
    }
    Ok(deb)
}

/// `$PVECRI_DEB` when set, else a package built into `out` (revision 1).
pub fn deb_under_test(out: &Path) -> anyhow::Result<PathBuf> {
    match std::env::var_os(PVECRI_DEB_ENV) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{PVECRI_DEB_ENV}={} does not name a file", p.display());
            }
            Ok(p)
        }
        None => build_deb(out, 1),
    }
}

/// A field of the package's control file (`dpkg-deb -f`).
pub fn control_field(deb: &Path, field: &str) -> anyhow::Result<String> {
    Ok(run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .with_context(|| format!("reading {field} of {}", deb.display()))?
        .trim()
        .to_string())
}

/// The paths the package installs (`./usr/bin/pvecri` written as `/usr/bin/pvecri`).
pub fn package_paths(deb: &Path) -> anyhow::Result<Vec<String>> {
    let out = run(Command::new("sh")
        .args(["-c", "dpkg-deb --fsys-tarfile \"$1\" | tar -t", "sh"])
        .arg(deb))?;
    Ok(out
        .lines()
        .map(|l| l.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect())
}
