//! The daemon's configuration: one TOML file, every key with a default.
//!
//! Errors are single lines naming the key and the value, because an operator reads them in
//! `journalctl` or a DaemonSet's log where a multi-line snippet gets interleaved.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where `pvecri serve` looks when `--config` is not given. A missing file there means the
/// embedded defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pvecri/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket (gRPC over a Unix socket, mode 0660).
    pub socket: PathBuf,
    /// Pods, containers, images and the overlay layer store live here.
    pub state_dir: PathBuf,
    /// How much the daemon logs. `RUST_LOG`, when set, takes precedence.
    pub log_level: LogLevel,
    /// The cgroup driver the kubelet is told to use (RuntimeConfig). It must match the
    /// kubelet's `cgroupDriver` where the kubelet does not take it from the runtime.
    pub cgroup_driver: CgroupDriver,
    /// The static podinit binary; unset means: next to the pvecri executable, then
    /// /usr/local/lib/pvecri/podinit, then /usr/lib/pvecri/podinit.
    pub podinit_path: Option<PathBuf>,
    /// The layer store that holds images and container root filesystems.
    pub storage: StorageConfig,
    /// Where pod CTs are defined and run.
    pub pod_host: pve::PodHostConfig,
    /// `[pve]`: the Proxmox driver (`pod_host.driver = "pve"`).
    pub pve: pve::PveConfig,
    /// Pod networking through CNI plugins.
    pub cni: CniConfig,
    /// Image pulls.
    pub images: ImagesConfig,
    /// Mirrors, plain HTTP, CAs and credentials per registry name (`docker.io`,
    /// `registry.k8s.io`, `myregistry.example:5000`). A registry on a loopback address
    /// (`localhost`, `127.0.0.0/8`, `::1`) is reached over plain HTTP without configuration,
    /// as Docker does.
    pub registries: imageservice::hosts::RegistriesConfig,
    /// The Prometheus endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// The exec/attach/port-forward server.
    pub streaming: StreamingConfig,
}

/// `[streaming]` in the config: where the URLs of the Exec, Attach and PortForward RPCs lead.
/// Each URL carries a single-use token (32 random bytes) that expires
/// after a minute. The kubelet proxies its clients' streams to this server, so the loopback
/// default is all a node needs; listen elsewhere only for clients that reach the runtime
/// directly, and use TLS then. SPDY/3.1 and WebSocket (`v5`/`v4.channel.k8s.io`, the
/// `SPDY/3.1+portforward.k8s.io` tunnel) are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// `IP:port` to listen on, for example `127.0.0.1:0` (port 0 picks a free port) or
    /// `0.0.0.0:10010`.
    pub address: String,
    /// `http://` or `https://` URL (scheme, host, port, optional path) the handed-out URLs
    /// start with, when clients must use another name than `address`; unset: from `address`
    /// and the port in use (an unspecified IP becomes loopback).
    pub base_url: Option<String>,
    /// A stream with no traffic for this long is closed (the kubelet's
    /// `streamingConnectionIdleTimeout`): a number with `h`, `m`, `s` or `ms`, like `4h` or
    /// `1h30m`.
    pub idle_timeout: String,
    /// PEM certificate chain to serve HTTPS with (with `tls_key_file`; both or neither).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:0".into(),
            base_url: None,
            idle_timeout: "4h".into(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl StreamingConfig {
    /// `idle_timeout` as a duration (validated by [`Config::validate`]).
    pub fn idle(&self) -> std::time::Duration {
        parse_duration(&self.idle_timeout).unwrap_or(std::time::Duration::from_secs(4 * 3600))
    }
}

/// A Go-style duration: `4h`, `1h30m`, `90s`, `250ms` (no sign, no fractions).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total: u128 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 12 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    u64::try_from(total)
        .ok()
        .map(std::time::Duration::from_millis)
}

