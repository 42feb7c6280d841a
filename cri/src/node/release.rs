//! Whether the chart's release still exists, asked of the Kubernetes API with the pod's
//! service account. A DaemonSet pod's preStop runs both when `helm uninstall` deletes the
//! DaemonSet and when a rolling update replaces the pod; only the first may revert the node
//! (reverting on an update would take the runtime away from the pods running on it). When
//! the answer is unclear the node is left as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The service account files Kubernetes mounts into every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The DaemonSet exists and is not being deleted: a rolling update or a restart.
    Deployed,
    /// The DaemonSet is gone or going, or so is the service account the chart made.
    Removed(String),
    /// No clear answer (API unreachable, unexpected status).
    Unknown(String),
}

/// How to reach the API: the URL, the token and the CA that signs the API's certificate.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub url: String,
    pub token: String,
    pub ca_pem: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiAccessError {
    #[error("no Kubernetes API address: KUBERNETES_SERVICE_HOST is unset and none was given")]
    NoAddress,
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl ApiAccess {
    /// The in-cluster access of a pod; `url` overrides the API address (clusters whose
    /// service network the pod cannot reach, such as one without kube-proxy).
    pub fn in_cluster(url: Option<&str>, sa_dir: &Path) -> Result<ApiAccess, ApiAccessError> {
        let url = match url.filter(|u| !u.is_empty()) {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST")
                    .map_err(|_| ApiAccessError::NoAddress)?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let read = |name: &str| {
            let path = sa_dir.join(name);
            std::fs::read(&path).map_err(|error| ApiAccessError::Read { path, error })
        };
        Ok(ApiAccess {
            url,
            token: String::from_utf8_lossy(&read("token")?).trim().to_string(),
            ca_pem: read("ca.crt")?,
        })
    }
}

/// Asks for DaemonSet `namespace/name`.
pub async fn daemonset_release(api: &ApiAccess, namespace: &str, name: &str) -> Release {
    let certs = match reqwest::Certificate::from_pem_bundle(&api.ca_pem) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            return Release::Unknown("the service account CA file holds no certificate".into());
        }
        Err(e) => return Release::Unknown(format!("the service account CA: {e}")),
    };
    let client = match reqwest::Client::builder()
        .tls_certs_only(certs)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Release::Unknown(format!("http client: {e}")),
    };
    let url = format!(
        "{}/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}",
        api.url
    );
    let response = match client.get(&url).bearer_auth(&api.token).send().await {
        Ok(r) => r,
        Err(e) => return Release::Unknown(format!("GET {url}: {e}")),
    };
    let status = response.status();
    match status.as_u16() {
        200 => match response.json::<serde_json::Value>().await {
            Ok(ds) if ds["metadata"]["deletionTimestamp"].is_string() => {
                Release::Removed(format!("DaemonSet {namespace}/{name} is being deleted"))
            }
            Ok(_) => Release::Deployed,
            Err(e) => Release::Unknown(format!("GET {url}: {e}")),
        },
        404 => Release::Removed(format!("DaemonSet {namespace}/{name} is gone")),
        // The release's service account or its role went with the release.
        401 | 403 => Release::Removed(format!(
            "the API refuses the pod's service account ({status}): the release's RBAC is gone"
        )),
        _ => Release::Unknown(format!("GET {url}: {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_reads_token_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "abc\n").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "pem").unwrap();
        let a = ApiAccess::in_cluster(Some("https://127.0.0.1:6443/"), dir.path()).unwrap();
        assert_eq!(a.url, "https://127.0.0.1:6443");
        assert_eq!(a.token, "abc");
        let missing = ApiAccess::in_cluster(Some("https://x"), &dir.path().join("nope"));
        assert!(matches!(missing, Err(ApiAccessError::Read { .. })));
    }

    #[tokio::test]
    async fn an_unreachable_api_is_unknown_not_removed() {
        let api = ApiAccess {
            url: "https://127.0.0.1:1".into(),
            token: "t".into(),
            ca_pem: Vec::new(),
        };
        assert!(matches!(
            daemonset_release(&api, "ns", "ds").await,
            Release::Unknown(_)
        ));
    }
}
