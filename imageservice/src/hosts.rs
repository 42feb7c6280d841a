//! Registry hosts: which endpoints serve a registry name (mirrors first, then the registry
//! itself), over which protocol, with which certificates.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;

/// How pvecri reaches one registry (`[registries."NAME"]` in the daemon's config). A mirror serves the same repository paths,
/// so `registry.k8s.io/pause:3.10` is fetched from a mirror as `pause:3.10`; an image keeps
/// the name it was asked for, whichever endpoint served it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Endpoints (`http://host[:port]` or `https://host[:port]`) tried in order before the
    /// registry itself. A mirror serves the same repository paths.
    pub mirrors: Vec<String>,
    /// The registry's own endpoint may be plain HTTP or TLS without certificate checks.
    /// It also turns off certificate checks for a mirror on this host.
    pub insecure: bool,
    /// PEM files with extra CA certificates trusted for this registry and its mirrors.
    pub ca_files: Vec<PathBuf>,
    /// Credentials used when a pull request carries none.
    pub credentials: Option<Credentials>,
}

pub type RegistriesConfig = BTreeMap<String, RegistryConfig>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `registries.\"{registry}\".{key}` = {value:?}: {reason}")]
pub struct HostsConfigError {
    pub registry: String,
    pub key: String,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    Https,
}

/// One place to fetch from, with how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// `host[:port]`, as the Reference's registry part.
    pub host: String,
    pub scheme: Scheme,
    pub skip_verify: bool,
    pub ca_files: Vec<PathBuf>,
    pub is_mirror: bool,
}

impl Endpoint {
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host)
    }
}

/// Checks every registry section; errors name the key.
pub fn validate(config: &RegistriesConfig) -> Result<(), HostsConfigError> {
    for (name, reg) in config {
        let err = |key: String, value: &str, reason: &str| HostsConfigError {
            registry: name.clone(),
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(err("".into(), name, "a registry name is a host[:port]"));
        }
        for (i, m) in reg.mirrors.iter().enumerate() {
            parse_endpoint_url(m).map_err(|r| err(format!("mirrors[{i}]"), m, &r))?;
        }
        for (i, ca) in reg.ca_files.iter().enumerate() {
            if !ca.is_absolute() {
                return Err(err(
                    format!("ca_files[{i}]"),
                    &ca.display().to_string(),
                    "must be an absolute path",
                ));
            }
        }
    }
    Ok(())
}

fn parse_endpoint_url(url: &str) -> Result<(Scheme, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() {
        return Err("no host".into());
    }
    if host.contains('/') {
        return Err(
            "a path after the host is not supported; mirrors serve /v2/ at their root".into(),
        );
    }
    if host.contains(['?', '#', '@']) || host.chars().any(char::is_whitespace) {
        return Err("not a host[:port]".into());
    }
    Ok((scheme, host.to_string()))
}

/// Hosts on the loopback interface may be reached over plain HTTP without configuration,
/// as Docker does.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:5000` or `host:port`
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints for `registry`, in the order to try them.
pub fn endpoints(config: &RegistriesConfig, registry: &str) -> Vec<Endpoint> {
    let reg = config.get(registry).cloned().unwrap_or_default();
    let insecure_host = |host: &str| config.get(host).is_some_and(|r| r.insecure);
    let mut out = Vec::new();
    for m in &reg.mirrors {
        // Validated at load; a bad entry is skipped rather than failing every pull.
        let Ok((scheme, host)) = parse_endpoint_url(m) else {
            continue;
        };
        out.push(Endpoint {
            skip_verify: insecure_host(&host),
            host,
            scheme,
            ca_files: reg.ca_files.clone(),
            is_mirror: true,
        });
    }
    let own = |scheme, skip_verify| Endpoint {
        host: registry.to_string(),
        scheme,
        skip_verify,
        ca_files: reg.ca_files.clone(),
        is_mirror: false,
    };
    if is_loopback(registry) {
        out.push(own(Scheme::Http, false));
        out.push(own(Scheme::Https, reg.insecure));
    } else if reg.insecure {
        out.push(own(Scheme::Https, true));
        out.push(own(Scheme::Http, false));
    } else {
        out.push(own(Scheme::Https, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, RegistryConfig)]) -> RegistriesConfig {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn unconfigured_registry_is_https_only() {
        let e = endpoints(&RegistriesConfig::new(), "quay.io");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url(), "https://quay.io");
        assert!(!e[0].skip_verify);
    }

    #[test]
    fn loopback_registries_try_plain_http_first() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "127.3.4.5",
            "[::1]:5000",
        ] {
            let e = endpoints(&RegistriesConfig::new(), host);
            assert_eq!(e[0].scheme, Scheme::Http, "{host}");
            assert_eq!(e[1].scheme, Scheme::Https, "{host}");
        }
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("localhost.example.com"));
    }

    #[test]
    fn mirrors_come_first_and_keep_their_scheme() {
        let c = cfg(&[(
            "registry.k8s.io",
            RegistryConfig {
                mirrors: vec![
                    "http://127.0.0.1:5001".into(),
                    "https://mirror.example:8443/".into(),
                ],
                ..Default::default()
            },
        )]);
        let e = endpoints(&c, "registry.k8s.io");
        let urls: Vec<String> = e.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5001",
                "https://mirror.example:8443",
                "https://registry.k8s.io"
            ]
        );
        assert!(e[0].is_mirror && e[1].is_mirror && !e[2].is_mirror);
    }

    #[test]
    fn insecure_registry_skips_verification_only_where_named() {
        let c = cfg(&[
            (
                "my.registry:5000",
                RegistryConfig {
                    insecure: true,
                    mirrors: vec!["https://other.mirror".into(), "https://self.mirror".into()],
                    ..Default::default()
                },
            ),
            (
                "self.mirror",
                RegistryConfig {
                    insecure: true,
                    ..Default::default()
                },
            ),
        ]);
        let e = endpoints(&c, "my.registry:5000");
        assert!(!e[0].skip_verify, "other.mirror is not named insecure");
        assert!(e[1].skip_verify, "self.mirror is");
        assert_eq!((e[2].scheme, e[2].skip_verify), (Scheme::Https, true));
        assert_eq!(e[3].scheme, Scheme::Http);
    }

    #[test]
    fn validation_names_the_key() {
        let c = cfg(&[(
            "r.io",
            RegistryConfig {
                mirrors: vec!["ftp://x".into()],
                ..Default::default()
            },
        )]);
        let e = validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("registries.\"r.io\".mirrors[0]") && e.contains("ftp://x"),
            "{e}"
        );
        let c = cfg(&[(
            "r.io",
            RegistryConfig {
                mirrors: vec!["http://h:1/prefix".into()],
                ..Default::default()
            },
        )]);
        assert!(validate(&c).unwrap_err().reason.contains("path"));
        let c = cfg(&[("a/b", RegistryConfig::default())]);
        assert!(validate(&c).is_err());
    }
}
