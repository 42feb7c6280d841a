//! Running CNI plugins per the CNI spec: ADD, CHECK and DEL of a network configuration list
//! in a pod's network namespace.
//!
//! As libcni does, the configuration and result of a successful ADD are cached on disk, so
//! that DEL tears down what ADD set up even if the configuration directory changed since,
//! and even across daemon restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::config::NetworkConfigList;

/// A plugin that has not answered by then is killed; CNI plugins take milliseconds.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Plugin stdout beyond this is not a CNI result.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin} {command} timed out after {secs}s")]
    Timeout {
        plugin: String,
        command: &'static str,
        secs: u64,
    },
    #[error("CNI plugin {plugin} {command}: {error}")]
    Exec {
        plugin: String,
        command: &'static str,
        error: std::io::Error,
    },
    #[error("CNI cache {path}: {error}")]
    Cache { path: PathBuf, error: String },
}

/// A host port forwarded to the pod (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty", default)]
    pub host_ip: String,
}

/// Who is being attached, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The pod sandbox ID (CNI_CONTAINERID).
    pub container_id: String,
    /// Path of the pod's network namespace, e.g. `/proc/<pid>/ns/net`; empty on a DEL when
    /// it is gone.
    pub netns: PathBuf,
    pub ifname: String,
    /// CNI_ARGS, in order (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
}

/// What ADD produced that pvecri needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AddResult {
    /// Pod IPs, IPv4 first (the kubelet takes the first as the primary).
    pub ips: Vec<String>,
    /// The whole result of the last plugin, as it printed it.
    pub raw: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    config: Value,
    attachment: Attachment,
    result: Value,
}

#[derive(Debug, Clone)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
}

impl Cni {
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self {
            bin_dirs,
            cache_dir,
        }
    }

    fn cache_path(&self, container_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{container_id}.json"))
    }

    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        if !plugin.contains('/') && !plugin.is_empty() && plugin != "." && plugin != ".." {
            for dir in &self.bin_dirs {
                let p = dir.join(plugin);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: self
                .bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
    }

    /// Runs ADD through the list; returns the pod IPs. On failure the plugins already added
    /// are deleted again, so nothing half-attached remains.
    pub async fn add(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
    ) -> Result<AddResult, CniError> {
        let config = list_to_value(net);
        let mut prev: Option<Value> = None;
        for (i, plugin) in net.plugins.iter().enumerate() {
            let conf = plugin_config(net, plugin, att, prev.as_ref());
            match self.exec("ADD", plugin_type(plugin), &conf, att).await {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    let partial = CacheEntry {
                        config: config.clone(),
                        attachment: att.clone(),
                        result: prev.clone().unwrap_or(Value::Null),
                    };
                    if let Err(del) = self.del_entry(&partial, i + 1).await {
                        tracing::warn!(error = %del, "cleaning up after a failed CNI ADD");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        self.write_cache(&CacheEntry {
            config,
            attachment: att.clone(),
            result: result.clone(),
        })?;
        Ok(AddResult {
            ips: result_ips(&result),
            raw: result,
        })
    }

    /// CHECK with the cached ADD; a network that predates 0.4.0 has no CHECK.
    pub async fn check(&self, container_id: &str) -> Result<(), CniError> {
        let Some(entry) = self.read_cache(container_id)? else {
            return Ok(());
        };
        let net = value_to_list(&entry.config);
        if version_lt(&net.cni_version, "0.4.0") {
            return Ok(());
        }
        for plugin in &net.plugins {
            let conf = plugin_config(&net, plugin, &entry.attachment, Some(&entry.result));
            self.exec("CHECK", plugin_type(plugin), &conf, &entry.attachment)
                .await?;
        }
        Ok(())
    }

    /// DEL with the cached ADD, in reverse order; `netns` replaces the cached path (empty
    /// when the namespace is gone, as the spec allows). Without a cache entry there is
    /// nothing to delete. The cache entry goes only when DEL succeeds.
    pub async fn del(&self, container_id: &str, netns: Option<&Path>) -> Result<(), CniError> {
        let Some(mut entry) = self.read_cache(container_id)? else {
            return Ok(());
        };
        entry.attachment.netns = netns.map(Path::to_path_buf).unwrap_or_default();
        let plugins = entry
            .config
            .get("plugins")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        self.del_entry(&entry, plugins).await?;
        let path = self.cache_path(container_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::Cache {
                path,
                error: e.to_string(),
            }),
        }
    }

    /// DEL of the first `count` plugins of the entry, last first. Every plugin is tried;
    /// the first error is returned.
    async fn del_entry(&self, entry: &CacheEntry, count: usize) -> Result<(), CniError> {
        let net = value_to_list(&entry.config);
        let mut first_err = None;
        for plugin in net.plugins.iter().take(count).rev() {
            let conf = plugin_config(
                &net,
                plugin,
                &entry.attachment,
                Some(&entry.result).filter(|r| !r.is_null()),
            );
            if let Err(e) = self
                .exec("DEL", plugin_type(plugin), &conf, &entry.attachment)
                .await
            {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn exec(
        &self,
        command: &'static str,
        plugin: &str,
        conf: &Value,
        att: &Attachment,
    ) -> Result<Value, CniError> {
        let path = self.find_plugin(plugin)?;
        let exec_err = |error| CniError::Exec {
            plugin: plugin.to_string(),
            command,
            error,
        };
        let cni_path = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let cni_args = att
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut child = Command::new(&path)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", cni_path)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        let input = serde_json::to_vec(conf).map_err(|e| exec_err(std::io::Error::other(e)))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit without reading its config (to report an error); its exit
            // status and output say what happened, not the broken pipe.
            if let Err(e) = stdin.write_all(&input).await
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(exec_err(e));
            }
        }
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin.to_string(),
                command,
                secs: PLUGIN_TIMEOUT.as_secs(),
            })?
            .map_err(exec_err)?;
        let stdout = &output.stdout[..output.stdout.len().min(MAX_OUTPUT)];
        if !output.status.success() {
            return Err(CniError::Plugin {
                plugin: plugin.to_string(),
                command,
                message: plugin_error_message(stdout, &output.stderr, output.status),
            });
        }
        if command != "ADD" || stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(stdout).map_err(|e| CniError::Plugin {
            plugin: plugin.to_string(),
            command,
            message: format!("result is not JSON: {e}"),
        })
    }

    fn write_cache(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let path = self.cache_path(&entry.attachment.container_id);
        let err = |e: String| CniError::Cache {
            path: path.clone(),
            error: e,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(entry).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, data).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))
    }

    fn read_cache(&self, container_id: &str) -> Result<Option<CacheEntry>, CniError> {
        let path = self.cache_path(container_id);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| CniError::Cache {
                    path,
                    error: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::Cache {
                path,
                error: e.to_string(),
            }),
        }
    }

    /// Whether ADD has been recorded for this pod.
    pub fn is_attached(&self, container_id: &str) -> bool {
        self.cache_path(container_id).exists()
    }
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

