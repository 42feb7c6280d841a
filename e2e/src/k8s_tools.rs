//! The field's own clients from `../shared/k8s-tools` (critest, crictl, kubelet, kubectl,
//! helm) and the stand-in images critest and the kubelet pull by their upstream names.
//!
//! The tools ship zstd-compressed in a read-only folder; [`bin`] unpacks them once per
//! machine (under a lock, as tests run in parallel processes). [`StandInRegistry`] serves the
//! stand-ins from a local registry, and [`StandInRegistry::mirrors_toml`] gives the daemon
//! the mirrors that make `registry.k8s.io/...` and friends resolve to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cmd::{require_program, run};
use crate::lock::FileLock;
use crate::registry::{Registry, RegistryOptions};

/// Where `../shared` is when the checkout does not sit beside it.
pub const SHARED_DIR_ENV: &str = "PVECRI_SHARED_DIR";
/// Where the tools are unpacked (the `unpack` script's own variable).
pub const TOOLS_HOME_ENV: &str = "K8S_TOOLS_HOME";
const DEFAULT_TOOLS_HOME: &str = "/var/tmp/k8s-tools";
const UNPACK_LOCK: &str = "/var/tmp/pvecri-k8s-tools-unpack.lock";

/// Upstream registries whose images critest and the kubelet pull: each gets the stand-in
/// registry as its mirror.
pub const UPSTREAM_REGISTRIES: [&str; 4] =
    ["registry.k8s.io", "gcr.io", "public.ecr.aws", "docker.io"];

/// The shared folder: `$PVECRI_SHARED_DIR`, else the nearest `shared/` beside the checkout
/// or one of its parents (`<workspace>/../shared` in CI; worktrees sit deeper).
pub fn shared_dir() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("k8s-tools/unpack").is_file();
    if let Some(dir) = std::env::var_os(SHARED_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if !has_tools(&dir) {
            bail!("{SHARED_DIR_ENV}={} has no k8s-tools/unpack", dir.display());
        }
        return Ok(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"));
    workspace
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared"))
        .find(|d| has_tools(d))
        .with_context(|| {
            format!(
                "no shared/k8s-tools beside {} or its parents: set {SHARED_DIR_ENV}",
                workspace.display()
            )
        })
}

pub fn k8s_tools_dir() -> anyhow::Result<PathBuf> {
    Ok(shared_dir()?.join("k8s-tools"))
}

/// The directory holding the unpacked binaries (critest, crictl, kubelet, kubectl, helm,
/// kube-*), unpacking them first if needed.
pub fn bin() -> anyhow::Result<PathBuf> {
    require_program("/usr/bin/zstd", "zstd")?;
    let home = std::env::var_os(TOOLS_HOME_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOOLS_HOME));
    let _lock = FileLock::exclusive(Path::new(UNPACK_LOCK))?;
    let out = run(Command::new(k8s_tools_dir()?.join("unpack")).arg(&home))?;
    let dir = PathBuf::from(out.trim());
    if !dir.join("critest").is_file() {
        bail!(
            "unpacking k8s-tools into {} left no critest",
            home.display()
        );
    }
    Ok(dir)
}

/// The path of one unpacked tool.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin()?.join(name);
    if !path.is_file() {
        bail!("k8s-tools has no {name} (looked at {})", path.display());
    }
    Ok(path)
}

/// One line of `images/images.txt`: the upstream repository path with its tag, and the tag
/// of the stand-in in the OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    /// `e2e-test-images/busybox:1.29-2`: the path under any of the upstream registries.
    pub repo_tag: String,
    pub layout_tag: String,
}

/// Parses `images.txt` (`REPO:TAG  LAYOUT-TAG  # comment`, blank and `#` lines ignored).
pub fn parse_images_txt(text: &str) -> anyhow::Result<Vec<StandIn>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(repo_tag), Some(layout_tag), None) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!(
                "images.txt line {}: want `REPO:TAG LAYOUT-TAG`: {line:?}",
                n + 1
            );
        };
        if !repo_tag.contains(':') {
            bail!("images.txt line {}: {repo_tag:?} has no tag", n + 1);
        }
        out.push(StandIn {
            repo_tag: repo_tag.to_string(),
            layout_tag: layout_tag.to_string(),
        });
    }
    Ok(out)
}

/// A local registry holding every stand-in image under its upstream repository path.
pub struct StandInRegistry {
    pub registry: Registry,
    pub images: Vec<StandIn>,
}

impl StandInRegistry {
    /// Starts a registry and copies every stand-in into it with skopeo (as Docker schema 2,
    /// which is what the upstream registries serve for these images).
    pub fn start() -> anyhow::Result<StandInRegistry> {
        Self::start_with(|_| true)
    }

    /// The same with only the stand-ins `wanted` picks.
    pub fn start_with(wanted: impl Fn(&StandIn) -> bool) -> anyhow::Result<StandInRegistry> {
        require_program("/usr/bin/skopeo", "skopeo")?;
        let images_dir = k8s_tools_dir()?.join("images");
        let text = std::fs::read_to_string(images_dir.join("images.txt"))
            .with_context(|| format!("reading {}/images.txt", images_dir.display()))?;
        let images: Vec<StandIn> = parse_images_txt(&text)?
            .into_iter()
            .filter(|i| wanted(i))
            .collect();
        let registry = Registry::start(RegistryOptions::default())?;
        let layout = images_dir.join("oci");
        for image in &images {
            run(Command::new("/usr/bin/skopeo")
                .args([
                    "copy",
                    "--quiet",
                    "--format",
                    "v2s2",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("oci:{}:{}", layout.display(), image.layout_tag))
                .arg(format!("docker://{}/{}", registry.addr(), image.repo_tag)))
            .with_context(|| format!("pushing the stand-in for {}", image.repo_tag))?;
        }
        Ok(StandInRegistry { registry, images })
    }

    /// `[registries."..."]` sections that send every upstream registry to this one.
    pub fn mirrors_toml(&self) -> String {
        UPSTREAM_REGISTRIES
            .iter()
            .map(|host| {
                format!(
                    "[registries.\"{host}\"]\nmirrors = [\"http://{}\"]\n",
                    self.registry.addr()
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_txt_lines() {
        let text = "\
# comment
e2e-test-images/busybox:1.29-2   busybox   # default image

pause:3.10 pause
";
        assert_eq!(
            parse_images_txt(text).unwrap(),
            vec![
                StandIn {
                    repo_tag: "e2e-test-images/busybox:1.29-2".into(),
                    layout_tag: "busybox".into()
                },
                StandIn {
                    repo_tag: "pause:3.10".into(),
                    layout_tag: "pause".into()
                },
            ]
        );
        assert!(
            parse_images_txt("busybox\n").is_err(),
            "a line without a layout tag"
        );
        assert!(parse_images_txt("busybox busybox\n").is_err(), "no tag");
        assert!(parse_images_txt("a:1 b c\n").is_err(), "three fields");
    }
}
