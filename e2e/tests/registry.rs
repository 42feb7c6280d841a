//! The local registry harness against the real Debian docker-registry.

use std::net::TcpStream;

use e2e::registry::{Registry, RegistryOptions};
use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

#[tokio::test]
async fn anonymous_registry_serves_pushes_and_counts_requests() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    assert!(registry.addr().starts_with("127.0.0.1:"));
    let client = registry.client();
    let reference = registry.reference("tiny", "v1").unwrap();
    let layer = ImageLayer::oci_v1(b"not really a tar".to_vec(), None);
    let layer_digest = layer.sha256_digest();
    client
        .push(
            &reference,
            &[layer],
            Config::oci_v1(b"{}".to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();

    let before = registry.request_count("/v2/tiny/manifests/v1");
    let (manifest, _digest) = client
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(manifest.layers[0].digest, layer_digest);
    assert_eq!(registry.request_count("/v2/tiny/manifests/v1"), before + 1);

    // The blob is where storage_dir says, and a corrupted blob is caught by the client.
    let blob = registry.blob_path(&layer_digest).unwrap();
    assert_eq!(std::fs::read(&blob).unwrap(), b"not really a tar");
    let mut out = Vec::new();
    client
        .pull_blob(&reference, &manifest.layers[0], &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"not really a tar");
    assert!(registry.request_count(&format!("/v2/tiny/blobs/{layer_digest}")) >= 1);
    std::fs::write(&blob, b"tampered bytes!!").unwrap();
    let mut out = Vec::new();
    let err = client
        .pull_blob(&reference, &manifest.layers[0], &mut out)
        .await;
    assert!(err.is_err(), "a corrupted blob was accepted");
}

#[test]
fn two_registries_get_distinct_ports_and_stop_on_drop() {
    let a = Registry::start(RegistryOptions::default()).unwrap();
    let b = Registry::start(RegistryOptions::default()).unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.storage_dir(), b.storage_dir());
    let addr = a.addr();
    drop(a);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "registry still listening on {addr} after drop"
    );
    assert!(TcpStream::connect(b.addr()).is_ok());
}

#[tokio::test]
async fn basic_auth_refuses_anonymous_and_wrong_password() {
    let registry = Registry::start(RegistryOptions {
        basic_auth: Some(("tester".into(), "s3cret pass".into())),
    })
    .unwrap();
    let client = registry.client();
    let reference = registry.reference("private", "v1").unwrap();
    let good = registry.auth();
    assert!(matches!(good, RegistryAuth::Basic(..)));

    let anon_push = client
        .push(
            &reference,
            &[ImageLayer::oci_v1(b"layer".to_vec(), None)],
            Config::oci_v1(b"{}".to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await;
    assert!(anon_push.is_err(), "anonymous push was accepted");

    // A fresh client: oci-client keeps the first credentials it saw for a registry.
    registry
        .client()
        .push(
            &reference,
            &[ImageLayer::oci_v1(b"layer".to_vec(), None)],
            Config::oci_v1(b"{}".to_vec(), None),
            &good,
            None,
        )
        .await
        .unwrap();

    let anon = registry
        .client()
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await;
    let err = format!("{:?}", anon.expect_err("anonymous pull was accepted"));
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    let wrong = RegistryAuth::Basic("tester".into(), "wrong".into());
    assert!(
        registry
            .client()
            .pull_image_manifest(&reference, &wrong)
            .await
            .is_err()
    );
    let (manifest, _) = registry
        .client()
        .pull_image_manifest(&reference, &good)
        .await
        .unwrap();
    assert_eq!(manifest.layers.len(), 1);
    assert!(
        registry.requests().iter().any(|r| r.status == 401),
        "no 401 in the access log"
    );
}

#[tokio::test]
async fn fault_proxy_throttles_and_cuts_downloads() {
    use e2e::proxy::FaultProxy;
    use e2e::registry::plain_http_client;

    let registry = Registry::start(RegistryOptions::default()).unwrap();
    // Incompressible, so that nothing on the way shrinks it.
    let data: Vec<u8> = (0..4 << 20).map(|_| rand::random::<u8>()).collect();
    let layer = ImageLayer::oci_v1(data.clone(), None);
    let digest = layer.sha256_digest();
    let direct = registry.reference("big", "v1").unwrap();
    registry
        .client()
        .push(
            &direct,
            &[layer],
            Config::oci_v1(b"{}".to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();

    let proxy = FaultProxy::start(registry.socket_addr()).unwrap();
    let via_proxy: oci_client::Reference = format!("{}/big:v1", proxy.addr()).parse().unwrap();
    let client = plain_http_client(&[proxy.addr()]);

    proxy.set_bytes_per_sec(4 << 20);
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    client
        .pull_blob(&via_proxy, digest.as_str(), &mut out)
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out, data);
    assert!(
        took >= std::time::Duration::from_millis(800),
        "4 MiB at 4 MiB/s took only {took:?}"
    );
    assert!(proxy.bytes_forwarded() >= 4 << 20);

    proxy.set_bytes_per_sec(0);
    proxy.set_cut_after(1 << 20);
    let before = proxy.bytes_forwarded();
    let mut out = Vec::new();
    let cut = plain_http_client(&[proxy.addr()])
        .pull_blob(&via_proxy, digest.as_str(), &mut out)
        .await;
    assert!(cut.is_err(), "a download cut after 1 MiB succeeded");
    assert!(proxy.bytes_forwarded() - before <= 1 << 20);

    proxy.set_cut_after(0);
    let mut out = Vec::new();
    plain_http_client(&[proxy.addr()])
        .pull_blob(&via_proxy, digest.as_str(), &mut out)
        .await
        .unwrap();
    assert_eq!(out.len(), data.len());
}
