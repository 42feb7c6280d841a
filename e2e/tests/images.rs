//! Every small test image, pushed to a fresh local registry and read back with oci-client:
//! manifest (and index) bytes and digests, config, every layer digest, and every diff_id
//! recomputed from the decompressed blob and compared with the config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::io::Read;

use e2e::images::{
    self, Compression, ImageFormat, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_OCI_INDEX, TestImage,
};
use e2e::registry::{Registry, RegistryOptions};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::ImageIndexEntry;
use oci_client::manifest::OciManifest;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("+gzip") || media_type == MEDIA_TYPE_DOCKER_LAYER_GZIP {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if media_type.ends_with("+zstd") {
        out = zstd::decode_all(blob).unwrap();
    } else {
        assert!(
            media_type.ends_with(".tar"),
            "unexpected layer media type {media_type}"
        );
        out = blob.to_vec();
    }
    out
}

/// Reads the image at `reference` back and checks it against what was built.
async fn verify_image(
    registry: &Registry,
    client: &Client,
    reference: &Reference,
    image: &TestImage,
) {
    let auth = registry.auth();
    let (raw, digest) = client
        .pull_manifest_raw(reference, &auth, &[image.manifest_media_type.as_str()])
        .await
        .unwrap();
    assert_eq!(
        digest, image.manifest_digest,
        "{}: manifest digest",
        image.name
    );
    assert_eq!(
        raw.as_ref(),
        image.manifest_bytes.as_slice(),
        "{}: manifest bytes",
        image.name
    );
    assert_eq!(sha256(&raw), digest);
    let manifest: ImageManifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest.media_type().as_ref().map(|m| m.to_string()),
        Some(image.manifest_media_type.clone())
    );

    let mut config_bytes = Vec::new();
    client
        .pull_blob(
            reference,
            manifest.config().digest().to_string().as_str(),
            &mut config_bytes,
        )
        .await
        .unwrap();
    assert_eq!(
        sha256(&config_bytes),
        manifest.config().digest().to_string(),
        "{}: config digest",
        image.name
    );
    assert_eq!(config_bytes.len() as u64, manifest.config().size());
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).unwrap();
    let diff_ids = config.rootfs().diff_ids();
    assert_eq!(
        diff_ids.len(),
        manifest.layers().len(),
        "{}: one diff_id per layer",
        image.name
    );
    assert_eq!(
        config.history().as_ref().map(Vec::len),
        Some(manifest.layers().len())
    );

    for (i, (descriptor, built)) in manifest.layers().iter().zip(&image.layers).enumerate() {
        let media_type = descriptor.media_type().to_string();
        assert_eq!(media_type, built.media_type, "{} layer {i}", image.name);
        let digest = descriptor.digest().to_string();
        let mut blob = Vec::new();
        client
            .pull_blob(reference, digest.as_str(), &mut blob)
            .await
            .unwrap();
        assert_eq!(
            sha256(&blob),
            digest,
            "{} layer {i}: blob digest",
            image.name
        );
        assert_eq!(
            blob.len() as u64,
            descriptor.size(),
            "{} layer {i}: size",
            image.name
        );
        let tar = decompress(&media_type, &blob);
        assert_eq!(
            sha256(&tar),
            diff_ids[i],
            "{} layer {i}: diff_id",
            image.name
        );
        // The uncompressed stream is a tar with exactly the entries the layer was built from.
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        let expected: Vec<&str> = built.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, expected, "{} layer {i}: entries", image.name);
    }
}

