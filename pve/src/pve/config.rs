//! `[pve]` in the daemon's config, and the API token file.
//!
//! ```toml
//! [pod_host]
//! driver = "pve"
//! [pve]
//! api_url = "https://127.0.0.1:8006/api2/json"
//! node = "pve1"                       # default: this host's name
//! token_file = "/etc/pvecri/pve-token" # USER@REALM!TOKENID=SECRET, mode 0600, owned by root
//! fingerprint = "AA:BB:..."           # SHA-256 of the API certificate, or:
//! ca_file = "/etc/pve/pve-root-ca.pem"
//! storage = "local"                   # CT root volumes
//! template_storage = "local"          # default: storage
//! vmid_range = [900000, 999999]       # or "900000-999999"
//! pool = "k8s"                        # optional resource pool
//! warm_pool = 0
//! ```

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the cluster CA lives on every Proxmox node; verified against when neither
/// `fingerprint` nor `ca_file` is configured.
pub const NODE_CA_FILE: &str = "/etc/pve/pve-root-ca.pem";
pub const DEFAULT_TOKEN_FILE: &str = "/etc/pvecri/pve-token";
pub const DEFAULT_API_URL: &str = "https://127.0.0.1:8006/api2/json";
const API_PATH: &str = "/api2/json";
/// The vmid format's limits (`pve-vmid`: 100 to 999999999).
const VMID_MIN: u32 = 100;
const VMID_MAX: u32 = 999_999_999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PveConfigError {
    #[error("pve.{key} = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("pve.token_file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
}

fn invalid(
    key: &'static str,
    value: impl fmt::Display,
    reason: impl Into<String>,
) -> PveConfigError {
    PveConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The Proxmox driver (`pod_host.driver = "pve"`): every pod a Proxmox CT, made through the
/// Proxmox API with an API token. See docs/proxmox.md for the token's privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PveConfig {
    /// The API's base URL (https only); `/api2/json` is added when the path lacks it.
    pub api_url: String,
    /// The Proxmox node the pod CTs live on; unset: this host's name, as Proxmox names its
    /// node.
    pub node: Option<String>,
    /// The API token: one line `USER@REALM!TOKENID=SECRET`, in a file owned by root with
    /// mode 0600 (pvecri refuses to start otherwise). The secret is never logged.
    pub token_file: PathBuf,
    /// The SHA-256 fingerprint of the API's TLS certificate (`AA:BB:...`, as `pvenode cert
    /// info` shows it), pinned. Set this or `ca_file`; with neither, the cluster CA
    /// `/etc/pve/pve-root-ca.pem` is used. TLS is always verified.
    pub fingerprint: Option<String>,
    /// PEM CA certificate(s) the API's certificate must chain to (instead of `fingerprint`).
    pub ca_file: Option<PathBuf>,
    /// The Proxmox storage for the CTs' root volumes (which hold podinit only; containers use
    /// the layer store). It must make subvolumes for size 0: `dir`, `zfspool`, `btrfs`,
    /// `nfs`, `cifs`.
    pub storage: String,
    /// The vmids pvecri may use, `[first, last]` or `"first-last"`; it never takes one that a
    /// guest of the cluster has. A full range fails RunPodSandbox with ResourceExhausted.
    pub vmid_range: VmidRange,
    /// A resource pool the CTs join (it must exist).
    pub pool: Option<String>,
    /// The file-based storage (content `vztmpl`) for pvecri's CT template; unset: `storage`.
    pub template_storage: Option<String>,
    /// Pod CTs kept created and started ahead, for RunPodSandbox to adopt (the larger of this
    /// and `pod_host.warm_pool`).
    pub warm_pool: usize,
}

impl Default for PveConfig {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_string(),
            node: None,
            token_file: PathBuf::from(DEFAULT_TOKEN_FILE),
            fingerprint: None,
            ca_file: None,
            storage: "local".to_string(),
            vmid_range: VmidRange::default(),
            pool: None,
            template_storage: None,
            warm_pool: 0,
        }
    }
}

/// How the API's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The certificate's SHA-256, 32 bytes.
    Fingerprint([u8; 32]),
    /// PEM CA certificates.
    CaFile(PathBuf),
}

