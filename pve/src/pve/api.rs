//! A small client for the Proxmox VE API: the LXC, task and storage endpoints pvecri uses.
//!
//! Proxmox answers `{"data": ...}` on success and `{"data": null, "message": ...}` otherwise,
//! with 500 for every plain `die` (not found, conflicts): errors are classified by their
//! message. Long operations return a task id (UPID) at once; [`Api::wait_task`] polls it and
//! puts the task's log into the error when it fails.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Map, Value};
use tracing::debug;

use super::config::Token;

/// How long one request may take (tasks return at once; this bounds a hung server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of a failed task's log quoted in the error.
const TASK_LOG_LINES: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("the Proxmox API at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the Proxmox API rejected the API token {token} (HTTP 401 {message}): check the token id \
         and secret in pve.token_file, and that the token exists and has not expired"
    )]
    Unauthenticated { token: String, message: String },
    #[error("{}", forbidden_message(token, method, path, message, needs))]
    Forbidden {
        token: String,
        method: String,
        path: String,
        message: String,
        /// What Proxmox documents for the endpoint, for messages that name no privilege.
        needs: String,
    },
    #[error("Proxmox API {method} {path}: HTTP {status}: {message}")]
    Http {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("Proxmox API {method} {path}: unexpected response: {reason}")]
    BadResponse {
        method: String,
        path: String,
        reason: String,
    },
    #[error("Proxmox task {upid} failed: {exitstatus}{log}")]
    TaskFailed {
        upid: String,
        exitstatus: String,
        log: String,
    },
    #[error("Proxmox task {upid} did not finish within {secs} s")]
    TaskTimeout { upid: String, secs: u64 },
}

/// "Permission check failed (/vms/900001, VM.PowerMgmt)" names the path and privilege; say
/// it in words an admin can act on.
fn forbidden_message(token: &str, method: &str, path: &str, message: &str, needs: &str) -> String {
    match missing_privilege(message) {
        Some((acl_path, privilege)) => format!(
            "the API token {token} lacks the privilege {privilege} on {acl_path} ({method} {path}: \
             {message}); grant it a role with {privilege} on {acl_path} (see docs/proxmox.md)"
        ),
        None => format!(
            "the API token {token} lacks a privilege for {method} {path}, which needs {needs} \
             (Proxmox: {message}); see docs/proxmox.md for the role pvecri's token needs"
        ),
    }
}

/// The privileges Proxmox documents for the endpoints pvecri calls (API schema
/// `permissions`), with `{vmid}`-like parts filled in from the path.
pub fn documented_privileges(method: &str, segments: &[&str], form: &[(&str, String)]) -> String {
    let param = |k: &str| {
        form.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.as_str())
    };
    let vm = |id: &str| format!("/vms/{id}");
    match (method, segments) {
        ("POST", ["nodes", _, "lxc"]) => {
            let vmid = param("vmid").unwrap_or("{vmid}");
            let storage = param("rootfs")
                .and_then(|r| r.split(':').next())
                .unwrap_or("{storage}");
            let template = param("ostemplate")
                .and_then(|r| r.split(':').next())
                .unwrap_or("{storage}");
            format!(
                "VM.Allocate on {}{}, VM.Config.Disk, VM.Config.CPU, VM.Config.Memory, \
                 VM.Config.Network and VM.Config.Options on it, Datastore.AllocateSpace on \
                 /storage/{storage}, Datastore.Audit on /storage/{template}",
                vm(vmid),
                param("pool")
                    .map(|p| format!(" (or /pool/{p})"))
                    .unwrap_or_default()
            )
        }
        ("GET", ["nodes", _, "lxc"]) => "VM.Audit on each /vms/{vmid}".into(),
        ("DELETE", ["nodes", _, "lxc", id]) => format!("VM.Allocate on {}", vm(id)),
        ("GET", ["nodes", _, "lxc", id, ..]) => format!("VM.Audit on {}", vm(id)),
        ("PUT", ["nodes", _, "lxc", id, "config"]) => format!(
            "VM.Config.CPU, VM.Config.Memory, VM.Config.Network and VM.Config.Options on {}",
            vm(id)
        ),
        ("POST", ["nodes", _, "lxc", id, "status", _]) => format!("VM.PowerMgmt on {}", vm(id)),
        ("GET", ["nodes", _, "storage", sid, "content"]) => {
            format!("Datastore.Audit on /storage/{sid}")
        }
        ("POST", ["nodes", _, "storage", sid, "upload"]) => {
            format!("Datastore.AllocateTemplate on /storage/{sid}")
        }
        ("GET", ["nodes", node, "tasks", ..]) => {
            format!("Sys.Audit on /nodes/{node} for tasks of other users")
        }
        _ => "a privilege (see the Proxmox API documentation)".into(),
    }
}

