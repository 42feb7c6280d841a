//! `[pod_host]` in the daemon's config, and building the configured driver.

use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PodHost;
use crate::error::PodHostError;
use crate::lxc::{LxcDriver, LxcOptions};
use crate::pve::PveDriver;
use crate::pve::config::PveConfig;

/// ```toml
/// [pod_host]
/// driver = "lxc"   # or "pve" (configured in [pve])
/// warm_pool = 0    # CTs started ahead of RunPodSandbox
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PodHostConfig {
    /// The pod host's driver.
    pub driver: DriverKind,
    /// Pod CTs kept created and started ahead, with podinit idle, for RunPodSandbox to adopt
    /// (hostname, limits, sysctls; on Proxmox also tags and notes) instead of making one; the
    /// pool refills in the background. Host-network, host-namespace and user-namespace pods
    /// are made as usual. Either driver; `pve.warm_pool` also sets it for the pve driver.
    pub warm_pool: usize,
}

impl PodHostConfig {
    /// The warm pool's size for the configured driver.
    pub fn warm_pool_size(&self, pve: &PveConfig) -> usize {
        match self.driver {
            DriverKind::Lxc => self.warm_pool,
            DriverKind::Pve => self.warm_pool.max(pve.warm_pool),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Plain LXC under pvecri's own lxcpath, `<state_dir>/lxc`.
    #[default]
    Lxc,
    /// Proxmox VE CTs through the Proxmox API, configured in `[pve]` (see docs/proxmox.md).
    Pve,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lxc => "lxc",
            Self::Pve => "pve",
        }
    }
}

/// The lxc driver's lxcpath: pvecri's own, never `/var/lib/lxc`.
pub fn lxc_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("lxc")
}

/// Builds the configured pod host. The pve driver reads its token here: a token file that
/// is missing or readable by others stops the daemon at start.
pub fn build(
    config: &PodHostConfig,
    pve: &PveConfig,
    state_dir: &Path,
) -> Result<Arc<dyn PodHost>, PodHostError> {
    match config.driver {
        DriverKind::Lxc => Ok(Arc::new(LxcDriver::new(LxcOptions::new(lxc_path(
            state_dir,
        )))?)),
        DriverKind::Pve => Ok(Arc::new(PveDriver::new(pve, state_dir)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default)]
        pod_host: PodHostConfig,
    }

    #[test]
    fn default_is_lxc() {
        let c: Outer = serde_json::from_str("{}").unwrap();
        assert_eq!(c.pod_host.driver, DriverKind::Lxc);
        let c: Outer = serde_json::from_str(r#"{"pod_host":{}}"#).unwrap();
        assert_eq!(c.pod_host.driver, DriverKind::Lxc);
    }

    #[test]
    fn driver_names() {
        let c: PodHostConfig = serde_json::from_str(r#"{"driver":"pve"}"#).unwrap();
        assert_eq!(c.driver, DriverKind::Pve);
        assert!(serde_json::from_str::<PodHostConfig>(r#"{"driver":"docker"}"#).is_err());
        assert!(serde_json::from_str::<PodHostConfig>(r#"{"drvier":"lxc"}"#).is_err());
    }

    #[test]
    fn lxcpath_is_under_the_state_dir() {
        assert_eq!(
            lxc_path(Path::new("/var/lib/pvecri")),
            Path::new("/var/lib/pvecri/lxc")
        );
    }

    #[test]
    fn pve_driver_without_a_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = PodHostConfig {
            driver: DriverKind::Pve,
            warm_pool: 0,
        };
        let pve = PveConfig {
            token_file: dir.path().join("missing-token"),
            ..Default::default()
        };
        let err = build(&config, &pve, dir.path()).err().unwrap();
        assert!(
            matches!(err, PodHostError::DriverUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("missing-token"), "{err}");
    }

    #[test]
    fn warm_pool_sizes() {
        let mut c = PodHostConfig::default();
        let mut pve = PveConfig::default();
        assert_eq!(c.warm_pool_size(&pve), 0);
        c.warm_pool = 2;
        pve.warm_pool = 3;
        assert_eq!(c.warm_pool_size(&pve), 2, "lxc: [pod_host] only");
        c.driver = DriverKind::Pve;
        assert_eq!(c.warm_pool_size(&pve), 3);
    }
}