fn list_to_value(net: &NetworkConfigList) -> Value {
    json!({ "name": net.name, "cniVersion": net.cni_version, "plugins": net.plugins })
}

fn value_to_list(v: &Value) -> NetworkConfigList {
    NetworkConfigList {
        file: PathBuf::new(),
        name: v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        cni_version: v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.4.0")
            .to_string(),
        plugins: v
            .get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}

/// One plugin's stdin: its own object plus the list's name and version, the previous
/// result, and the runtime config for the capabilities it declares.
fn plugin_config(
    net: &NetworkConfigList,
    plugin: &Value,
    att: &Attachment,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    if let Some(obj) = conf.as_object_mut() {
        obj.insert("name".into(), json!(net.name));
        obj.insert("cniVersion".into(), json!(net.cni_version));
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
        let caps: BTreeMap<String, bool> = plugin
            .get("capabilities")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        if caps.get("portMappings").copied().unwrap_or(false) && !att.port_mappings.is_empty() {
            obj.insert(
                "runtimeConfig".into(),
                json!({ "portMappings": att.port_mappings }),
            );
        }
    }
    conf
}

/// The pod IPs of a result: `ips[].address` (0.3.0 and later) or `ip4`/`ip6` (0.2.0).
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut push = |cidr: &str| {
        let ip = cidr.split('/').next().unwrap_or(cidr).to_string();
        if ip.contains(':') {
            v6.push(ip)
        } else if !ip.is_empty() {
            v4.push(ip)
        }
    };
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        for ip in ips {
            if let Some(a) = ip.get("address").and_then(Value::as_str) {
                push(a);
            }
        }
    }
    for key in ["ip4", "ip6"] {
        if let Some(a) = result
            .pointer(&format!("/{key}/ip"))
            .and_then(Value::as_str)
        {
            push(a);
        }
    }
    v4.extend(v6);
    v4.dedup();
    v4
}

fn plugin_error_message(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
        let code = v.get("code").and_then(Value::as_u64);
        if !msg.is_empty() {
            let mut out = msg.to_string();
            if !details.is_empty() {
                out.push_str(": ");
                out.push_str(details);
            }
            if let Some(c) = code {
                out.push_str(&format!(" (code {c})"));
            }
            return out;
        }
    }
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("{status}")
    } else {
        format!(
            "{status}: {}",
            stderr.chars().take(2000).collect::<String>()
        )
    }
}