/// `(ACL path, privilege)` from Proxmox's "Permission check failed (PATH, PRIV)".
pub fn missing_privilege(message: &str) -> Option<(String, String)> {
    let inner = message
        .split_once("Permission check failed (")?
        .1
        .rsplit_once(')')?
        .0;
    let (path, privilege) = inner.split_once(", ")?;
    (path.starts_with('/') && !privilege.contains(' '))
        .then(|| (path.to_string(), privilege.to_string()))
}

impl ApiError {
    fn message(&self) -> &str {
        match self {
            Self::Http { message, .. } => message,
            _ => "",
        }
    }
    /// The config file of a guest does not exist (Proxmox has no 404).
    pub fn is_not_found(&self) -> bool {
        self.message().contains("does not exist")
    }
    pub fn is_already_exists(&self) -> bool {
        self.message().contains("already exists")
    }
    pub fn is_not_running(&self) -> bool {
        self.message().contains("not running")
    }
    pub fn is_already_running(&self) -> bool {
        self.message().contains("already running")
    }
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
    /// Proxmox could not fork the task's worker (seen on a loaded node): nothing started, the
    /// request may be sent again.
    pub fn is_worker_not_started(&self) -> bool {
        self.message().contains("got no worker upid")
    }
    /// A read failed because a signal interrupted Proxmox's own IPC with the CT's LXC command
    /// socket (`status/current` while the API server reaps a worker, seen under load): EINTR,
    /// nothing about the CT; the read may be sent again.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Http { status: 500.., .. })
            && self.message().contains("Interrupted system call")
    }
}

/// Tries of a read that Proxmox failed with EINTR.
const READ_TRIES: u32 = 4;

/// Tries of a task request that Proxmox could not fork a worker for.
const WORKER_TRIES: u32 = 5;

pub type ApiResult<T> = Result<T, ApiError>;

/// One CT as `GET /nodes/{node}/lxc` and `status/current` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtState {
    pub vmid: u32,
    /// `running` or `stopped`.
    pub status: String,
    /// Host PID of the CT's init while it runs.
    pub pid: Option<u32>,
    pub tags: Vec<String>,
    pub lock: Option<String>,
    pub name: Option<String>,
}

impl CtState {
    pub fn running(&self) -> bool {
        self.status == "running"
    }