impl PveConfig {
    /// The API base with `/api2/json`, without a trailing slash.
    pub fn api_base(&self) -> Result<String, PveConfigError> {
        let url = self.api_url.trim();
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| invalid("api_url", url, format!("not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(invalid(
                "api_url",
                url,
                "must be https: the token is sent with every request",
            ));
        }
        if parsed.host_str().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                "api_url",
                url,
                "needs a host and no query or fragment",
            ));
        }
        let base = url.trim_end_matches('/');
        Ok(if base.ends_with(API_PATH) {
            base.to_string()
        } else {
            format!("{base}{API_PATH}")
        })
    }

    pub fn node_name(&self) -> Result<String, PveConfigError> {
        let node = match &self.node {
            Some(n) => n.clone(),
            None => {
                let uname = rustix::system::uname();
                let host = uname.nodename().to_string_lossy().into_owned();
                // Proxmox names the node after the short host name.
                host.split('.').next().unwrap_or_default().to_string()
            }
        };
        if !is_dns_label(&node) {
            return Err(invalid(
                "node",
                &node,
                "must be a node name ([A-Za-z0-9-], not starting or ending with -)",
            ));
        }
        Ok(node)
    }

    pub fn trust(&self) -> Result<TlsTrust, PveConfigError> {
        match (&self.fingerprint, &self.ca_file) {
            (Some(_), Some(_)) => Err(invalid(
                "fingerprint",
                "…",
                "set either fingerprint or ca_file, not both",
            )),
            (Some(fp), None) => parse_fingerprint(fp).map(TlsTrust::Fingerprint),
            (None, Some(ca)) => {
                if !ca.is_absolute() {
                    return Err(invalid("ca_file", ca.display(), "must be an absolute path"));
                }
                Ok(TlsTrust::CaFile(ca.clone()))
            }
            (None, None) => Ok(TlsTrust::CaFile(PathBuf::from(NODE_CA_FILE))),
        }
    }

    pub fn template_storage(&self) -> &str {
        self.template_storage.as_deref().unwrap_or(&self.storage)
    }

    /// Checks what serde cannot; the token file is read by [`Token::load`].
    pub fn validate(&self) -> Result<(), PveConfigError> {
        self.api_base()?;
        self.node_name()?;
        self.trust()?;
        for (key, value) in [
            ("storage", Some(self.storage.as_str())),
            ("template_storage", self.template_storage.as_deref()),
            ("pool", self.pool.as_deref()),
        ] {
            if let Some(v) = value
                && !is_storage_id(v)
            {
                return Err(invalid(
                    key,
                    v,
                    "must be a Proxmox id: a letter, then letters, digits, `-`, `_`, `.`",
                ));
            }
        }
        if !self.token_file.is_absolute() {
            return Err(invalid(
                "token_file",
                self.token_file.display(),
                "must be an absolute path",
            ));
        }
        Ok(())
    }
}

/// Storage and pool ids (`pve-storage-id`, `pve-poolid`).
fn is_storage_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.len() <= 64
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `AA:BB:...` (32 bytes; colons optional, any case).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], PveConfigError> {
    let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| {
        invalid(
            "fingerprint",
            text,
            "must be the certificate's SHA-256 in hex (AA:BB:...)",
        )
    })?;
    bytes.try_into().map_err(|_| {
        invalid(
            "fingerprint",
            text,
            "must be a SHA-256 fingerprint: 32 bytes (64 hex digits)",
        )
    })
}

/// The inclusive range of vmids pvecri may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmidRange {
    pub first: u32,
    pub last: u32,
}

impl Default for VmidRange {
    fn default() -> Self {
        Self {
            first: 900_000,
            last: 999_999,
        }
    }
}

impl VmidRange {
    pub fn new(first: u32, last: u32) -> Result<Self, String> {
        if first < VMID_MIN || last > VMID_MAX {
            return Err(format!("vmids are {VMID_MIN} to {VMID_MAX}"));
        }
        if first > last {
            return Err("the first vmid must not be above the last".to_string());
        }
        Ok(Self { first, last })
    }

    pub fn contains(&self, vmid: u32) -> bool {
        (self.first..=self.last).contains(&vmid)
    }
}

impl JsonSchema for VmidRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VmidRange".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An inclusive vmid range: `[first, last]` or `\"first-last\"`.",
            "anyOf": [
                {
                    "type": "array",
                    "items": { "type": "integer", "minimum": VMID_MIN, "maximum": VMID_MAX },
                    "minItems": 2,
                    "maxItems": 2
                },
                { "type": "string", "pattern": "^[0-9]+-[0-9]+$" }
            ]
        })
    }
}

impl fmt::Display for VmidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for VmidRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a vmid"))
        };
        Self::new(num(a)?, num(b)?)
    }
}

impl Serialize for VmidRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.first, self.last].serialize(s)
    }
}