/// Compares dotted CNI versions numerically.
fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake plugin: logs its command and stdin, answers with a canned result or error.
    fn fake_plugin(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\nlog={}/calls.log\n{body}\n", dir.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn net(plugins: Value) -> NetworkConfigList {
        NetworkConfigList {
            file: PathBuf::from("x.conflist"),
            name: "testnet".into(),
            cni_version: "1.0.0".into(),
            plugins: plugins.as_array().unwrap().clone(),
        }
    }

    fn att() -> Attachment {
        Attachment {
            container_id: "abc".into(),
            netns: PathBuf::from("/proc/1/ns/net"),
            ifname: "eth0".into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), "ns".into()),
                ("K8S_POD_NAME".into(), "p".into()),
            ],
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        }
    }

    const RESULT: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.88.0.5/16","gateway":"10.88.0.1"}]}"#;

    #[tokio::test]
    async fn add_chains_prev_result_and_del_uses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        fake_plugin(
            &bin,
            "first",
            &format!(
                "echo \"first $CNI_COMMAND $CNI_ARGS $CNI_NETNS\" >> $log; cat > {}/first.$CNI_COMMAND.in; echo '{RESULT}'",
                bin.display()
            ),
        );
        fake_plugin(
            &bin,
            "second",
            &format!(
                "echo \"second $CNI_COMMAND\" >> $log; cat > {}/second.$CNI_COMMAND.in; [ $CNI_COMMAND = ADD ] && echo '{RESULT}'; true",
                bin.display()
            ),
        );
        let cni = Cni::new(
            vec![dir.path().join("nope"), bin.clone()],
            dir.path().join("cache"),
        );
        let n =
            net(json!([{"type":"first"},{"type":"second","capabilities":{"portMappings":true}}]));
        let r = cni.add(&n, &att()).await.unwrap();
        assert_eq!(r.ips, vec!["10.88.0.5", "fd00::5"]);
        let second_in: Value =
            serde_json::from_slice(&std::fs::read(bin.join("second.ADD.in")).unwrap()).unwrap();
        assert_eq!(second_in["prevResult"]["ips"][1]["address"], "10.88.0.5/16");
        assert_eq!(second_in["name"], "testnet");
        assert_eq!(
            second_in["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        let first_in: Value =
            serde_json::from_slice(&std::fs::read(bin.join("first.ADD.in")).unwrap()).unwrap();
        assert!(
            first_in.get("runtimeConfig").is_none(),
            "no capability declared"
        );
        assert!(cni.is_attached("abc"));

        cni.del("abc", None).await.unwrap();
        let log = std::fs::read_to_string(bin.join("calls.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines[0],
            "first ADD K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p /proc/1/ns/net"
        );
        assert_eq!(lines[1], "second ADD");
        assert_eq!(lines[2], "second DEL");
        assert_eq!(
            lines[3], "first DEL K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p ",
            "netns empty when gone"
        );
        assert!(!cni.is_attached("abc"));
        // A second DEL finds nothing to do.
        cni.del("abc", None).await.unwrap();
    }

    #[tokio::test]
    async fn failed_add_reports_the_plugin_error_and_undoes_earlier_plugins() {
        let dir = tempfile::tempdir().unwrap();
        fake_plugin(
            dir.path(),
            "ok",
            &format!("echo \"ok $CNI_COMMAND\" >> $log; echo '{RESULT}'"),
        );
        fake_plugin(
            dir.path(),
            "bad",
            "echo \"bad $CNI_COMMAND\" >> $log; echo '{\"code\":11,\"msg\":\"no IPs left\",\"details\":\"range full\"}'; exit 1",
        );
        let cni = Cni::new(vec![dir.path().to_path_buf()], dir.path().join("cache"));
        let e = cni
            .add(&net(json!([{"type":"ok"},{"type":"bad"}])), &att())
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bad ADD failed: no IPs left: range full (code 11)"),
            "{msg}"
        );
        let log = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
        assert_eq!(log, "ok ADD\nbad ADD\nbad DEL\nok DEL\n");
        assert!(!cni.is_attached("abc"));
    }

    #[tokio::test]
    async fn missing_plugin_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cni = Cni::new(vec![dir.path().to_path_buf()], dir.path().join("cache"));
        let e = cni
            .add(&net(json!([{"type":"bridge"}])), &att())
            .await
            .unwrap_err();
        assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
        assert!(e.to_string().contains("bridge"));
        let e = cni
            .add(&net(json!([{"type":"../../bin/sh"}])), &att())
            .await
            .unwrap_err();
        assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
    }

    #[test]
    fn old_results_and_versions() {
        let r = json!({"ip4":{"ip":"10.1.2.3/24"}});
        assert_eq!(result_ips(&r), vec!["10.1.2.3"]);
        assert!(version_lt("0.3.1", "0.4.0"));
        assert!(!version_lt("1.0.0", "0.4.0"));
    }
}
