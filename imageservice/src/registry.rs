//! Talking to registries: one oci-client per endpoint (protocol and TLS settings are
//! per client), manifests resolved across mirrors, identity tokens exchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::auth::{Auth, parse_bearer_challenge};
use crate::error::ImageError;
use crate::hosts::{Endpoint, RegistriesConfig, Scheme, endpoints};
use crate::manifest::{self, Fetched, Manifest, Platform};
use crate::reference::ImageRef;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two reads of a response; a stalled registry fails the pull instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("pvecri/", env!("CARGO_PKG_VERSION"));

/// The endpoint that answered, with everything needed to fetch blobs from it.
#[derive(Clone)]
pub struct Source {
    pub endpoint: Endpoint,
    pub client: Arc<Client>,
    /// The reference as this endpoint knows it (its host, the same repository path).
    pub reference: Reference,
}

impl Source {
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }
}

/// A resolved image: the manifest for the node's platform, and where it came from.
pub struct Resolved {
    pub source: Source,
    pub manifest: Manifest,
    /// The digest of what the reference named: the index when it was an index.
    pub pulled_digest: String,
    /// Bytes of the manifest (and index) documents.
    pub manifest_bytes: u64,
}

/// An endpoint and the fingerprint of the credentials used on it.
type ClientKey = (Endpoint, [u8; 32]);

pub struct Registries {
    hosts: RegistriesConfig,
    /// Keyed by the credentials' fingerprint too: oci-client keeps the first credentials it
    /// sees for a registry, so different credentials need different clients.
    clients: Mutex<HashMap<ClientKey, Arc<Client>>>,
    platform: Platform,
}

impl Registries {
    pub fn new(hosts: RegistriesConfig, platform: Platform) -> Result<Self, ImageError> {
        crate::hosts::validate(&hosts)?;
        Ok(Self {
            hosts,
            clients: Mutex::new(HashMap::new()),
            platform,
        })
    }

    /// Credentials from the config file for a registry name, when the request has none.
    pub fn configured_credentials(&self, registry: &str) -> Option<&crate::auth::Credentials> {
        self.hosts.get(registry)?.credentials.as_ref()
    }

