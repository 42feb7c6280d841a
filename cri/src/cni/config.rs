//! Finding the CNI network configuration, as libcni does: the first loadable `*.conf`,
//! `*.conflist` or `*.json` file in the configuration directory, in lexical order.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CniConfigError {
    #[error("no network config found in {0}")]
    NotFound(PathBuf),
    #[error("cannot read CNI config directory {path}: {error}")]
    ReadDir {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A network configuration list, normalised: a single-plugin `.conf` becomes a list of one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Each plugin's configuration object as found in the file.
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    /// Parses one file; the error says why it cannot be used.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("no \"name\"")?
            .to_string();
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.4.0")
            .to_string();
        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err("\"plugins\" is not a list".into()),
            None if obj.contains_key("type") => vec![v.clone()],
            None => return Err("neither \"plugins\" nor \"type\"".into()),
        };
        if plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        for (i, p) in plugins.iter().enumerate() {
            if p.get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(format!("plugin {i} has no \"type\""));
            }
        }
        Ok(Self {
            file: file.to_path_buf(),
            name,
            cni_version,
            plugins,
        })
    }
}

/// Loads the network configuration the pods will use.
pub fn load_network(conf_dir: &Path) -> Result<NetworkConfigList, CniConfigError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniConfigError::NotFound(conf_dir.to_path_buf()));
        }
        Err(error) => {
            return Err(CniConfigError::ReadDir {
                path: conf_dir.to_path_buf(),
                error,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    for file in files {
        let parsed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| NetworkConfigList::parse(&file, &bytes));
        match parsed {
            Ok(list) => return Ok(list),
            Err(why) => tracing::warn!(file = %file.display(), %why, "skipping CNI config"),
        }
    }
    Err(CniConfigError::NotFound(conf_dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_and_empty_dir_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_network(&dir.path().join("nope")),
            Err(CniConfigError::NotFound(_))
        ));
        assert!(matches!(
            load_network(dir.path()),
            Err(CniConfigError::NotFound(_))
        ));
    }

    #[test]
    fn first_valid_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-broken.conf"), "{").unwrap();
        std::fs::write(dir.path().join("05-notes.txt"), "{}").unwrap();
        std::fs::write(
            dir.path().join("10-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        let list = load_network(dir.path()).unwrap();
        assert_eq!(list.name, "b");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(list.plugins.len(), 2);
    }

    #[test]
    fn single_plugin_conf_becomes_a_list() {
        let list = NetworkConfigList::parse(
            Path::new("x.conf"),
            br#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"cni0"}"#,
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["bridge"], "cni0");
    }

    #[test]
    fn plugins_without_type_are_refused() {
        let e = NetworkConfigList::parse(
            Path::new("x.conflist"),
            br#"{"name":"a","plugins":[{"bridge":"x"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("type"), "{e}");
    }
}
