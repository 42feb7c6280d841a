//! Pods and containers through the real daemon, real LXC, real CNI (bridge plugin) and
//! the static podinit, on both layer stores. Each test has its own daemon, registry and
//! network, and runs once per store (`<test>::overlay`, `<test>::zfs`).
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use e2e::pods::{
    PodEnv, Store, container_config, exec, exec_ok, pod_ip, sh, wait_container_state,
};
use k8s_cri::v1::ContainerState;

/// Each test once per layer store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn overlay() {
                super::$name(e2e::pods::Store::Overlay).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn zfs() {
                super::$name(e2e::pods::Store::Zfs).await
            }
        }
    )* };
}

on_both_stores!(two_containers_share_the_pod_network);

const RUNNING: Duration = Duration::from_secs(20);

/// An HTTP GET from the host; returns the body.
fn http_get(ip: &str, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

async fn two_containers_share_the_pod_network(store: Store) {
    let env = PodEnv::start(store).await.unwrap();
    env.pull(&env.images.config).await.unwrap();
    env.pull(&env.images.multi_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("web");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    assert_eq!(pod_id.len(), 64);

    // The config image runs as uid 1000 in /home/app.
    let mut server = container_config("server", &env.images.config, &[]);
    server.command = sh(
        "mkdir -p /tmp/www && echo served-by-server > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    let server_id = env
        .run_container(&mut rt, &pod_id, &pod, server)
        .await
        .unwrap();
    let client = container_config("client", &env.images.multi_layer, &["sleep", "3600"]);
    let client_id = env
        .run_container(&mut rt, &pod_id, &pod, client)
        .await
        .unwrap();
    for id in [&server_id, &client_id] {
        wait_container_state(&mut rt, id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
    }

    // Same pod IP, from CNI, in both containers.
    let ip = pod_ip(&mut rt, &pod_id).await.unwrap();
    assert!(env.net.contains(&ip), "pod IP {ip} not in {}", env.net.subnet());
    for id in [&server_id, &client_id] {
        let addrs = exec_ok(&mut rt, id, "ip -4 -o addr show eth0").await.unwrap();
        assert!(addrs.contains(&format!("inet {ip}/24")), "{id}: {addrs}");
    }

    // The client reaches the server on localhost (httpd may take a moment to listen).
    let body = e2e::pods::eventually("server answers on 127.0.0.1:8080", RUNNING, || {
        let mut rt = rt.clone();
        let id = client_id.clone();
        async move {
            let r = exec(&mut rt, &id, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], 10)
                .await?;
            Ok((r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).into_owned()))
        }
    })
    .await
    .unwrap();
    assert_eq!(body, "served-by-server\n");

    // The host reaches the pod IP.
    assert_eq!(http_get(&ip, 8080).unwrap(), "served-by-server\n");

    // Each container sees its own root filesystem only.
    assert_eq!(
        exec_ok(&mut rt, &client_id, "cat /data/keep.txt").await.unwrap(),
        "keep\n"
    );
    let r = exec(&mut rt, &server_id, &["test", "-e", "/data/keep.txt"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 1, "the server sees the client's image files");
    let r = exec(&mut rt, &client_id, &["test", "-e", "/tmp/www/index.html"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 1, "the client sees the server's files");
    // The config image's user and working directory hold in the server.
    assert_eq!(
        exec_ok(&mut rt, &server_id, "id -u; pwd").await.unwrap(),
        "1000\n/home/app\n"
    );
    // The pod's hostname and the env from the request.
    assert_eq!(
        exec_ok(&mut rt, &client_id, "hostname; echo $PVECRI_TEST")
            .await
            .unwrap(),
        "web\n1\n"
    );
}