    fn client(&self, ep: &Endpoint, auth: &Auth) -> Result<Arc<Client>, ImageError> {
        let key = (ep.clone(), auth.fingerprint());
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| ImageError::Internal("client cache poisoned".into()))?;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut extra_root_certificates = Vec::new();
        for path in &ep.ca_files {
            let data = std::fs::read(path).map_err(|e| {
                ImageError::Internal(format!("reading CA file {}: {e}", path.display()))
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: match ep.scheme {
                Scheme::Http => ClientProtocol::Http,
                Scheme::Https => ClientProtocol::Https,
            },
            accept_invalid_certificates: ep.skip_verify,
            extra_root_certificates,
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| ImageError::Internal(format!("registry client for {}: {e}", ep.url())))?;
        let client = Arc::new(client);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Finds the image at the first endpoint that has it: mirrors in order, then the registry.
    pub async fn resolve(&self, image: &ImageRef, auth: &Auth) -> Result<Resolved, ImageError> {
        let mut failures: Vec<String> = Vec::new();
        let mut last: Option<ImageError> = None;
        for ep in endpoints(&self.hosts, image.registry()) {
            let client = self.client(&ep, auth)?;
            let source = Source {
                reference: image.to_oci(&ep.host),
                endpoint: ep,
                client,
            };
            match self.resolve_at(&source, image, auth).await {
                Ok(resolved) => {
                    if !failures.is_empty() {
                        tracing::info!(image = %image, served_by = %source.endpoint.url(),
                            skipped = %failures.join("; "), "pulled from a later endpoint");
                    }
                    return Ok(resolved);
                }
                Err(e) => {
                    tracing::debug!(endpoint = %source.endpoint.url(), error = %e, "endpoint failed");
                    failures.push(format!("{}: {e}", source.endpoint.url()));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Internal("no endpoint to try".into())))
    }

    async fn resolve_at(
        &self,
        source: &Source,
        image: &ImageRef,
        auth: &Auth,
    ) -> Result<Resolved, ImageError> {
        let registry_auth = self.registry_auth(source, auth).await?;
        let name = image.to_string();
        let (bytes, digest) = source
            .client
            .pull_manifest_raw(&source.reference, &registry_auth, manifest::ACCEPTED)
            .await
            .map_err(|e| classify(&name, source.host(), e))?;
        let manifest_err = |error| ImageError::Manifest {
            reference: name.clone(),
            host: source.host().to_string(),
            error,
        };
        let mut manifest_bytes = bytes.len() as u64;
        match manifest::parse(&bytes).map_err(manifest_err)? {
            Fetched::Manifest(manifest) => Ok(Resolved {
                source: source.clone(),
                manifest,
                pulled_digest: digest,
                manifest_bytes,
            }),
            Fetched::Index(index) => {
                let chosen = index.select(&self.platform).map_err(manifest_err)?;
                let by_digest = Reference::with_digest(
                    source.reference.registry().to_string(),
                    source.reference.repository().to_string(),
                    chosen.digest.clone(),
                );
                let (bytes, _) = source
                    .client
                    .pull_manifest_raw(&by_digest, &registry_auth, manifest::ACCEPTED)
                    .await
                    .map_err(|e| classify(&name, source.host(), e))?;
                manifest_bytes += bytes.len() as u64;
                match manifest::parse(&bytes).map_err(manifest_err)? {
                    Fetched::Manifest(manifest) => Ok(Resolved {
                        source: source.clone(),
                        manifest,
                        pulled_digest: digest,
                        manifest_bytes,
                    }),
                    Fetched::Index(_) => Err(manifest_err(manifest::ManifestError::Unknown)),
                }
            }
        }
    }

    /// oci-client's auth, with an identity token exchanged for a bearer token first.
    async fn registry_auth(
        &self,
        source: &Source,
        auth: &Auth,
    ) -> Result<RegistryAuth, ImageError> {
        let Auth::IdentityToken { username, token } = auth else {
            return Ok(auth.to_registry_auth(None));
        };
        let access = exchange_identity_token(source, username, token).await?;
        Ok(auth.to_registry_auth(Some(&access)))
    }
}

/// The OAuth2 refresh-token grant of the Docker token spec: the registry's `/v2/` challenge
/// names the token service; it trades the identity token for an access token.
async fn exchange_identity_token(
    source: &Source,
    username: &str,
    refresh_token: &str,
) -> Result<String, ImageError> {
    let host = source.host().to_string();
    let name = format!("{}/{}", host, source.reference.repository());
    let unreachable = |detail: String| ImageError::Unreachable {
        reference: name.clone(),
        host: host.clone(),
        detail,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(READ_TIMEOUT)
        .danger_accept_invalid_certs(source.endpoint.skip_verify)
        .build()
        .map_err(|e| ImageError::Internal(format!("http client: {e}")))?;
    let ping = http
        .get(format!("{}/v2/", source.endpoint.url()))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let challenge = ping
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_bearer_challenge)
        .ok_or_else(|| ImageError::Unauthorized {
            reference: name.clone(),
            host: host.clone(),
            detail: "an identity token was given but the registry offers no token service".into(),
        })?;
    let scope = format!("repository:{}:pull", source.reference.repository());
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "pvecri"),
        ("scope", scope.as_str()),
    ];
    if let Some(service) = &challenge.service {
        form.push(("service", service.as_str()));
    }
    if !username.is_empty() {
        form.push(("username", username));
    }
    let resp = http
        .post(&challenge.realm)
        .form(&form)
        .send()
        .await
        .map_err(|e| unreachable(format!("token service {}: {e}", challenge.realm)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ImageError::Unauthorized {
            reference: name,
            host,
            detail: format!(
                "token service {} answered {status} to the identity token",
                challenge.realm
            ),
        });
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| unreachable(format!("token service {}: {e}", challenge.realm)))?;
    body.get("access_token")
        .or_else(|| body.get("token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| ImageError::Unauthorized {
            reference: name,
            host,
            detail: "token service answered without a token".into(),
        })
}

/// Sorts oci-client's errors into what the kubelet and the user need to know.
pub fn classify(reference: &str, host: &str, e: OciDistributionError) -> ImageError {
    let reference = reference.to_string();
    let host = host.to_string();
    let detail = e.to_string();
    match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFound {
            reference,
            host,
            detail,
        },
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            reference,
            host,
            detail,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                ImageError::NotFound {
                    reference,
                    host,
                    detail,
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized {
                    reference,
                    host,
                    detail,
                }
            } else {
                ImageError::Registry {
                    reference,
                    host,
                    detail,
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => ImageError::NotFound {
            reference,
            host,
            detail,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::Unauthorized {
            reference,
            host,
            detail,
        },
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            ImageError::Unreachable {
                reference,
                host,
                detail: full_chain(r),
            }
        }
        OciDistributionError::RequestError(r) => ImageError::Registry {
            reference,
            host,
            detail: full_chain(r),
        },
        OciDistributionError::DigestError(_) => ImageError::BlobDigest {
            blob: reference,
            host,
            detail,
        },
        _ => ImageError::Registry {
            reference,
            host,
            detail,
        },
    }
}

/// reqwest's Display stops at the outermost error; the cause (connection refused, TLS) is
/// what the operator needs.
fn full_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