#[tokio::test]
async fn every_small_image_round_trips_through_the_registry() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let client = registry.client();
    let mut pushed = Vec::new();
    let mut singles = vec![
        images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap(),
        images::config_image().unwrap(),
    ];
    for format in [
        ImageFormat::Oci(Compression::Gzip),
        ImageFormat::Oci(Compression::Zstd),
        ImageFormat::Oci(Compression::None),
        ImageFormat::Docker,
    ] {
        singles.push(images::multi_layer(format).unwrap());
    }
    for image in &singles {
        let digest = image.push(&registry, &image.name, "v1").await.unwrap();
        assert_eq!(digest, image.manifest_digest);
        pushed.push((image.name.clone(), image.clone()));
    }
    for (repo, image) in &pushed {
        verify_image(
            &registry,
            &client,
            &registry.reference(repo, "v1").unwrap(),
            image,
        )
        .await;
    }

    // Variants share diff_ids and differ in blob digests.
    let by_name = |n: &str| singles.iter().find(|i| i.name == n).unwrap();
    let gz = by_name("multi-layer");
    for other in [
        "multi-layer-zstd",
        "multi-layer-uncompressed",
        "multi-layer-docker",
    ] {
        let other = by_name(other);
        assert_eq!(
            other.config.rootfs().diff_ids(),
            gz.config.rootfs().diff_ids(),
            "{}",
            other.name
        );
    }
    assert_ne!(
        by_name("multi-layer-zstd").layers[0].digest,
        gz.layers[0].digest
    );
    assert_eq!(
        by_name("multi-layer-docker").layers[0].digest,
        gz.layers[0].digest
    );

    // The config image's settings come back as set.
    let (_, _, config_json) = client
        .pull_manifest_and_config(
            &registry.reference("config", "v1").unwrap(),
            &registry.auth(),
        )
        .await
        .unwrap();
    let config: ImageConfiguration = serde_json::from_str(&config_json).unwrap();
    let c = config.config().as_ref().unwrap();
    assert_eq!(c.user().as_deref(), Some(images::CONFIG_USER));
    assert_eq!(c.working_dir().as_deref(), Some(images::CONFIG_WORKDIR));
    assert_eq!(
        c.env().as_ref().unwrap(),
        &images::CONFIG_ENV.map(String::from).to_vec()
    );
    assert_eq!(
        c.entrypoint().as_ref().unwrap(),
        &images::CONFIG_ENTRYPOINT.map(String::from).to_vec()
    );
    assert_eq!(
        c.cmd().as_ref().unwrap(),
        &images::CONFIG_CMD.map(String::from).to_vec()
    );
}

fn client_for(registry: &Registry, arch: &'static str) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.addr()]),
        platform_resolver: Some(Box::new(move |entries: &[ImageIndexEntry]| {
            entries
                .iter()
                .find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.architecture.to_string() == arch)
                })
                .map(|e| e.digest.clone())
        })),
        ..ClientConfig::default()
    })
}

#[tokio::test]
async fn index_round_trips_and_resolves_each_platform() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let index = images::index_image().unwrap();
    let digest = index.push(&registry, "multiarch", "v1").await.unwrap();
    assert_eq!(digest, index.index_digest);
    let client = registry.client();
    let reference = registry.reference("multiarch", "v1").unwrap();
    let (raw, got) = client
        .pull_manifest_raw(&reference, &registry.auth(), &[MEDIA_TYPE_OCI_INDEX])
        .await
        .unwrap();
    assert_eq!(got, index.index_digest);
    assert_eq!(raw.as_ref(), index.index_bytes.as_slice());
    let parsed: ImageIndex = serde_json::from_slice(&raw).unwrap();
    assert_eq!(parsed.manifests().len(), 2);
    match client
        .pull_manifest(&reference, &registry.auth())
        .await
        .unwrap()
        .0
    {
        OciManifest::ImageIndex(i) => assert_eq!(i.manifests.len(), 2),
        OciManifest::Image(_) => panic!("tag resolved to an image, not the index"),
    }

    for (platform, image) in &index.images {
        let by_digest = reference.clone_with_digest(image.manifest_digest.clone());
        verify_image(&registry, &client, &by_digest, image).await;
        let arch: &'static str = if platform.architecture == "amd64" {
            "amd64"
        } else {
            "arm64"
        };
        let (manifest, resolved, config) = client_for(&registry, arch)
            .pull_manifest_and_config(&reference, &registry.auth())
            .await
            .unwrap();
        assert_eq!(
            resolved, image.manifest_digest,
            "{arch} resolved to another manifest"
        );
        assert_eq!(manifest.layers.len(), 2);
        let config: ImageConfiguration = serde_json::from_str(&config).unwrap();
        assert_eq!(config.architecture().to_string(), arch);
    }
    assert_ne!(
        index.images[0].1.config_digest,
        index.images[1].1.config_digest
    );
}

#[tokio::test]
async fn large_image_round_trips_through_the_registry() {
    let image = images::large_image().unwrap();
    assert_eq!(image.layers.len(), 1 + images::LARGE_LAYERS);
    let contents: u64 = image
        .layers
        .iter()
        .flat_map(|l| &l.entries)
        .map(images::TarEntry::size)
        .sum();
    assert!(
        contents >= 300 << 20,
        "large image holds only {contents} bytes"
    );
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let digest = image.push(&registry, "large", "v1").await.unwrap();
    assert_eq!(digest, image.manifest_digest);
    // A second push finds every blob present and uploads nothing.
    let uploads = registry.request_count("/blobs/uploads/");
    image.push(&registry, "large", "v2").await.unwrap();
    assert_eq!(
        registry.request_count("/blobs/uploads/"),
        uploads,
        "blobs were uploaded again"
    );
    let reference = registry.reference("large", "v1").unwrap();
    verify_image(&registry, &registry.client(), &reference, &image).await;
}
