//! Registry credentials: from a pull request's CRI AuthConfig or the config file, turned
//! into what oci-client speaks. Secrets never reach logs: `Debug` redacts them.

use std::fmt;

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The fields of CRI's `AuthConfig`; also `[registries."NAME".credentials]` in the config.
/// In the config file, keep the file mode 0600: the daemon warns at start when others can
/// read it, and never logs or reports the secrets (`crictl info` shows `<redacted>`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    /// With `password`: basic auth, or the login at the registry's token service.
    pub username: String,
    /// The password, or an access token the registry takes in its place.
    pub password: String,
    /// base64 of `username:password`, as in a Docker config.json.
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the registry's token service.
    pub identity_token: String,
    /// A bearer token sent as is.
    pub registry_token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth field is not valid base64")]
    AuthNotBase64,
    #[error("auth field does not decode to username:password")]
    AuthNoColon,
}

/// What to present to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
    /// Exchanged for a bearer token with the registry's token service before use.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, <redacted>)")
            }
        }
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Precedence as in containerd's CRI plugin: an identity token, then a registry token,
    /// then the base64 `auth` field, then username and password.
    pub fn resolve(&self) -> Result<Auth, AuthError> {
        if !self.identity_token.is_empty() {
            return Ok(Auth::IdentityToken {
                username: self.username.clone(),
                token: self.identity_token.clone(),
            });
        }
        if !self.registry_token.is_empty() {
            return Ok(Auth::Bearer(self.registry_token.clone()));
        }
        if !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| AuthError::AuthNotBase64)?;
            let text = String::from_utf8(raw).map_err(|_| AuthError::AuthNoColon)?;
            let (u, p) = text.split_once(':').ok_or(AuthError::AuthNoColon)?;
            return Ok(Auth::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        if !self.username.is_empty() {
            return Ok(Auth::Basic {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        Ok(Auth::Anonymous)
    }
}

impl Auth {
    /// A digest of the credentials, to key caches without keeping the secret itself.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        let parts: [&str; 3] = match self {
            Self::Anonymous => ["anonymous", "", ""],
            Self::Basic { username, password } => ["basic", username, password],
            Self::Bearer(t) => ["bearer", t, ""],
            Self::IdentityToken { username, token } => ["identity", username, token],
        };
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }

    /// The oci-client form; an identity token must have been exchanged first.
    pub fn to_registry_auth(&self, exchanged: Option<&str>) -> RegistryAuth {
        match (self, exchanged) {
            (_, Some(token)) => RegistryAuth::Bearer(token.to_string()),
            (Self::Anonymous, None) | (Self::IdentityToken { .. }, None) => RegistryAuth::Anonymous,
            (Self::Basic { username, password }, None) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            (Self::Bearer(t), None) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// A `WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a Bearer challenge; `None` for other schemes or a missing realm.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = BearerChallenge::default();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => out.realm = value.to_string(),
            "service" => out.service = Some(value.to_string()),
            "scope" => out.scope = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    (!out.realm.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_base64() {
        let c = Credentials {
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et"),
            username: "bob".into(),
            password: "pw".into(),
            ..Default::default()
        };
        assert_eq!(
            c.resolve().unwrap(),
            Auth::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            }
        );
        let c = Credentials {
            registry_token: "t".into(),
            ..c
        };
        assert_eq!(c.resolve().unwrap(), Auth::Bearer("t".into()));
        let c = Credentials {
            identity_token: "r".into(),
            ..c
        };
        assert!(matches!(c.resolve().unwrap(), Auth::IdentityToken { .. }));
        assert_eq!(Credentials::default().resolve().unwrap(), Auth::Anonymous);
    }

    #[test]
    fn bad_auth_field_is_an_error() {
        let c = Credentials {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert_eq!(c.resolve(), Err(AuthError::AuthNotBase64));
        let c = Credentials {
            auth: base64::engine::general_purpose::STANDARD.encode("nocolon"),
            ..Default::default()
        };
        assert_eq!(c.resolve(), Err(AuthError::AuthNoColon));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        let s = format!("{c:?} {:?}", c.resolve().unwrap());
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"));
    }

    #[test]
    fn bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/busybox:pull"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=x"), None);
        let c = parse_bearer_challenge("bearer realm=http://h/t, service=s").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.service.as_deref()),
            ("http://h/t", Some("s"))
        );
    }

    proptest::proptest! {
        #[test]
        fn challenge_parser_never_panics(s in "\\PC{0,120}") {
            let _ = parse_bearer_challenge(&s);
        }
    }
}
