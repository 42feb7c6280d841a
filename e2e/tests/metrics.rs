//! The Prometheus endpoint of the real daemon (`[metrics] address`), scraped over HTTP and
//! read with a Prometheus text-format parser: values move after a pull, a pod start and a
//! failed RPC, and the layer store and pod gauges follow what exists. Without the key there is
//! no endpoint.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use e2e::pods::{PodEnv, PodEnvOptions, Store, container_config, wait_container_state};
use k8s_cri::v1::{ContainerState, ContainerStatusRequest};
use prometheus_parse::{Scrape, Value};

const RUNNING: Duration = Duration::from_secs(20);

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// GET `path`; (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_pulls_pods_and_errors() {
    let addr = free_port();
    let env = PodEnv::start_with(
        Store::Overlay,
        PodEnvOptions {
            config_top: format!("[metrics]\naddress = \"{addr}\"\n"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = scrape(addr);
    assert_eq!(value(&before, "pvecri_image_pull_bytes_total", &[]), 0.0);
    assert_eq!(value(&before, "pvecri_pods", &[("state", "ready")]), 0.0);
    assert_eq!(
        value(
            &before,
            "pvecri_layer_store_layers",
            &[("driver", "overlay")]
        ),
        0.0
    );
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("metered");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let c = container_config("app", &env.images.one_layer, &["sleep", "3600"]);
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    // One failed RPC.
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: "f00".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The layer store is measured at most every 30 s; this is the first measurement after
    // the pull only if the first scrape was long enough ago, so wait for it.
    tokio::time::sleep(Duration::from_secs(31)).await;

    let after = scrape(addr);
    assert!(value(&after, "pvecri_image_pull_bytes_total", &[]) > 0.0);
    assert_eq!(
        value(&after, "pvecri_image_pulls_total", &[("result", "success")]),
        1.0
    );
    assert!(value(&after, "pvecri_image_layers_fetched_total", &[]) >= 1.0);
    assert_eq!(value(&after, "pvecri_pods", &[("state", "ready")]), 1.0);
    assert_eq!(
        value(&after, "pvecri_containers", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "pvecri_pod_ct_start_duration_seconds",
            &[("driver", "lxc")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "pvecri_grpc_errors_total",
            &[("method", "ContainerStatus"), ("code", "NOT_FOUND")]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "pvecri_grpc_request_duration_seconds",
            &[("method", "RunPodSandbox")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &after,
            "pvecri_layer_store_layers",
            &[("driver", "overlay")]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "pvecri_layer_store_used_bytes",
            &[("driver", "overlay")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &after,
            "pvecri_layer_store_rootfs",
            &[("driver", "overlay")]
        ),
        1.0
    );
    assert_eq!(value(&after, "pvecri_podinit_restarts_total", &[]), 0.0);

    for name in [
        "pvecri_grpc_request_duration_seconds",
        "pvecri_image_pull_duration_seconds",
        "pvecri_pod_ct_start_duration_seconds",
        "pvecri_containers",
        "pvecri_podinit_restarts_total",
    ] {
        assert!(after.docs.contains_key(name), "{name} has HELP");
    }

    // Only /metrics, only GET.
    assert!(get(addr, "/").0.contains(" 404 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_by_default() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    let log = env.daemon.log();
    assert!(!log.contains("serving Prometheus metrics"), "{log}");
}