impl<'de> Deserialize<'de> for VmidRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Pair([u32; 2]),
            Text(String),
        }
        match Repr::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected [FIRST, LAST] or \"FIRST-LAST\""))?
        {
            Repr::Pair([a, b]) => VmidRange::new(a, b),
            Repr::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// An API token. Its secret never appears in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `USER@REALM!TOKENID`
    pub id: String,
    secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, secret hidden)", self.id)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl Token {
    /// Reads the token file. It must be a regular file owned by root with no access for
    /// group or others (mode 0600 or 0400): it is a credential for the whole cluster.
    pub fn load(path: &Path) -> Result<Self, PveConfigError> {
        let err = |reason: String| PveConfigError::Token {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::symlink_metadata(path).map_err(|e| err(format!("{e}")))?;
        if !meta.file_type().is_file() {
            return Err(err("must be a regular file (not a symlink)".into()));
        }
        if meta.uid() != 0 {
            return Err(err(format!(
                "must be owned by root (it is owned by uid {}): chown root:root",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:04o} lets others read the token: chmod 600",
                meta.mode() & 0o7777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("{e}")))?;
        Self::parse(&text).map_err(err)
    }

    /// One line `USER@REALM!TOKENID=SECRET` (split at the last `=`, as Proxmox does).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let line = lines.next().ok_or("is empty")?.trim();
        if lines.next().is_some() {
            return Err("must hold one line: USER@REALM!TOKENID=SECRET".into());
        }
        let (id, secret) = line
            .rsplit_once('=')
            .ok_or("must be USER@REALM!TOKENID=SECRET (no `=` found)")?;
        let well_formed = id.split_once('@').is_some_and(|(user, rest)| {
            rest.split_once('!').is_some_and(|(realm, name)| {
                !user.is_empty()
                    && !realm.is_empty()
                    && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
        }) && !id.chars().any(|c| c.is_whitespace() || c.is_control());
        if !well_formed {
            return Err("the token id must be USER@REALM!TOKENID".into());
        }
        if secret.is_empty()
            || secret
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '%')
        {
            return Err("the secret after the last `=` must be non-empty, without spaces".into());
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The `Authorization` header value.
    pub(crate) fn header(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn defaults() {
        let c: PveConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, PveConfig::default());
        assert_eq!(c.api_base().unwrap(), "https://127.0.0.1:8006/api2/json");
        assert_eq!(c.vmid_range, VmidRange::new(900_000, 999_999).unwrap());
        assert_eq!(c.template_storage(), "local");
        assert_eq!(c.trust().unwrap(), TlsTrust::CaFile(NODE_CA_FILE.into()));
        c.validate().unwrap();
    }

    #[test]
    fn api_url_gets_the_api_path_once() {
        for (given, want) in [
            ("https://pve:8006", "https://pve:8006/api2/json"),
            ("https://pve:8006/", "https://pve:8006/api2/json"),
            ("https://pve:8006/api2/json/", "https://pve:8006/api2/json"),
        ] {
            let c = PveConfig {
                api_url: given.into(),
                ..Default::default()
            };
            assert_eq!(c.api_base().unwrap(), want, "{given}");
        }
        for bad in ["http://pve:8006", "pve:8006", "https://pve:8006/?x=1", ""] {
            let c = PveConfig {
                api_url: bad.into(),
                ..Default::default()
            };
            assert!(c.api_base().is_err(), "{bad}");
        }
    }

    #[test]
    fn vmid_ranges_as_pair_or_text() {
        #[derive(Deserialize)]
        struct W {
            r: VmidRange,
        }
        let p: W = toml::from_str("r = [1000, 2000]").unwrap();
        let t: W = toml::from_str("r = \"1000-2000\"").unwrap();
        assert_eq!(p.r, t.r);
        assert_eq!(p.r.to_string(), "1000-2000");
        for bad in ["r = [2000, 1000]", "r = [1, 200]", "r = \"x-2\"", "r = 5"] {
            assert!(toml::from_str::<W>(bad).is_err(), "{bad}");
        }
        assert!(p.r.contains(1000) && p.r.contains(2000) && !p.r.contains(2001));
    }

    #[test]
    fn fingerprints() {
        let fp = "C0:77:85:AA:60:A1:C6:8C:AC:AA:05:04:78:D9:19:81:C8:11:A7:8C:AA:4C:AE:09:38:26:E9:84:27:4A:52:EA";
        let bytes = parse_fingerprint(fp).unwrap();
        assert_eq!(bytes[0], 0xC0);
        assert_eq!(
            parse_fingerprint(&fp.to_lowercase().replace(':', "")).unwrap(),
            bytes
        );
        assert!(parse_fingerprint("C0:77").is_err());
        assert!(parse_fingerprint("zz").is_err());
        let c = PveConfig {
            fingerprint: Some(fp.into()),
            ca_file: Some("/x.pem".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err(), "both at once");
    }

    #[test]
    fn ids_are_checked() {
        let c = PveConfig {
            storage: "local zfs".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("pve.storage")
        );
        let c = PveConfig {
            node: Some("-x".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn token_lines() {
        let t = Token::parse("root@pam!pvecri=1234-abcd\n").unwrap();
        assert_eq!(t.id, "root@pam!pvecri");
        assert_eq!(t.header(), "PVEAPIToken=root@pam!pvecri=1234-abcd");
        assert!(!format!("{t:?} {t}").contains("1234"), "secret leaked");
        for bad in [
            "",
            "root@pam!pvecri",
            "root@pam=abc",
            "root!x=abc",
            "root@pam!pvecri=",
            "root@pam!pvecri=a b",
            "a@b!c=d\ne@f!g=h",
            "root@pam!1x=abc",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "root@pam!pvecri=secret-value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("chmod 600") && !e.contains("secret-value"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if rustix::process::geteuid().is_root() {
            assert_eq!(Token::load(&path).unwrap().id, "root@pam!pvecri");
            std::os::unix::fs::chown(&path, Some(1000), None).unwrap();
            let e = Token::load(&path).unwrap_err().to_string();
            assert!(e.contains("owned by root"), "{e}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Token::load(&link).is_err());
        assert!(Token::load(&dir.path().join("missing")).is_err());
    }
}