/// Switching drivers starts from an empty store: pull images again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The layer store's driver.
    pub driver: StorageDriver,
    /// Settings of the `zfs` driver.
    pub zfs: ZfsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageDriver {
    /// Each layer is a directory under `<state_dir>/overlay`; a container's root filesystem
    /// is an overlay mount of its image's layers with a fresh upper directory.
    #[default]
    Overlay,
    /// Each layer is a dataset under `storage.zfs.dataset`, named by its chain ID and
    /// snapshotted once complete; a child layer is a clone of its parent's snapshot and a
    /// container's root filesystem a clone of its image's top snapshot. Layers shared by
    /// images exist once.
    Zfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ZfsConfig {
    /// The parent dataset of the layer store; created if missing (its pool must exist). On
    /// Proxmox give it a dataset of its own, such as `rpool/pvecri`, never one that a Proxmox
    /// storage claims: Proxmox takes the children of its storages' datasets for guest volumes.
    pub dataset: String,
}

impl Default for ZfsConfig {
    fn default() -> Self {
        Self {
            dataset: "rpool/pvecri".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Layers downloaded at once, across all pulls.
    pub max_concurrent_downloads: usize,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 4,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/pvecri/pvecri.sock"),
            state_dir: PathBuf::from("/var/lib/pvecri"),
            log_level: LogLevel::Info,
            cgroup_driver: CgroupDriver::Cgroupfs,
            podinit_path: None,
            storage: StorageConfig::default(),
            pod_host: pve::PodHostConfig::default(),
            pve: pve::PveConfig::default(),
            cni: CniConfig::default(),
            images: ImagesConfig::default(),
            registries: Default::default(),
            metrics: Default::default(),
            streaming: StreamingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown log level `{other}`, expected one of trace, debug, info, warn, error"
            )),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// The kubelet names pod cgroups as paths (`kubepods/besteffort/pod<uid>`).
    Cgroupfs,
    /// The kubelet names pod cgroups as systemd slices (`kubepods-besteffort-pod<uid>.slice`),
    /// as kubeadm sets up on systemd hosts.
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Network configurations (`*.conf`, `*.conflist`, `*.json`); the first in lexical order
    /// is used, as the kubelet's other runtimes do.
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin executables.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

/// The default configuration, commented; `pvecri config default` prints it. A unit test
/// keeps it equal to `Config::default()`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# pvecri configuration: /etc/pvecri/config.toml
# Every key is optional; the values below are the defaults.

# The CRI socket the kubelet and crictl connect to (created with mode 0660).
socket = "/run/pvecri/pvecri.sock"

# Pods, containers, image metadata and the overlay layer store.
state_dir = "/var/lib/pvecri"

# trace, debug, info, warn or error. RUST_LOG, when set, takes precedence.
log_level = "info"

# The cgroup driver reported to the kubelet: "cgroupfs" or "systemd". It must match the
# kubelet's --cgroup-driver.
cgroup_driver = "cgroupfs"

# The static podinit binary that runs as PID 1 of every pod CT. Unset: next to the pvecri
# executable, then /usr/local/lib/pvecri/podinit, then /usr/lib/pvecri/podinit.
# podinit_path = "/usr/local/lib/pvecri/podinit"

[storage]
# "overlay" (a directory per layer under state_dir) or "zfs" (a dataset per layer).
driver = "overlay"

[storage.zfs]
# Parent dataset of the layer store, used when driver = "zfs". Keep it out of any Proxmox
# storage's dataset so that Proxmox never takes its children for guest volumes.
dataset = "rpool/pvecri"

[pod_host]
# "lxc" (plain LXC under state_dir/lxc) or "pve" (Proxmox CTs, configured in [pve]).
driver = "lxc"
# Pod CTs created and started ahead, for RunPodSandbox to adopt (either driver).
warm_pool = 0

[pve]
# Used with pod_host.driver = "pve". See docs/proxmox.md for the API token's privileges.
api_url = "https://127.0.0.1:8006/api2/json"
# node = "pve1"                          # default: this host's name
# One line USER@REALM!TOKENID=SECRET; must be owned by root, mode 0600.
token_file = "/etc/pvecri/pve-token"
# The API's certificate: pinned by SHA-256 fingerprint, or checked against ca_file.
# Neither set: the cluster CA, /etc/pve/pve-root-ca.pem.
# fingerprint = "AA:BB:..."
# ca_file = "/etc/pve/pve-root-ca.pem"
# Storage for the CTs' root volumes (podinit only; containers use the layer store).
storage = "local"
# template_storage = "local"             # pvecri's CT template; default: storage
# vmids pvecri may use; it never takes one any guest of the cluster has.
vmid_range = [900000, 999999]
# pool = "kubernetes"                     # optional resource pool for the CTs
# Pod CTs started ahead (also [pod_host] warm_pool).
warm_pool = 0

[cni]
# Network configurations; the first file in lexical order is used.
conf_dir = "/etc/cni/net.d"
# Where plugin executables are looked for, in order.
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]

[images]
# Layers downloaded at once, across all pulls.
max_concurrent_downloads = 4

[metrics]
# Where to serve Prometheus metrics (GET /metrics, plain HTTP), as IP:port, for example
# "127.0.0.1:9464" or "0.0.0.0:9464". Empty: no metrics endpoint.
address = ""

[streaming]
# Where the exec/attach/port-forward server listens (IP:PORT; port 0 = a free one). The
# kubelet proxies streams to it, so loopback is enough; listen on another address only for
# clients that reach the runtime directly, and then set TLS up.
address = "127.0.0.1:0"
# Scheme://host:port the URLs handed to the kubelet start with; default from `address`.
# base_url = "https://node1.example:10010"
# Close streams idle this long (the kubelet's streamingConnectionIdleTimeout).
idle_timeout = "4h"
# HTTPS with this certificate chain and key (PEM), both or neither.
# tls_cert_file = "/etc/pvecri/streaming.crt"
# tls_key_file = "/etc/pvecri/streaming.key"

# Registry hosts, per registry name. A registry on a loopback address is reached over plain
# HTTP without configuration. Examples:
#
# [registries."registry.k8s.io"]
# mirrors = ["http://127.0.0.1:5000"]     # tried in order before the registry itself
#
# [registries."myregistry.example:5000"]
# insecure = true                          # plain HTTP, or TLS without verification
# ca_files = ["/etc/pvecri/certs/my-ca.pem"]
#
# [registries."private.example".credentials]   # keep this file mode 0600 then
# username = "robot"
# password = "..."
"#;

impl Config {
    /// Loads `path`. With `explicit == false` a missing file yields the defaults; any other
    /// failure to read it is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(error) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| parse_err(one_line_toml_error(&e, text)))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = one_line_toml_error(e.inner(), text);
            parse_err(format!("key `{key}`: {inner}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: paths must be absolute, lists non-empty.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_absolute("socket", &self.socket)?;
        require_absolute("state_dir", &self.state_dir)?;
        require_absolute("cni.conf_dir", &self.cni.conf_dir)?;
        if self.cni.bin_dirs.is_empty() {
            return Err(ConfigError::Invalid {
                key: "cni.bin_dirs".into(),
                value: "[]".into(),
                reason: "at least one plugin directory is needed".into(),
            });
        }
        for (i, dir) in self.cni.bin_dirs.iter().enumerate() {
            require_absolute(&format!("cni.bin_dirs[{i}]"), dir)?;
        }
        if let Some(p) = &self.podinit_path {
            require_absolute("podinit_path", p)?;
        }
        validate_dataset(&self.storage.zfs.dataset)?;
        self.metrics.validate()?;
        self.validate_streaming()?;
        if self.pod_host.driver == pve::DriverKind::Pve {
            self.pve.validate().map_err(|e| match e {
                pve::pve::config::PveConfigError::Invalid { key, value, reason } => {
                    ConfigError::Invalid {
                        key: format!("pve.{key}"),
                        value: format!("{value:?}"),
                        reason,
                    }
                }
                other => ConfigError::Invalid {
                    key: "pve".into(),
                    value: String::new(),
                    reason: other.to_string(),
                },
            })?;
        }
        if self.images.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "images.max_concurrent_downloads".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        imageservice::hosts::validate(&self.registries).map_err(|e| ConfigError::Invalid {
            key: format!("registries.\"{}\".{}", e.registry, e.key),
            value: format!("{:?}", e.value),
            reason: e.reason,
        })?;
        Ok(())
    }

    fn validate_streaming(&self) -> Result<(), ConfigError> {
        let st = &self.streaming;
        let invalid = |key: &str, value: &str, reason: &str| ConfigError::Invalid {
            key: format!("streaming.{key}"),
            value: format!("{value:?}"),
            reason: reason.into(),
        };
        if st.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "address",
                &st.address,
                "not an IP:PORT address (like 127.0.0.1:0 or [::1]:10010)",
            ));
        }
        if let Some(url) = &st.base_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(invalid("base_url", url, "not an http:// or https:// URL"));
            }
        }
        match parse_duration(&st.idle_timeout) {
            Some(d) if !d.is_zero() => {}
            _ => {
                return Err(invalid(
                    "idle_timeout",
                    &st.idle_timeout,
                    "not a positive duration like 4h, 30m or 90s",
                ));
            }
        }
        match (&st.tls_cert_file, &st.tls_key_file) {
            (None, None) => {}
            (Some(c), Some(k)) => {
                require_absolute("streaming.tls_cert_file", c)?;
                require_absolute("streaming.tls_key_file", k)?;
            }
            (Some(c), None) | (None, Some(c)) => {
                return Err(invalid(
                    "tls_cert_file",
                    &c.display().to_string(),
                    "tls_cert_file and tls_key_file go together",
                ));
            }
        }
        Ok(())
    }

    /// The config with registry secrets blanked, for Status' verbose info and logs.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for reg in c.registries.values_mut() {
            if let Some(creds) = reg.credentials.as_mut() {
                for secret in [
                    &mut creds.password,
                    &mut creds.auth,
                    &mut creds.identity_token,
                    &mut creds.registry_token,
                ] {
                    if !secret.is_empty() {
                        *secret = "<redacted>".into();
                    }
                }
            }
        }
        c
    }

    /// Whether the file holds registry secrets.
    pub fn has_credentials(&self) -> bool {
        self.registries.values().any(|r| r.credentials.is_some())
    }
}

