//! Manifests and indexes as registries serve them (OCI and Docker schema 2), parsed
//! leniently in shape but strictly in what pvecri relies on: digests, sizes, media types.

use serde::Deserialize;

use crate::reference::validate_digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What the manifest endpoint may answer, in order of preference for the Accept header.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schema version {0} is not supported (only 2)")]
    SchemaVersion(u32),
    #[error("manifest has neither layers nor manifests")]
    Unknown,
    #[error("unsupported config media type {0} (not a container image)")]
    ConfigMediaType(String),
    #[error("bad descriptor: {0}")]
    Descriptor(String),
    #[error("no image for platform {wanted}; the index offers {offered}")]
    NoPlatform { wanted: String, offered: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    pub fn node() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: (architecture == "arm64").then(|| "v8".into()),
        }
    }

    fn matches(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        // arm64 images rarely set a variant; v8 is what an unset one means.
        match (&self.variant, &wanted.variant) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) => a == b,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

fn check(d: &Descriptor) -> Result<(), ManifestError> {
    validate_digest(&d.digest).map_err(ManifestError::Descriptor)?;
    if d.size < 0 {
        return Err(ManifestError::Descriptor(format!(
            "{}: negative size",
            d.digest
        )));
    }
    Ok(())
}

pub fn parse(bytes: &[u8]) -> Result<Fetched, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    if let Some(v) = raw.schema_version.filter(|v| *v != 2) {
        return Err(ManifestError::SchemaVersion(v));
    }
    let is_index = matches!(raw.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST))
        || (raw.manifests.is_some() && raw.layers.is_none());
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        manifests.iter().try_for_each(check)?;
        return Ok(Fetched::Index(Index { manifests }));
    }
    match (raw.config, raw.layers) {
        (Some(config), Some(layers)) => {
            check(&config)?;
            if !config.media_type.is_empty()
                && config.media_type != OCI_CONFIG
                && config.media_type != DOCKER_CONFIG
            {
                return Err(ManifestError::ConfigMediaType(config.media_type));
            }
            layers.iter().try_for_each(check)?;
            Ok(Fetched::Manifest(Manifest { config, layers }))
        }
        _ => Err(ManifestError::Unknown),
    }
}

impl Index {
    /// The manifest for `wanted`; the error lists what the index offers.
    pub fn select(&self, wanted: &Platform) -> Result<&Descriptor, ManifestError> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(wanted)))
            .ok_or_else(|| {
                let offered: Vec<String> = self
                    .manifests
                    .iter()
                    .map(|d| {
                        d.platform
                            .as_ref()
                            .map_or("unknown".into(), Platform::to_string)
                    })
                    .collect();
                ManifestError::NoPlatform {
                    wanted: wanted.to_string(),
                    offered: if offered.is_empty() {
                        "nothing".into()
                    } else {
                        offered.join(", ")
                    },
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn oci_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D2}","size":20}}]}}"#
        );
        let Fetched::Manifest(m) = parse(m.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(m.config.digest, D1);
        assert_eq!(m.layers[0].size, 20);
    }

    #[test]
    fn docker_list_selects_the_node_platform() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Fetched::Index(i) = parse(m.as_bytes()).unwrap() else {
            panic!()
        };
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(i.select(&amd).unwrap().digest, D2);
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(i.select(&arm).unwrap().digest, D1);
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        let e = i.select(&s390).unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm64/v8, linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn rejects_what_it_cannot_pull() {
        assert!(matches!(parse(b"{"), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#),
            Err(ManifestError::SchemaVersion(1))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2}"#),
            Err(ManifestError::Unknown)
        ));
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(helm.as_bytes()),
            Err(ManifestError::ConfigMediaType(_))
        ));
        let bad = br#"{"schemaVersion":2,"config":{"digest":"sha256:xyz","size":1},"layers":[]}"#;
        assert!(matches!(parse(bad), Err(ManifestError::Descriptor(_))));
        let neg =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":-1}},"layers":[]}}"#);
        assert!(matches!(
            parse(neg.as_bytes()),
            Err(ManifestError::Descriptor(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_jsonish(s in r#"\{"(schemaVersion|config|layers|manifests|mediaType)":(2|"x"|\[\]|\{\}|null)(,"(digest|size|platform)":(1|"sha256:[0-9a-f]{0,64}"|-1))?\}"#) {
            let _ = parse(s.as_bytes());
        }
    }
}
