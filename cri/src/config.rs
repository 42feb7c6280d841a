//! The daemon's configuration: one TOML file, every key with a default.
//!
//! Errors are single lines naming the key and the value, because an operator reads them in
//! `journalctl` or a DaemonSet's log where a multi-line snippet gets interleaved.

use std::fmt;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket (gRPC over a Unix socket, mode 0660).
    pub socket: PathBuf,
    /// Pods, containers, images and the overlay layer store live here.
    pub state_dir: PathBuf,
    pub log_level: LogLevel,
    /// The cgroup driver the kubelet is told to use (RuntimeConfig).
    pub cgroup_driver: CgroupDriver,
    pub cni: CniConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/pvecri/pvecri.sock"),
            state_dir: PathBuf::from("/var/lib/pvecri"),
            log_level: LogLevel::Info,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cni: CniConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

[cni]
# Network configurations; the first file in lexical order is used.
conf_dir = "/etc/cni/net.d"
# Where plugin executables are looked for, in order.
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
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
        Ok(())
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
