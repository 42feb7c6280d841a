//! The streaming server: where the URLs of the Exec, Attach and PortForward RPCs lead.
//!
//! An RPC stores its request under a single-use token ([`cache`]) and answers
//! `<base>/exec/<token>` (or `attach`, `portforward`); the kubelet proxies its client's
//! upgrade request there (or crictl connects directly). The connection becomes SPDY/3.1
//! ([`spdy`]) or a WebSocket ([`ws`]); [`remotecommand`] and [`portforward`] speak the
//! Kubernetes protocols over either, against a [`Backend`] (the runtime, which gets the
//! process's stdio fds or a pod socket from podinit).

pub mod backend;
pub mod cache;
pub mod http;
pub mod mux;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use backend::Backend;
use cache::{Pending, RequestCache};

use crate::config::StreamingConfig;

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming server: listening on {address}: {error}")]
    Bind {
        address: String,
        error: std::io::Error,
    },
    #[error("streaming server: TLS: {0}")]
    Tls(String),
}

/// What connection handlers share.
pub struct Shared {
    cache: RequestCache,
    /// Path prefix of the URLs (from `base_url`), without a trailing slash.
    base_path: String,
    idle: Duration,
}

pub struct StreamingServer {
    shared: Arc<Shared>,
    /// Scheme, host and port of the URLs handed out.
    base: String,
    local_addr: SocketAddr,
    listener: Mutex<Option<std::net::TcpListener>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl StreamingServer {
    /// Binds the configured address (so that URLs can name the port) without serving yet.
    pub fn bind(cfg: &StreamingConfig) -> Result<Self, StreamingError> {
        let bind_err = |error| StreamingError::Bind {
            address: cfg.address.clone(),
            error,
        };
        let listener = std::net::TcpListener::bind(&cfg.address).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (base, base_path) = match &cfg.base_url {
            Some(url) => {
                let url = url.trim_end_matches('/');
                let path = url
                    .parse::<::http::Uri>()
                    .map(|u| u.path().trim_end_matches('/').to_string())
                    .unwrap_or_default();
                (url.to_string(), path)
            }
            None => {
                // An unspecified address is reachable on loopback, which is where the
                // kubelet (on this node) connects.
                let mut shown = local_addr;
                if shown.ip().is_unspecified() {
                    shown.set_ip(match shown {
                        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (format!("{scheme}://{shown}"), String::new())
            }
        };
        tracing::info!(address = %local_addr, url = %base, "streaming server bound");
        Ok(Self {
            shared: Arc::new(Shared {
                cache: RequestCache::default(),
                base_path,
                idle: cfg.idle(),
            }),
            base,
            local_addr,
            listener: Mutex::new(Some(listener)),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn url(&self, kind: &str, req: Pending) -> Result<String, tonic::Status> {
        let token = self
            .shared
            .cache
            .insert(req)
            .map_err(|e| tonic::Status::resource_exhausted(e.to_string()))?;
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    /// The URL for an Exec request (validated as the kubelet's streaming library does).
    pub fn exec_url(&self, req: k8s_cri::v1::ExecRequest) -> Result<String, tonic::Status> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(tonic::Status::invalid_argument("exec needs a command"));
        }
        self.url("exec", Pending::Exec(req))
    }

    pub fn attach_url(&self, req: k8s_cri::v1::AttachRequest) -> Result<String, tonic::Status> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("attach", Pending::Attach(req))
    }

    pub fn port_forward_url(
        &self,
        req: k8s_cri::v1::PortForwardRequest,
    ) -> Result<String, tonic::Status> {
        if req.pod_sandbox_id.is_empty() {
            return Err(tonic::Status::invalid_argument(
                "missing required pod_sandbox_id",
            ));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(tonic::Status::invalid_argument(format!(
                "port {p} is not a TCP port"
            )));
        }
        self.url("portforward", Pending::PortForward(req))
    }

    /// Starts accepting connections (once; later calls do nothing).
    pub fn start<B: Backend>(&self, backend: Arc<B>) {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "streaming server: cannot serve");
                return;
            }
        };
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (shared, backend, tls) = (shared.clone(), backend.clone(), tls.clone());
                tokio::spawn(async move {
                    tracing::debug!(%peer, "streaming connection");
                    match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => http::serve_conn(s, shared, backend).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake"),
                        },
                        None => http::serve_conn(tcp, shared, backend).await,
                    }
                });
            }
        });
    }
}

fn validate_streams(
    container_id: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), tonic::Status> {
    if container_id.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "missing required container_id",
        ));
    }
    if tty && stderr {
        return Err(tonic::Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(tonic::Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, StreamingError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        StreamingError::Tls(format!("{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err("reading certificates from", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("reading certificates from", cert, &e))?;
    if certs.is_empty() {
        return Err(StreamingError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err("reading key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StreamingError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StreamingError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_bound_port_and_a_fresh_token() {
        let s = StreamingServer::bind(&StreamingConfig::default()).unwrap();
        let port = s.local_addr().port();
        assert_ne!(port, 0);
        let url = s
            .port_forward_url(k8s_cri::v1::PortForwardRequest {
                pod_sandbox_id: "p".into(),
                port: vec![80],
            })
            .unwrap();
        assert!(
            url.starts_with(&format!("http://127.0.0.1:{port}/portforward/")),
            "{url}"
        );
        let e = s
            .exec_url(k8s_cri::v1::ExecRequest {
                container_id: "c".into(),
                cmd: vec!["sh".into()],
                tty: true,
                stderr: true,
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = s
            .attach_url(k8s_cri::v1::AttachRequest {
                container_id: "c".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = s
            .port_forward_url(k8s_cri::v1::PortForwardRequest {
                pod_sandbox_id: "p".into(),
                port: vec![0],
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn base_url_and_unspecified_addresses() {
        let s = StreamingServer::bind(&StreamingConfig {
            address: "0.0.0.0:0".into(),
            ..Default::default()
        })
        .unwrap();
        let url = s
            .attach_url(k8s_cri::v1::AttachRequest {
                container_id: "c".into(),
                stdout: true,
                ..Default::default()
            })
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let s = StreamingServer::bind(&StreamingConfig {
            base_url: Some("https://node.example:10010/cri/".into()),
            ..Default::default()
        })
        .unwrap();
        let url = s
            .attach_url(k8s_cri::v1::AttachRequest {
                container_id: "c".into(),
                stdout: true,
                ..Default::default()
            })
            .unwrap();
        assert!(
            url.starts_with("https://node.example:10010/cri/attach/"),
            "{url}"
        );
        assert_eq!(s.shared.base_path, "/cri");
    }
}
