//! Images and indexes assembled from test layers: config and manifest JSON, digests, push.

use anyhow::Context;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::layer::{Compression, LayerBlob, LayerBuilder, MEDIA_TYPE_DOCKER_LAYER_GZIP, TestLayer};
use crate::registry::Registry;

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifest flavour and layer compression of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// OCI manifest, layers compressed as given.
    Oci(Compression),
    /// Docker schema 2 manifest with gzip layers.
    Docker,
}

impl ImageFormat {
    pub fn compression(self) -> Compression {
        match self {
            ImageFormat::Oci(c) => c,
            ImageFormat::Docker => Compression::Gzip,
        }
    }

    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci(_) => MEDIA_TYPE_OCI_MANIFEST,
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci(_) => MEDIA_TYPE_OCI_CONFIG,
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_CONFIG,
        }
    }

    pub fn layer_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci(c) => c.oci_media_type(),
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_LAYER_GZIP,
        }
    }
}

/// A single-platform image: exact manifest and config bytes as pushed, parsed forms, layers.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub name: String,
    pub format: ImageFormat,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config: ImageConfiguration,
    pub config_bytes: Vec<u8>,
    pub config_digest: String,
    pub config_media_type: String,
    pub layers: Vec<TestLayer>,
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl TestImage {
    /// Finishes every builder with the format's compression and assembles the image.
    pub fn build(
        name: &str,
        format: ImageFormat,
        config: Value,
        layers: &[LayerBuilder],
    ) -> anyhow::Result<TestImage> {
        let layers = layers
            .iter()
            .map(|b| b.finish(format.compression()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        TestImage::assemble(name, format, config, layers)
    }

    /// Makes the config (adding `rootfs.diff_ids` and, if absent, one `history` entry per
    /// layer) and the manifest for finished layers, whose media types are set to the format's.
    pub fn assemble(
        name: &str,
        format: ImageFormat,
        mut config: Value,
        layers: Vec<TestLayer>,
    ) -> anyhow::Result<TestImage> {
        let layers: Vec<TestLayer> = layers
            .into_iter()
            .map(|l| l.with_media_type(format.layer_media_type()))
            .collect();
        let object = config
            .as_object_mut()
            .context("image config must be a JSON object")?;
        object.insert(
            "rootfs".into(),
            json!({ "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() }),
        );
        if !object.contains_key("history") {
            let created = object.get("created").cloned().unwrap_or(Value::Null);
            let history: Vec<Value> = (0..layers.len())
                .map(|i| json!({ "created": created, "created_by": format!("pvecri-e2e {name} layer {i}") }))
                .collect();
            object.insert("history".into(), Value::Array(history));
        }
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = sha256_digest(&config_bytes);
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_media_type(),
            "config": {
                "mediaType": format.config_media_type(),
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest_json)?;
        Ok(TestImage {
            name: name.to_owned(),
            format,
            manifest: serde_json::from_slice(&manifest_bytes)
                .context("generated manifest does not parse")?,
            manifest_digest: sha256_digest(&manifest_bytes),
            manifest_bytes,
            manifest_media_type: format.manifest_media_type().to_owned(),
            config: serde_json::from_slice(&config_bytes)
                .context("generated config does not parse")?,
            config_bytes,
            config_digest,
            config_media_type: format.config_media_type().to_owned(),
            layers,
        })
    }

    /// Pushes blobs (skipping those the registry has) and the manifest as `repo:tag`;
    /// returns the manifest digest.
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> anyhow::Result<String> {
        let client = registry.client();
        let reference = registry.reference(repo, tag)?;
        client
            .auth(&reference, &registry.auth(), RegistryOperation::Push)
            .await?;
        self.push_blobs(&client, &reference).await?;
        push_manifest(
            &client,
            &reference,
            &self.manifest_bytes,
            &self.manifest_media_type,
        )
        .await?;
        Ok(self.manifest_digest.clone())
    }

    async fn push_blobs(&self, client: &Client, reference: &Reference) -> anyhow::Result<()> {
        for layer in &self.layers {
            push_blob_if_missing(client, reference, &layer.digest, &layer.blob).await?;
        }
        let config = LayerBlob::Bytes(self.config_bytes.clone());
        push_blob_if_missing(client, reference, &self.config_digest, &config).await
    }
}

async fn push_blob_if_missing(
    client: &Client,
    reference: &Reference,
    digest: &str,
    blob: &LayerBlob,
) -> anyhow::Result<()> {
    if client.blob_exists(reference, digest).await? {
        return Ok(());
    }
    let data = blob
        .read()
        .with_context(|| format!("cannot read blob {digest}"))?;
    client
        .push_blob(reference, data, digest)
        .await
        .with_context(|| format!("cannot push blob {digest} to {reference}"))?;
    Ok(())
}

async fn push_manifest(
    client: &Client,
    reference: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> anyhow::Result<()> {
    let content_type = http::HeaderValue::from_str(media_type)?;
    client
        .push_manifest_raw(reference, bytes.to_vec(), content_type)
        .await
        .with_context(|| format!("cannot push manifest to {reference}"))?;
    Ok(())
}

/// One platform of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A multi-platform image index and the images it points to, in index order.
#[derive(Debug, Clone)]
pub struct TestIndex {
    pub name: String,
    pub index: ImageIndex,
    pub index_bytes: Vec<u8>,
    pub index_digest: String,
    pub media_type: String,
    pub images: Vec<(IndexPlatform, TestImage)>,
}

impl TestIndex {
    pub fn assemble(
        name: &str,
        images: Vec<(IndexPlatform, TestImage)>,
    ) -> anyhow::Result<TestIndex> {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(platform, image)| {
                let mut p = json!({ "os": platform.os, "architecture": platform.architecture });
                if let (Some(variant), Some(obj)) = (&platform.variant, p.as_object_mut()) {
                    obj.insert("variant".into(), json!(variant));
                }
                json!({
                    "mediaType": image.manifest_media_type,
                    "digest": image.manifest_digest,
                    "size": image.manifest_bytes.len(),
                    "platform": p,
                })
            })
            .collect();
        let index_bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": manifests,
        }))?;
        Ok(TestIndex {
            name: name.to_owned(),
            index: serde_json::from_slice(&index_bytes)
                .context("generated index does not parse")?,
            index_digest: sha256_digest(&index_bytes),
            index_bytes,
            media_type: MEDIA_TYPE_OCI_INDEX.to_owned(),
            images,
        })
    }

    /// Pushes every image by digest, then the index as `repo:tag`; returns the index digest.
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> anyhow::Result<String> {
        let client = registry.client();
        let reference = registry.reference(repo, tag)?;
        client
            .auth(&reference, &registry.auth(), RegistryOperation::Push)
            .await?;
        for (_, image) in &self.images {
            image.push_blobs(&client, &reference).await?;
            let by_digest = reference.clone_with_digest(image.manifest_digest.clone());
            push_manifest(
                &client,
                &by_digest,
                &image.manifest_bytes,
                &image.manifest_media_type,
            )
            .await?;
        }
        push_manifest(&client, &reference, &self.index_bytes, &self.media_type).await?;
        Ok(self.index_digest.clone())
    }
}