    fn from_value(v: &Value, vmid: Option<u32>) -> Option<Self> {
        let vmid = vmid.or_else(|| v.get("vmid").and_then(as_u32))?;
        Some(Self {
            vmid,
            status: v.get("status")?.as_str()?.to_string(),
            pid: v.get("pid").and_then(as_u32).filter(|p| *p > 0),
            tags: v
                .get("tags")
                .and_then(Value::as_str)
                .map(split_tags)
                .unwrap_or_default(),
            lock: v
                .get("lock")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
            name: v.get("name").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// Proxmox lists split on `;`, `,` or whitespace.
pub fn split_tags(text: &str) -> Vec<String> {
    text.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Proxmox sends numbers as JSON numbers or strings depending on the endpoint.
pub fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub struct Api {
    http: reqwest::Client,
    base: Url,
    node: String,
    token_id: String,
    auth: HeaderValue,
}

impl Api {
    pub fn new(
        base: &str,
        node: &str,
        token: &Token,
        tls: rustls::ClientConfig,
    ) -> Result<Self, String> {
        let base = Url::parse(base).map_err(|e| format!("api_url: {e}"))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let mut auth = HeaderValue::from_str(&token.header())
            .map_err(|_| "the API token holds characters not allowed in a header".to_string())?;
        auth.set_sensitive(true);
        Ok(Self {
            http,
            base,
            node: node.to_string(),
            token_id: token.id.clone(),
            auth,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request and returns `data`. A read (GET) that Proxmox failed only because a
    /// signal interrupted its own IPC is sent again, a few times.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        form: Option<&[(&str, String)]>,
        multipart: Option<reqwest::multipart::Form>,
    ) -> ApiResult<Value> {
        if method != Method::GET || multipart.is_some() {
            return self
                .call_once(method, segments, query, form, multipart)
                .await;
        }
        let mut tries = 1;
        loop {
            match self
                .call_once(Method::GET, segments, query, form, None)
                .await
            {
                Err(e) if e.is_interrupted() && tries < READ_TRIES => {
                    debug!(error = %e, tries, "Proxmox read interrupted, sending it again");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        form: Option<&[(&str, String)]>,
        multipart: Option<reqwest::multipart::Form>,
    ) -> ApiResult<Value> {
        let url = self.url(segments, query);
        let shown_path = format!("/{}", segments.join("/"));
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(form) = form {
            req = req.form(form);
        }
        if let Some(mp) = multipart {
            req = req.multipart(mp);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            url: self.base.to_string(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let reason = status.canonical_reason().unwrap_or("").to_string();
        let body = resp.bytes().await.map_err(|e| ApiError::Unreachable {
            url: self.base.to_string(),
            reason: format!("reading the response: {}", error_chain(&e)),
        })?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let message = json
            .as_ref()
            .and_then(|j| {
                let mut m = j.get("message")?.as_str()?.trim().to_string();
                if let Some(errors) = j.get("errors").and_then(Value::as_object) {
                    for (k, v) in errors {
                        m.push_str(&format!(" {k}: {}", v.as_str().unwrap_or_default().trim()));
                    }
                }
                Some(m)
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                if text.is_empty() || text.starts_with('<') {
                    reason.clone()
                } else {
                    text.chars().take(300).collect()
                }
            });
        debug!(%method, path = %shown_path, status = status.as_u16(), "Proxmox API");
        match status.as_u16() {
            200..=299 => {}
            401 => {
                return Err(ApiError::Unauthenticated {
                    token: self.token_id.clone(),
                    message,
                });
            }
            403 => {
                return Err(ApiError::Forbidden {
                    token: self.token_id.clone(),
                    needs: documented_privileges(method.as_str(), segments, form.unwrap_or(&[])),
                    method: method.to_string(),
                    path: shown_path,
                    message,
                });
            }
            code => {
                return Err(ApiError::Http {
                    method: method.to_string(),
                    path: shown_path,
                    status: code,
                    message,
                });
            }
        }
        let json = json.ok_or_else(|| ApiError::BadResponse {
            method: method.to_string(),
            path: shown_path.clone(),
            reason: "the body is not JSON".into(),
        })?;
        Ok(json.get("data").cloned().unwrap_or(Value::Null))
    }

    fn bad(&self, method: &str, path: &str, reason: impl Into<String>) -> ApiError {
        ApiError::BadResponse {
            method: method.into(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn upid(&self, data: Value, what: &str) -> ApiResult<String> {
        match data.as_str() {
            Some(s) if s.starts_with("UPID:") => Ok(s.to_string()),
            _ => Err(self.bad("POST", what, format!("expected a task id, got {data}"))),
        }
    }

    pub async fn version(&self) -> ApiResult<String> {
        let v = self
            .call(Method::GET, &["version"], &[], None, None)
            .await?;
        Ok(v.get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Every CT on the node.
    pub async fn list_cts(&self) -> ApiResult<Vec<CtState>> {
        let v = self
            .call(Method::GET, &["nodes", &self.node, "lxc"], &[], None, None)
            .await?;
        let list = v
            .as_array()
            .ok_or_else(|| self.bad("GET", "/nodes/{node}/lxc", "not a list"))?;
        Ok(list
            .iter()
            .filter_map(|e| CtState::from_value(e, None))
            .collect())
    }

    pub async fn ct_status(&self, vmid: u32) -> ApiResult<CtState> {
        let id = vmid.to_string();
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "lxc", &id, "status", "current"],
                &[],
                None,
                None,
            )
            .await?;
        CtState::from_value(&v, Some(vmid))
            .ok_or_else(|| self.bad("GET", "status/current", format!("no status in {v}")))
    }

    pub async fn ct_config(&self, vmid: u32) -> ApiResult<Map<String, Value>> {
        let id = vmid.to_string();
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "lxc", &id, "config"],
                &[],
                None,
                None,
            )
            .await?;
        match v {
            Value::Object(m) => Ok(m),
            other => Err(self.bad("GET", "config", format!("not an object: {other}"))),
        }
    }

    /// `POST /nodes/{node}/lxc`; returns the create task.
    pub async fn create_ct(&self, params: &[(&str, String)]) -> ApiResult<String> {
        let v = self
            .call(
                Method::POST,
                &["nodes", &self.node, "lxc"],
                &[],
                Some(params),
                None,
            )
            .await?;
        self.upid(v, "/nodes/{node}/lxc")
    }

    /// Synchronous config change (hot-plugged on a running CT where Proxmox can).
    pub async fn set_config(&self, vmid: u32, params: &[(&str, String)]) -> ApiResult<()> {
        let id = vmid.to_string();
        self.call(
            Method::PUT,
            &["nodes", &self.node, "lxc", &id, "config"],
            &[],
            Some(params),
            None,
        )
        .await?;
        Ok(())
    }

    /// `start`, `stop` or `shutdown`; returns the task.
    pub async fn ct_power(
        &self,
        vmid: u32,
        action: &str,
        params: &[(&str, String)],
    ) -> ApiResult<String> {
        let id = vmid.to_string();
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self
                .call(
                    Method::POST,
                    &["nodes", &self.node, "lxc", &id, "status", action],
                    &[],
                    Some(params),
                    None,
                )
                .await;
            match r {
                Err(e) if e.is_worker_not_started() && tries < WORKER_TRIES => {
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(tries))).await;
                }
                r => return self.upid(r?, action),
            }
        }
    }

    /// Destroys the CT (stopping it first) and drops it from jobs; returns the task.
    pub async fn destroy_ct(&self, vmid: u32) -> ApiResult<String> {
        let id = vmid.to_string();
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self
                .call(
                    Method::DELETE,
                    &["nodes", &self.node, "lxc", &id],
                    &[
                        ("purge", "1"),
                        ("force", "1"),
                        ("destroy-unreferenced-disks", "1"),
                    ],
                    None,
                    None,
                )
                .await;
            match r {
                Err(e) if e.is_worker_not_started() && tries < WORKER_TRIES => {
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(tries))).await;
                }
                r => return self.upid(r?, "DELETE /nodes/{node}/lxc/{vmid}"),
            }
        }
    }

    /// Where a volume lives on the node (`GET .../storage/{storage}/content/{volume}`).
    pub async fn volume_path(&self, storage: &str, volid: &str) -> ApiResult<String> {
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "storage", storage, "content", volid],
                &[],
                None,
                None,
            )
            .await?;
        v.get("path")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.bad("GET", "storage content", format!("no path in {v}")))
    }

    /// Volume ids of a storage's templates (`content=vztmpl`).
    pub async fn templates(&self, storage: &str) -> ApiResult<Vec<String>> {
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "storage", storage, "content"],
                &[("content", "vztmpl")],
                None,
                None,
            )
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("volid")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Uploads a CT template (`POST .../storage/{storage}/upload`); returns the import task.
    pub async fn upload_template(
        &self,
        storage: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> ApiResult<String> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| self.bad("POST", "upload", e.to_string()))?;
        // Proxmox's upload parser wants `content` before the file part.
        let form = reqwest::multipart::Form::new()
            .text("content", "vztmpl")
            .part("filename", part);
        let v = self
            .call(
                Method::POST,
                &["nodes", &self.node, "storage", storage, "upload"],
                &[],
                None,
                Some(form),
            )
            .await?;
        self.upid(v, "upload")
    }

    /// `(status, exitstatus)` of a task: `running`, or `stopped` with its exit status.
    pub async fn task_status(&self, upid: &str) -> ApiResult<(String, Option<String>)> {
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "tasks", upid, "status"],
                &[],
                None,
                None,
            )
            .await?;
        let status = v
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad("GET", "task status", format!("no status in {v}")))?;
        let exit = v
            .get("exitstatus")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((status.to_string(), exit))
    }

    /// The last lines of a task's log.
    pub async fn task_log_tail(&self, upid: &str, lines: usize) -> ApiResult<Vec<String>> {
        let v = self
            .call(
                Method::GET,
                &["nodes", &self.node, "tasks", upid, "log"],
                &[("limit", "1000")],
                None,
                None,
            )
            .await?;
        let all: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("t")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(all[all.len().saturating_sub(lines)..].to_vec())
    }

    /// Polls a task until it stops; an exit status other than `OK` or `WARNINGS: n` is an
    /// error holding the end of the task's log.
    pub async fn wait_task(&self, upid: &str, timeout: Duration) -> ApiResult<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let (status, exit) = self.task_status(upid).await?;
            if status != "running" {
                let exit = exit.unwrap_or_else(|| "unknown exit status".to_string());
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(());
                }
                let log = match self.task_log_tail(upid, TASK_LOG_LINES).await {
                    Ok(lines) if !lines.is_empty() => {
                        format!("\ntask log:\n  {}", lines.join("\n  "))
                    }
                    Ok(_) => String::new(),
                    Err(e) => format!(" (task log unavailable: {e})"),
                };
                return Err(ApiError::TaskFailed {
                    upid: upid.to_string(),
                    exitstatus: exit,
                    log,
                });
            }
            if Instant::now() >= deadline {
                return Err(ApiError::TaskTimeout {
                    upid: upid.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// An error with its sources, on one line (reqwest's own Display hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_read_from_permission_errors() {
        assert_eq!(
            missing_privilege("Permission check failed (/vms/900001, VM.PowerMgmt)\n"),
            Some(("/vms/900001".into(), "VM.PowerMgmt".into()))
        );
        assert_eq!(
            missing_privilege("Permission check failed (/storage/local, Datastore.AllocateSpace)"),
            Some(("/storage/local".into(), "Datastore.AllocateSpace".into()))
        );
        assert_eq!(
            missing_privilege("Permission check failed (user != root@pam)"),
            None
        );
        assert_eq!(missing_privilege("something else"), None);
        let e = ApiError::Forbidden {
            token: "k8s@pve!pvecri".into(),
            method: "POST".into(),
            path: "/nodes/pve1/lxc".into(),
            message: "Permission check failed (/vms/900000, VM.Allocate)".into(),
            needs: String::new(),
        }
        .to_string();
        assert!(
            e.contains("lacks the privilege VM.Allocate on /vms/900000")
                && e.contains("k8s@pve!pvecri"),
            "{e}"
        );
    }

    #[test]
    fn bare_permission_errors_say_what_the_endpoint_needs() {
        let form = vec![
            ("vmid", "900001".to_string()),
            ("rootfs", "local-zfs:0".to_string()),
            ("ostemplate", "local:vztmpl/x.tar.gz".to_string()),
        ];
        let needs = documented_privileges("POST", &["nodes", "pve1", "lxc"], &form);
        assert!(
            needs.starts_with("VM.Allocate on /vms/900001,")
                && needs.contains("Datastore.AllocateSpace on /storage/local-zfs")
                && needs.contains("Datastore.Audit on /storage/local"),
            "{needs}"
        );
        let e = ApiError::Forbidden {
            token: "k8s@pve!pvecri".into(),
            method: "POST".into(),
            path: "/nodes/pve1/lxc".into(),
            message: "Permission check failed".into(),
            needs,
        }
        .to_string();
        assert!(
            e.contains("lacks a privilege for POST /nodes/pve1/lxc, which needs VM.Allocate"),
            "{e}"
        );
        assert_eq!(
            documented_privileges(
                "POST",
                &["nodes", "pve1", "lxc", "900001", "status", "start"],
                &[]
            ),
            "VM.PowerMgmt on /vms/900001"
        );
    }

    #[test]
    fn tags_and_numbers() {
        assert_eq!(split_tags("default;pvecri"), ["default", "pvecri"]);
        assert_eq!(split_tags(" A, b ;c "), ["a", "b", "c"]);
        assert_eq!(as_u32(&Value::from(900_000)), Some(900_000));
        assert_eq!(as_u32(&Value::from("900001")), Some(900_001));
        assert_eq!(as_u32(&Value::from(-1)), None);
        let v = serde_json::json!({"vmid": "900002", "status": "running", "pid": 42, "tags": "pvecri;ns", "lock": ""});
        let s = CtState::from_value(&v, None).unwrap();
        assert_eq!((s.vmid, s.pid, s.lock.clone()), (900_002, Some(42), None));
        assert!(s.running());
    }

    #[test]
    fn errors_are_classified_by_message() {
        let e = |m: &str| ApiError::Http {
            method: "GET".into(),
            path: "/x".into(),
            status: 500,
            message: m.into(),
        };
        assert!(e("Configuration file 'nodes/pve1/lxc/900000.conf' does not exist").is_not_found());
        assert!(
            e("unable to create CT 900000 - CT 900000 already exists on node 'pve1'")
                .is_already_exists()
        );
        assert!(e("CT 900000 not running").is_not_running());
        assert!(e("CT 900000 already running").is_already_running());
        assert!(e("failed to read from command socket: Interrupted system call").is_interrupted());
        assert!(!e("CT 900000 not running").is_interrupted());
    }

    #[test]
    fn urls_escape_task_ids() {
        let token = Token::parse("root@pam!t=s").unwrap();
        let tls =
            super::super::tls::client_config(&super::super::config::TlsTrust::Fingerprint([0; 32]))
                .unwrap();
        let api = Api::new("https://127.0.0.1:8006/api2/json", "pve1", &token, tls).unwrap();
        let url = api.url(
            &[
                "nodes",
                "pve1",
                "tasks",
                "UPID:pve1:00001:0002:6B13:vzstart:900:root@pam!t:",
                "status",
            ],
            &[("limit", "10")],
        );
        assert_eq!(
            url.as_str(),
            "https://127.0.0.1:8006/api2/json/nodes/pve1/tasks/UPID:pve1:00001:0002:6B13:vzstart:900:root@pam!t:/status?limit=10"
        );
    }
}
