//! kill -9 of the daemon in the middle of pulling the large image (downloads slowed by a
//! fault proxy so the kill lands inside a layer), then a restart: nothing recorded, the
//! store clean, and the next pull succeeds. On both layer stores.
//!
//! Run with `cargo build -p cri && cargo nextest run -p e2e --test image_service_crash`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod image_service_common;

use std::time::{Duration, Instant};

use e2e::images;
use e2e::mounts::{current_mounts, mounts_under};
use e2e::proxy::FaultProxy;
use e2e::registry::{Registry, RegistryOptions};
use image_service_common::*;

/// Per connection: the 33-48 MB layers then take 10 s or more each.
const THROTTLE: u64 = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_kill9_mid_pull_leaves_nothing() {
    kill9_mid_pull_leaves_nothing(Store::Overlay).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_kill9_mid_pull_leaves_nothing() {
    kill9_mid_pull_leaves_nothing(Store::Zfs).await
}

async fn kill9_mid_pull_leaves_nothing(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let large = images::large_image().unwrap();
    large.push(&registry, "large", "1").await.unwrap();
    let proxy = FaultProxy::start(registry.socket_addr()).unwrap();
    proxy.set_bytes_per_sec(THROTTLE);
    let mut env = Env::start(store, "").unwrap();
    let name = format!("{}/large:1", proxy.addr());

    let mut c = env.client().await;
    let puller = {
        let name = name.clone();
        tokio::spawn(async move { pull(&mut c, &name, None).await })
    };
    // Mid-layer: bytes flowing, and a layer being applied in the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listing = env.store_listing();
        if proxy.bytes_forwarded() > 8 << 20 && !listing.in_progress.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull did not get going: {} bytes, {listing:?}",
            proxy.bytes_forwarded()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.daemon.kill9().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), puller)
        .await
        .expect("the PullImage call ended with the daemon")
        .unwrap();
    assert!(
        answer.is_err(),
        "the pull answered {answer:?} after kill -9"
    );
    let left = env.store_listing();
    let spooled = env.spool_files();
    eprintln!(
        "left by the kill after {} bytes: {left:?}, spool {spooled:?}",
        proxy.bytes_forwarded()
    );
    assert!(
        !left.in_progress.is_empty(),
        "the kill should have landed mid-layer: {left:?}"
    );
    let chains = chain_ids(&large);
    assert!(
        !chains[1..].iter().any(|c| left.complete.contains(c)),
        "a large layer completed before the kill: {left:?}"
    );

    env.daemon.restart().unwrap();
    let mut c = env.client().await;
    assert!(list(&mut c, None).await.is_empty(), "an image was recorded");
    let after = env.store_listing();
    assert!(
        after.in_progress.is_empty(),
        "unfinished work survived: {after:?}"
    );
    assert!(
        after.complete.is_empty(),
        "layers of no image survived the restart: {after:?}"
    );
    assert!(
        env.spool_files().is_empty(),
        "spool files survived: {:?}",
        env.spool_files()
    );
    let mounts = mounts_under(&current_mounts().unwrap(), &env.daemon.state_dir);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");

    proxy.set_bytes_per_sec(0);
    let id = pull(&mut c, &name, None).await.unwrap();
    assert_eq!(id, large.config_digest);
    assert_eq!(env.store_listing().complete, sorted(chains));
    let got = status(&mut c, &name, false).await.0.unwrap();
    assert_eq!(got.size, image_size(&large));
}
