//! The image service's Prometheus counters, read from the library (the daemon has no
//! metrics endpoint yet): an overlay store in a temporary directory, a real registry.
//!
//! Run with `cargo nextest run -p e2e --test image_service_metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::sync::Arc;

use e2e::images::{self, Compression, ImageFormat};
use e2e::registry::{Registry, RegistryOptions};
use imageservice::manifest::Platform;
use imageservice::metrics::PullMetrics;
use imageservice::record::MemoryCatalog;
use imageservice::service::{ImageService, ImageServiceConfig};
use prometheus::Encoder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_counters_move() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let multi = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    multi.push(&registry, "multi", "1").await.unwrap();
    let one = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    one.push(&registry, "one", "1").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = layerfs::open_store(&layerfs::StoreConfig::Overlay {
        root: dir.path().join("overlay"),
    })
    .unwrap();
    let metrics = PullMetrics::new().unwrap();
    let prometheus_registry = prometheus::Registry::new();
    metrics.register(&prometheus_registry).unwrap();
    let service = ImageService::new(
        ImageServiceConfig {
            registries: Default::default(),
            spool_dir: dir.path().join("spool"),
            max_concurrent_downloads: 4,
            platform: Platform::node(),
        },
        store,
        Arc::new(MemoryCatalog::default()),
        metrics.clone(),
    )
    .unwrap();

    let record = service
        .pull(&format!("{}/multi:1", registry.addr()), None)
        .await
        .unwrap();
    assert_eq!(record.id, multi.config_digest);
    let multi_bytes =
        multi.config_bytes.len() as u64 + multi.layers.iter().map(|l| l.size).sum::<u64>();
    assert_eq!(metrics.bytes_pulled.get(), multi_bytes);
    assert_eq!(metrics.layers_fetched.get(), 4);
    assert_eq!(metrics.layers_reused.get(), 0);
    assert_eq!(metrics.pulls.with_label_values(&["success"]).get(), 1);
    assert_eq!(metrics.pull_duration.get_sample_count(), 1);
    assert!(metrics.pull_duration.get_sample_sum() > 0.0);

    // `one-layer` is the base layer of `multi-layer`: only its config is new.
    service
        .pull(&format!("{}/one:1", registry.addr()), None)
        .await
        .unwrap();
    assert_eq!(
        metrics.bytes_pulled.get(),
        multi_bytes + one.config_bytes.len() as u64
    );
    assert_eq!(metrics.layers_fetched.get(), 4);
    assert_eq!(metrics.layers_reused.get(), 1);
    assert_eq!(metrics.pulls.with_label_values(&["success"]).get(), 2);

    let e = service
        .pull(&format!("{}/missing:1", registry.addr()), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), imageservice::error::ErrorKind::NotFound, "{e}");
    assert_eq!(metrics.pulls.with_label_values(&["failure"]).get(), 1);
    assert_eq!(
        metrics.pull_duration.get_sample_count(),
        2,
        "failures are not timed"
    );

    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&prometheus_registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    for line in [
        format!(
            "pvecri_image_pull_bytes_total {}",
            metrics.bytes_pulled.get()
        ),
        "pvecri_image_layers_fetched_total 4".to_owned(),
        "pvecri_image_layers_reused_total 1".to_owned(),
        "pvecri_image_pulls_total{result=\"success\"} 2".to_owned(),
        "pvecri_image_pulls_total{result=\"failure\"} 1".to_owned(),
        "pvecri_image_pull_duration_seconds_count 2".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}