/// A ZFS dataset name: pool/child..., no snapshot part, no leading or doubled slash.
fn validate_dataset(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':'))
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "storage.zfs.dataset".into(),
            value: format!("{name:?}"),
            reason: "not a ZFS dataset name (pool/child, letters, digits, _-.:)".into(),
        })
    }
}

fn require_absolute(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            value: format!("{:?}", path.display().to_string()),
            reason: "must be an absolute path".into(),
        })
    }
}

/// toml's own Display is a multi-line snippet; keep its message and add the line number.
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let found = text.get(span).unwrap_or_default().trim();
    if found.is_empty() || message.contains(found) {
        format!("{message} (line {line})")
    } else {
        let found: String = found.chars().take(60).collect();
        format!("{message}, found `{found}` (line {line})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/test.toml"))
    }

    #[test]
    fn default_toml_is_the_default_config() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn keys_override_defaults() {
        let c = parse(
            "socket = \"/tmp/x.sock\"\nlog_level = \"debug\"\n[cni]\nconf_dir = \"/tmp/net\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.cni.conf_dir, PathBuf::from("/tmp/net"));
        assert_eq!(c.cni.bin_dirs, CniConfig::default().bin_dirs);
        assert_eq!(c.state_dir, Config::default().state_dir);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("sockett = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("sockett"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_nested_key_is_named_with_its_table() {
        let e = parse("[cni]\nconfdir = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("confdir"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let e = parse("log_level = \"loud\"\n").unwrap_err().to_string();
        assert!(e.contains("log_level"), "{e}");
        assert!(e.contains("loud"), "{e}");
        let e = parse("cgroup_driver = 3\n").unwrap_err().to_string();
        assert!(e.contains("cgroup_driver"), "{e}");
        assert!(e.contains('3'), "{e}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let e = parse("state_dir = \"var/lib\"\n").unwrap_err().to_string();
        assert!(e.contains("state_dir") && e.contains("var/lib"), "{e}");
    }

    #[test]
    fn sections_parse_and_validate() {
        let c = parse(
            "[storage]\ndriver = \"zfs\"\n[storage.zfs]\ndataset = \"tank/pvecri\"\n\
             [registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n\
             [registries.\"r.example\".credentials]\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        assert_eq!(c.storage.driver, StorageDriver::Zfs);
        assert_eq!(c.storage.zfs.dataset, "tank/pvecri");
        assert_eq!(
            c.registries["registry.k8s.io"].mirrors,
            ["http://127.0.0.1:5000"]
        );
        assert!(c.has_credentials());
        let shown = serde_json::to_string(&c.redacted()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = parse("[storage.zfs]\ndataset = \"/bad\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.zfs.dataset") && e.contains("/bad"),
            "{e}"
        );
        let e = parse("[registries.\"r.io\"]\nmirrors = [\"ftp://x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirrors[0]") && e.contains("ftp://x"), "{e}");
        let e = parse("[pod_host]\ndriver = \"vmware\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pod_host.driver") && e.contains("vmware"), "{e}");
    }

    #[test]
    fn streaming_section() {
        let c = parse(
            "[streaming]\naddress = \"0.0.0.0:10010\"\nidle_timeout = \"1h30m\"\n\
             base_url = \"https://node.example:10010\"\n",
        )
        .unwrap();
        assert_eq!(c.streaming.address, "0.0.0.0:10010");
        assert_eq!(c.streaming.idle(), std::time::Duration::from_secs(5400));
        for (bad, key) in [
            ("address = \"localhost\"", "streaming.address"),
            ("idle_timeout = \"4 hours\"", "streaming.idle_timeout"),
            ("idle_timeout = \"0s\"", "streaming.idle_timeout"),
            ("base_url = \"ftp://x\"", "streaming.base_url"),
            ("tls_cert_file = \"/c.pem\"", "streaming.tls_cert_file"),
        ] {
            let e = parse(&format!("[streaming]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("4h"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(
            parse_duration("4h0m0s"),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        for bad in [
            "",
            "h",
            "4",
            "4d",
            "-1s",
            "1.5h",
            "4h x",
            "99999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn pve_section() {
        let c = parse(
            "[pod_host]\ndriver = \"pve\"\nwarm_pool = 1\n[pve]\nnode = \"pve1\"\n\
             token_file = \"/etc/pvecri/t\"\nvmid_range = \"1000-1999\"\nstorage = \"local-zfs\"\n",
        )
        .unwrap();
        assert_eq!(c.pod_host.driver, pve::DriverKind::Pve);
        assert_eq!(c.pve.vmid_range.to_string(), "1000-1999");
        assert_eq!(c.pve.storage, "local-zfs");
        let e = parse("[pod_host]\ndriver = \"pve\"\n[pve]\nstorage = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pve.storage") && e.contains("a b"), "{e}");
        let e = parse("[pve]\nvmid_range = [5, 1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pve.vmid_range"), "{e}");
        let e = parse("[pve]\ntoken = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = parse("socket = \n").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_explicit_one_fails() {
        let p = Path::new("/nonexistent/pvecri.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(p, true),
            Err(ConfigError::Read { .. })
        ));
    }
}
