//! `[pod_host]` in the daemon's config, and building the configured driver.

use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PodHost;
use crate::error::PodHostError;
use crate::lxc::{LxcDriver, LxcOptions};

/// ```toml
/// [pod_host]
/// driver = "lxc"   # or "pve"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PodHostConfig {
    /// The pod host's driver.
    pub driver: DriverKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Plain LXC under pvecri's own lxcpath, `<state_dir>/lxc`.
    #[default]
    Lxc,
    /// Proxmox VE CTs through the PVE API.
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

/// Builds the configured pod host.
pub fn build(config: &PodHostConfig, state_dir: &Path) -> Result<Arc<dyn PodHost>, PodHostError> {
    match config.driver {
        DriverKind::Lxc => Ok(Arc::new(LxcDriver::new(LxcOptions::new(lxc_path(
            state_dir,
        )))?)),
        DriverKind::Pve => Err(PodHostError::DriverUnavailable {
            driver: DriverKind::Pve.as_str().to_string(),
            reason: "the Proxmox driver is not part of this build yet; use driver = \"lxc\""
                .to_string(),
        }),
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
    fn pve_driver_says_it_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let config = PodHostConfig {
            driver: DriverKind::Pve,
        };
        let err = build(&config, dir.path()).err().unwrap();
        assert!(
            matches!(err, PodHostError::DriverUnavailable { .. }),
            "{err}"
        );
    }
}
