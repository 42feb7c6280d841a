//! The CRI ImageService of the real daemon against a real registry, on both layer stores:
//! every test runs once on `overlay` and once on `zfs` (a scratch dataset of the shared
//! zfs-fuse pool).
//!
//! Run with `cargo build -p cri && cargo nextest run -p e2e --test image_service`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod image_service_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use e2e::images::{self, Compression, ImageFormat, TestImage, TestIndex};
use e2e::registry::{Registry, RegistryOptions};
use e2e::tree::{CompareOptions, ensure_same, expected_tree, read_tree};
use image_service_common::*;
use k8s_cri::v1::{AuthConfig, Image};
use serde_json::json;
use tonic::Code;

/// Generates `overlay::NAME` and `zfs::NAME` for each `async fn NAME(store: Store)`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod overlay {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Overlay).await
                }
            )*
        }
        mod zfs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Zfs).await
                }
            )*
        }
    };
}

on_both_stores!(
    every_image_by_tag_and_by_digest,
    pulled_layers_hold_the_image_files,
    one_of_two_tags_removed_and_tags_moved,
    platform_index_gives_the_amd64_image,
    mirror_serves_a_name_that_resolves_nowhere,
    basic_auth_needs_credentials,
    altered_blobs_fail_with_digest_errors,
    ten_concurrent_pulls_fetch_each_blob_once,
    errors_are_classified,
    shared_layers_are_stored_once,
    metadata_survives_restarts,
    image_fs_info_reports_usage,
    one_download_slot_still_pulls,
    a_pull_past_its_deadline_is_deadline_exceeded,
);

/// `127.0.0.1:PORT/repo:tag`, as the daemon records it.
fn tagged(registry: &Registry, repo: &str, tag: &str) -> String {
    format!("{}/{repo}:{tag}", registry.addr())
}

/// `127.0.0.1:PORT/repo@digest`.
fn digested(registry: &Registry, repo: &str, digest: &str) -> String {
    format!("{}/{repo}@{digest}", registry.addr())
}

fn ids(images: &[Image]) -> BTreeSet<String> {
    images.iter().map(|i| i.id.clone()).collect()
}

/// GETs so far of an image's config and layer blobs.
fn blob_counts(registry: &Registry, image: &TestImage) -> BTreeMap<String, usize> {
    let mut digests = vec![image.config_digest.clone()];
    digests.extend(image.layers.iter().map(|l| l.digest.clone()));
    digests
        .into_iter()
        .map(|d| {
            let n = blob_gets(registry, &d);
            (d, n)
        })
        .collect()
}

/// An image whose config names its user by name.
fn named_user_image() -> TestImage {
    let config = json!({
        "architecture": images::host_arch(),
        "os": "linux",
        "config": { "User": "app:app", "Cmd": ["sh"] },
    });
    TestImage::build(
        "named-user",
        ImageFormat::Oci(Compression::Gzip),
        config,
        &[images::busybox_layer().unwrap()],
    )
    .unwrap()
}

/// What one pushed image is expected to look like once pulled.
struct Case {
    repo: &'static str,
    image: TestImage,
    /// The digest the tag points at (the index's for an index).
    pushed_digest: String,
    /// Manifest bytes beyond the image's own (the index document).
    extra_manifest_bytes: u64,
    uid: Option<i64>,
    username: &'static str,
}

async fn push_cases(registry: &Registry) -> Vec<Case> {
    let mut cases = Vec::new();
    let singles: Vec<(&'static str, TestImage, Option<i64>, &'static str)> = vec![
        (
            "one-layer",
            images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap(),
            None,
            "",
        ),
        (
            "one-layer-docker",
            images::one_layer(ImageFormat::Docker).unwrap(),
            None,
            "",
        ),
        (
            "multi-gzip",
            images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap(),
            None,
            "",
        ),
        (
            "multi-zstd",
            images::multi_layer(ImageFormat::Oci(Compression::Zstd)).unwrap(),
            None,
            "",
        ),
        (
            "multi-tar",
            images::multi_layer(ImageFormat::Oci(Compression::None)).unwrap(),
            None,
            "",
        ),
        (
            "multi-docker",
            images::multi_layer(ImageFormat::Docker).unwrap(),
            None,
            "",
        ),
        ("config", images::config_image().unwrap(), Some(1000), ""),
        ("named-user", named_user_image(), None, "app"),
    ];
    for (repo, image, uid, username) in singles {
        let pushed_digest = image.push(registry, repo, "v1").await.unwrap();
        assert_eq!(pushed_digest, image.manifest_digest);
        cases.push(Case {
            repo,
            image,
            pushed_digest,
            extra_manifest_bytes: 0,
            uid,
            username,
        });
    }
    let index = images::index_image().unwrap();
    let pushed_digest = index.push(registry, "index", "v1").await.unwrap();
    cases.push(Case {
        repo: "index",
        image: index_entry(&index, "amd64").clone(),
        pushed_digest,
        extra_manifest_bytes: index.index_bytes.len() as u64,
        uid: None,
        username: "",
    });
    cases
}

/// Every test image pulled by tag, inspected, pulled again by digest, found by every kind
/// of filter, removed by ID or by digest (freeing its layers); then all of them at once,
/// listed, and removed by tag.
async fn every_image_by_tag_and_by_digest(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let cases = push_cases(&registry).await;
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;

    for (n, case) in cases.iter().enumerate() {
        let what = case.repo;
        let image = &case.image;
        let tag = tagged(&registry, case.repo, "v1");
        let by_digest = digested(&registry, case.repo, &case.pushed_digest);
        let before = blob_counts(&registry, image);

        let id = pull(&mut c, &tag, None).await.unwrap();
        assert_eq!(
            id, image.config_digest,
            "{what}: the ID is the config digest"
        );
        for (digest, n) in blob_counts(&registry, image) {
            assert_eq!(n, before[&digest] + 1, "{what}: GETs of blob {digest}");
        }
        let listing = env.store_listing();
        for chain in chain_ids(image) {
            assert!(
                listing.complete.contains(&chain),
                "{what}: layer {chain} not in {listing:?}"
            );
        }
        assert_eq!(
            listing.complete.len(),
            image.layers.len(),
            "{what}: {listing:?}"
        );
        assert!(listing.in_progress.is_empty(), "{what}: {listing:?}");
        assert!(
            env.spool_files().is_empty(),
            "{what}: {:?}",
            env.spool_files()
        );

        let (status_image, info) = status(&mut c, &tag, true).await;
        let got = status_image.unwrap_or_else(|| panic!("{what}: no status"));
        assert_eq!(got.id, id, "{what}");
        assert_eq!(got.repo_tags, vec![tag.clone()], "{what}");
        assert_eq!(got.repo_digests, vec![by_digest.clone()], "{what}");
        assert_eq!(
            got.size,
            image_size(image) + case.extra_manifest_bytes,
            "{what}: size"
        );
        assert_eq!(got.uid.map(|u| u.value), case.uid, "{what}: uid");
        assert_eq!(got.username, case.username, "{what}: username");
        assert!(!got.pinned, "{what}");
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config_bytes).unwrap();
        assert_eq!(info["imageSpec"], config, "{what}: verbose config");
        let layer_digests: Vec<&str> = info["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(layer_digests, want, "{what}: verbose layers");
        let (_, terse) = status(&mut c, &tag, false).await;
        assert!(terse.is_empty(), "{what}: info without verbose: {terse:?}");

        // Again by digest: the image is complete, so only the manifest is fetched.
        let counts = blob_counts(&registry, image);
        assert_eq!(pull(&mut c, &by_digest, None).await.unwrap(), id, "{what}");
        assert_eq!(
            blob_counts(&registry, image),
            counts,
            "{what}: refetched blobs"
        );
        let got = status(&mut c, &by_digest, false).await.0.unwrap();
        assert_eq!(
            (
                got.id.as_str(),
                got.repo_tags.clone(),
                got.repo_digests.clone()
            ),
            (id.as_str(), vec![tag.clone()], vec![by_digest.clone()]),
            "{what}: a pull by digest adds no tag"
        );

        let short_id = &id["sha256:".len().."sha256:".len() + 12];
        for filter in [tag.as_str(), by_digest.as_str(), id.as_str(), short_id] {
            assert_eq!(
                ids(&list(&mut c, Some(filter)).await),
                BTreeSet::from([id.clone()]),
                "{what}: filter {filter}"
            );
        }
        let unknown = tagged(&registry, case.repo, "nope");
        assert!(list(&mut c, Some(&unknown)).await.is_empty(), "{what}");

        // By ID, or by the digest reference (which removes the whole image too).
        let removal = if n % 2 == 0 { &id } else { &by_digest };
        remove(&mut c, removal).await.unwrap();
        assert!(status(&mut c, &tag, false).await.0.is_none(), "{what}");
        assert!(list(&mut c, None).await.is_empty(), "{what}");
        let listing = env.store_listing();
        assert!(
            listing.complete.is_empty() && listing.in_progress.is_empty(),
            "{what}: layers left after removal: {listing:?}"
        );
    }

    // All at once. Images with equal configs are one image (its ID is the config digest)
    // with every tag that names it, as in containerd.
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for case in &cases {
        let tag = tagged(&registry, case.repo, "v1");
        assert_eq!(
            pull(&mut c, &tag, None).await.unwrap(),
            case.image.config_digest
        );
        expected
            .entry(case.image.config_digest.clone())
            .or_default()
            .insert(tag);
    }
    let listed = list(&mut c, None).await;
    let got: BTreeMap<String, BTreeSet<String>> = listed
        .iter()
        .map(|i| (i.id.clone(), i.repo_tags.iter().cloned().collect()))
        .collect();
    assert_eq!(got, expected);
    let multi = &cases[2].image;
    let digests: BTreeSet<String> = listed
        .iter()
        .find(|i| i.id == multi.config_digest)
        .unwrap()
        .repo_digests
        .iter()
        .cloned()
        .collect();
    let want: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.image.config_digest == multi.config_digest)
        .map(|c| digested(&registry, c.repo, &c.pushed_digest))
        .collect();
    assert_eq!(digests, want, "repo digests of the multi-layer image");

    // Removing by tag untags while other tags remain, and removes with the last one.
    for case in &cases {
        remove(&mut c, &tagged(&registry, case.repo, "v1"))
            .await
            .unwrap();
    }
    assert!(list(&mut c, None).await.is_empty());
    let listing = env.store_listing();
    assert!(listing.complete.is_empty(), "{listing:?}");
}

/// The layers of a pulled image, mounted as a root filesystem by the layer store itself
/// (with the daemon stopped), hold exactly the files its layers describe.
async fn pulled_layers_hold_the_image_files(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::multi_layer(ImageFormat::Oci(Compression::Zstd)).unwrap();
    image.push(&registry, "multi", "1").await.unwrap();
    let mut env = Env::start(store, "").unwrap();
    let mut c = env.client().await;
    let id = pull(&mut c, &tagged(&registry, "multi", "1"), None)
        .await
        .unwrap();
    assert_eq!(id, image.config_digest);
    drop(c);
    env.daemon.stop().unwrap();

    let config = match store {
        Store::Overlay => layerfs::StoreConfig::Overlay {
            root: env.daemon.state_dir.join("overlay"),
        },
        Store::Zfs => layerfs::StoreConfig::Zfs {
            dataset: env.zfs_dataset.clone().unwrap(),
            mount_root: env.daemon.state_dir.join("zfs"),
        },
    };
    let layer_store = layerfs::open_store(&config).unwrap();
    let top =
        layerfs::Digest::parse(&format!("sha256:{}", chain_ids(&image).last().unwrap())).unwrap();
    let target = env.daemon.state_dir.join("check-rootfs");
    layer_store
        .create_rootfs("check", Some(&top), &target, &Default::default())
        .unwrap();
    let entries: Vec<&[images::TarEntry]> =
        image.layers.iter().map(|l| l.entries.as_slice()).collect();
    let expected = expected_tree(&entries).unwrap();
    let actual = read_tree(&target, false).unwrap();
    let result = ensure_same(&expected, &actual, &CompareOptions::default());
    layer_store.remove_rootfs("check").unwrap();
    result.unwrap();
}

/// One image under two tags: removing one tag keeps the image under the other; a tag
/// pulled again for another image moves to it.
async fn one_of_two_tags_removed_and_tags_moved(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "app", "a").await.unwrap();
    image.push(&registry, "app", "b").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;
    let (a, b) = (tagged(&registry, "app", "a"), tagged(&registry, "app", "b"));
    assert_eq!(pull(&mut c, &a, None).await.unwrap(), image.config_digest);
    assert_eq!(pull(&mut c, &b, None).await.unwrap(), image.config_digest);
    let listed = list(&mut c, None).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        sorted(listed[0].repo_tags.clone()),
        vec![a.clone(), b.clone()]
    );

    remove(&mut c, &a).await.unwrap();
    assert!(status(&mut c, &a, false).await.0.is_none(), "tag a removed");
    let kept = status(&mut c, &b, false)
        .await
        .0
        .expect("image kept under b");
    assert_eq!(kept.id, image.config_digest);
    assert_eq!(kept.repo_tags, vec![b.clone()]);
    assert_eq!(
        env.store_listing().complete,
        chain_ids(&image),
        "untagging frees no layer"
    );

    // Tag a now names another image: pulling it moves the tag there.
    let other = images::config_image().unwrap();
    other.push(&registry, "app", "a").await.unwrap();
    assert_eq!(pull(&mut c, &b, None).await.unwrap(), image.config_digest);
    assert_eq!(pull(&mut c, &a, None).await.unwrap(), other.config_digest);
    let by_id: BTreeMap<String, Vec<String>> = list(&mut c, None)
        .await
        .into_iter()
        .map(|i| (i.id, i.repo_tags))
        .collect();
    assert_eq!(
        by_id,
        BTreeMap::from([
            (image.config_digest.clone(), vec![b.clone()]),
            (other.config_digest.clone(), vec![a.clone()]),
        ])
    );

    remove(&mut c, &b).await.unwrap();
    assert_eq!(
        ids(&list(&mut c, None).await),
        BTreeSet::from([other.config_digest.clone()])
    );
    assert_eq!(env.store_listing().complete.len(), other.layers.len());
}

/// An index resolves to the image for this machine's platform (amd64 here); the other
/// platform's blobs are never fetched. An index without this platform is NotFound,
/// naming what it offers.
async fn platform_index_gives_the_amd64_image(store: Store) {
    assert_eq!(
        images::host_arch(),
        "amd64",
        "these tests expect an amd64 machine"
    );
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let index = images::index_image().unwrap();
    let index_digest = index.push(&registry, "multiarch", "1").await.unwrap();
    let amd64 = index_entry(&index, "amd64");
    let arm64 = index_entry(&index, "arm64");
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;

    let tag = tagged(&registry, "multiarch", "1");
    let id = pull(&mut c, &tag, None).await.unwrap();
    assert_eq!(id, amd64.config_digest);
    let got = status(&mut c, &tag, false).await.0.unwrap();
    assert_eq!(
        got.repo_digests,
        vec![digested(&registry, "multiarch", &index_digest)]
    );
    assert_eq!(got.size, index.index_bytes.len() as u64 + image_size(amd64));
    assert_eq!(env.store_listing().complete, sorted(chain_ids(amd64)));
    assert_eq!(blob_gets(&registry, &arm64.config_digest), 0);
    assert_eq!(blob_gets(&registry, &arm64.layers[1].digest), 0);
    // By the index digest too.
    let by_digest = digested(&registry, "multiarch", &index_digest);
    assert_eq!(pull(&mut c, &by_digest, None).await.unwrap(), id);

    let arm_only = TestIndex::assemble(
        "arm-only",
        index
            .images
            .iter()
            .filter(|(p, _)| p.architecture == "arm64")
            .cloned()
            .collect(),
    )
    .unwrap();
    arm_only.push(&registry, "armonly", "1").await.unwrap();
    let e = pull(&mut c, &tagged(&registry, "armonly", "1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("linux/amd64") && e.message().contains("linux/arm64/v8"),
        "{e:?}"
    );
}

/// `registry.example.test` resolves nowhere; its configured plain-HTTP mirror on 127.0.0.1
/// serves it, with the repository path kept, and the image keeps the name asked for.
async fn mirror_serves_a_name_that_resolves_nowhere(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    let digest = image.push(&registry, "lib/img", "1").await.unwrap();
    let env = Env::start(
        store,
        &format!(
            "[registries.\"registry.example.test\"]\nmirrors = [\"http://{}\"]\n",
            registry.addr()
        ),
    )
    .unwrap();
    let mut c = env.client().await;

    let name = "registry.example.test/lib/img:1";
    assert_eq!(pull(&mut c, name, None).await.unwrap(), image.config_digest);
    let listed = list(&mut c, None).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo_tags, vec![name.to_owned()]);
    assert_eq!(
        listed[0].repo_digests,
        vec![format!("registry.example.test/lib/img@{digest}")]
    );
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v2/lib/img/manifests/1"),
        "the mirror served the manifest under the same path"
    );
    assert_eq!(blob_gets(&registry, &image.layers[0].digest), 1);
    assert!(status(&mut c, name, false).await.0.is_some());
    // A name with no mirror and no DNS fails, naming the host.
    let e = pull(&mut c, "other.example.test/lib/img:1", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("other.example.test"), "{e:?}");
}

/// An htpasswd registry: without credentials, or with a wrong password, the pull fails as
/// Unauthenticated with a message about authentication; with username and password, or
/// the base64 `auth` field, it succeeds; so it does with credentials from the config file.
async fn basic_auth_needs_credentials(store: Store) {
    let registry = Registry::start(RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
    })
    .unwrap();
    let image = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "private/img", "1").await.unwrap();
    // Another name for the same registry, with credentials in the config file.
    let env = Env::start(
        store,
        &format!(
            "[registries.\"private.example.test\"]\nmirrors = [\"http://{}\"]\n\
             [registries.\"private.example.test\".credentials]\n\
             username = \"alice\"\npassword = \"s3cret\"\n",
            registry.addr()
        ),
    )
    .unwrap();
    let mut c = env.client().await;
    let name = tagged(&registry, "private/img", "1");

    let e = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains("authentication") && e.message().contains(&registry.addr()),
        "{e:?}"
    );
    assert!(e.message().contains("no credentials"), "{e:?}");
    let wrong = AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = pull(&mut c, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authentication"), "{e:?}");
    assert!(list(&mut c, None).await.is_empty());
    assert!(env.store_listing().complete.is_empty());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &name, Some(right)).await.unwrap(),
        image.config_digest
    );
    assert_eq!(env.store_listing().complete.len(), image.layers.len());
    remove(&mut c, &name).await.unwrap();
    assert!(env.store_listing().complete.is_empty());

    let encoded = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret"),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &name, Some(encoded)).await.unwrap(),
        image.config_digest
    );
    assert_eq!(
        ids(&list(&mut c, None).await),
        BTreeSet::from([image.config_digest.clone()])
    );
    for layer in &image.layers {
        assert_eq!(
            blob_gets(&registry, &layer.digest),
            2,
            "one GET per successful pull"
        );
    }

    // No credentials in the request: those of the config file are used.
    let configured = "private.example.test/private/img:1";
    assert_eq!(
        pull(&mut c, configured, None).await.unwrap(),
        image.config_digest
    );
    let got = status(&mut c, configured, false).await.0.unwrap();
    assert_eq!(
        sorted(got.repo_tags),
        vec![name.clone(), configured.to_owned()]
    );
}

/// Checks that a failed pull left nothing: no record, no work in progress, no spool file,
/// and none of `absent` among the complete layers.
async fn assert_no_trace(
    env: &Env,
    c: &mut e2e::cri_client::ImageClient,
    name: &str,
    absent: &[String],
) {
    assert!(
        list(c, None).await.is_empty(),
        "{name}: listed after a failed pull"
    );
    assert!(status(c, name, false).await.0.is_none(), "{name}");
    let listing = env.store_listing();
    assert!(listing.in_progress.is_empty(), "{name}: {listing:?}");
    for chain in absent {
        assert!(
            !listing.complete.contains(chain),
            "{name}: layer {chain} in {listing:?}"
        );
    }
    assert!(
        env.spool_files().is_empty(),
        "{name}: {:?}",
        env.spool_files()
    );
}

/// Blobs changed in the registry's storage after the push (same size, one byte flipped):
/// a gzip layer in the middle of the chain, an uncompressed layer, the config. Each pull
/// fails as DataLoss naming the blob, and leaves no trace; once the blob is repaired the
/// pull succeeds.
async fn altered_blobs_fail_with_digest_errors(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let gzip = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    gzip.push(&registry, "gzip", "1").await.unwrap();
    let tar = images::multi_layer(ImageFormat::Oci(Compression::None)).unwrap();
    tar.push(&registry, "tar", "1").await.unwrap();
    let config = images::config_image().unwrap();
    config.push(&registry, "config", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;

    // The second of four gzip layers: the layers above it depend on it.
    let name = tagged(&registry, "gzip", "1");
    let blob = registry.blob_path(&gzip.layers[1].digest).unwrap();
    let original = std::fs::read(&blob).unwrap();
    corrupt_middle(&blob).unwrap();
    let started = std::time::Instant::now();
    let e = pull(&mut c, &name, None).await.unwrap_err();
    // The layers above the bad one stop at once; none waits out the store's parent_wait.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(&gzip.layers[1].digest), "{e:?}");
    assert!(e.message().contains("digest"), "{e:?}");
    assert_no_trace(&env, &mut c, &name, &chain_ids(&gzip)[1..]).await;
    std::fs::write(&blob, &original).unwrap();
    assert_eq!(pull(&mut c, &name, None).await.unwrap(), gzip.config_digest);
    remove(&mut c, &name).await.unwrap();

    // An uncompressed layer still reads as a tar: its digest check catches it.
    let name = tagged(&registry, "tar", "1");
    let top = tar.layers.last().unwrap();
    corrupt_middle(&registry.blob_path(&top.digest).unwrap()).unwrap();
    let e = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(&top.digest), "{e:?}");
    assert!(e.message().contains("digest"), "{e:?}");
    assert_no_trace(&env, &mut c, &name, &chain_ids(&tar)[3..]).await;

    let name = tagged(&registry, "config", "1");
    corrupt_middle(&registry.blob_path(&config.config_digest).unwrap()).unwrap();
    let e = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(&config.config_digest), "{e:?}");
    assert_no_trace(&env, &mut c, &name, &[]).await;
}

/// Ten PullImage calls at once for one image: each blob is fetched once (and, as they
/// share one pull, the manifest too). Then five by tag and five by digest of another image
/// at once: two pulls, and still each blob fetched once.
async fn ten_concurrent_pulls_fetch_each_blob_once(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "conc", "1").await.unwrap();
    let other = images::config_image().unwrap();
    let other_digest = other.push(&registry, "conc2", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();

    let manifests_before = manifest_gets(&registry);
    let name = tagged(&registry, "conc", "1");
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut c = env.client().await;
        let name = name.clone();
        calls.push(tokio::spawn(async move { pull(&mut c, &name, None).await }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), image.config_digest);
    }
    for (digest, n) in blob_counts(&registry, &image) {
        assert_eq!(n, 1, "GETs of blob {digest}");
    }
    let manifests = manifest_gets(&registry) - manifests_before;
    eprintln!("ten identical pulls: {manifests} manifest GET(s)");
    assert!((1..=10).contains(&manifests), "{manifests}");

    let names = [
        tagged(&registry, "conc2", "1"),
        digested(&registry, "conc2", &other_digest),
    ];
    let mut calls = Vec::new();
    for i in 0..10 {
        let mut c = env.client().await;
        let name = names[i % 2].clone();
        calls.push(tokio::spawn(async move { pull(&mut c, &name, None).await }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), other.config_digest);
    }
    for layer in &other.layers {
        assert_eq!(
            blob_gets(&registry, &layer.digest),
            1,
            "GETs of layer {}",
            layer.digest
        );
    }
    assert_eq!(
        blob_gets(&registry, &other.config_digest),
        1,
        "GETs of the config"
    );
    let mut c = env.client().await;
    let got = status(&mut c, &names[0], false).await.0.unwrap();
    assert_eq!(got.repo_tags, vec![names[0].clone()]);
    assert_eq!(got.repo_digests, vec![names[1].clone()]);
}

/// A PullImage whose client deadline (`grpc-timeout`) passes first is answered with
/// DeadlineExceeded, as containerd and CRI-O answer and critest checks, not with the
/// Cancelled that tonic's own timeout gives. The registry here accepts connections and
/// never answers, so every pull outlives its deadline; the client is one that waits for the
/// server's answer instead of timing out itself. The daemon pulls normally afterwards.
async fn a_pull_past_its_deadline_is_deadline_exceeded(store: Store) {
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_addr = hanging.local_addr().unwrap().to_string();
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "ok", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;
    let mut direct = e2e::cri_client::direct_image_client(&env.daemon.socket)
        .await
        .unwrap();

    for (i, timeout) in [1, 1, 1, 5, 50, 200].into_iter().enumerate() {
        let mut req = tonic::Request::new(k8s_cri::v1::PullImageRequest {
            image: spec(&format!("{hanging_addr}/never:{i}")),
            auth: None,
            sandbox_config: None,
        });
        req.set_timeout(Duration::from_millis(timeout));
        let e = direct.pull_image(req).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{timeout} ms: {e:?}");
        assert!(e.message().contains("PullImage"), "{e:?}");
    }
    assert_eq!(
        pull(&mut c, &tagged(&registry, "ok", "1"), None)
            .await
            .unwrap(),
        image.config_digest
    );
    drop(hanging);
}

/// Unknown images and tags are NotFound, an unreachable registry is Unavailable naming
/// the host, bad references are InvalidArgument; removing an unknown image succeeds and
/// the status of an unknown image is empty.
async fn errors_are_classified(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "known", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;

    for name in [
        tagged(&registry, "unknown", "1"),
        tagged(&registry, "known", "2"),
        digested(&registry, "known", &format!("sha256:{}", "0".repeat(64))),
    ] {
        let e = pull(&mut c, &name, None).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{name}: {e:?}");
        assert!(e.message().contains(&registry.addr()), "{name}: {e:?}");
    }

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let e = pull(&mut c, &format!("{addr}/x:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&addr), "{e:?}");

    for bad in [
        "Busybox:1",
        "a b",
        "x@sha256:abc",
        "host//x",
        "x:tag:more",
        "",
    ] {
        let e = pull(&mut c, bad, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = pull(&mut c, "Busybox:1", None).await.unwrap_err();
    assert!(e.message().contains("lowercase"), "{e:?}");
    let bad_auth = AuthConfig {
        auth: "!!!".into(),
        ..Default::default()
    };
    let e = pull(&mut c, &tagged(&registry, "known", "1"), Some(bad_auth))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    remove(&mut c, &tagged(&registry, "never", "pulled"))
        .await
        .unwrap();
    remove(&mut c, &format!("sha256:{}", "1".repeat(64)))
        .await
        .unwrap();
    assert!(status(&mut c, "never/pulled:1", false).await.0.is_none());
    assert!(list(&mut c, None).await.is_empty());
    assert!(env.store_listing().complete.is_empty());
}

/// `one-layer` and `multi-layer` share their base layer: it is fetched and stored once,
/// and survives the removal of either image until the other goes too.
async fn shared_layers_are_stored_once(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let one = images::one_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    let multi = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    assert_eq!(one.layers[0].digest, multi.layers[0].digest);
    one.push(&registry, "one", "1").await.unwrap();
    multi.push(&registry, "multi", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;
    let (one_name, multi_name) = (
        tagged(&registry, "one", "1"),
        tagged(&registry, "multi", "1"),
    );

    for (first, second, keep) in [
        (&one_name, &multi_name, &multi),
        (&multi_name, &one_name, &one),
    ] {
        pull(&mut c, first, None).await.unwrap();
        pull(&mut c, second, None).await.unwrap();
        let base = &chain_ids(&one)[0];
        assert_eq!(
            env.store_listing().complete,
            sorted(chain_ids(&multi)),
            "base stored once"
        );
        assert!(env.store_listing().complete.contains(base));
        remove(&mut c, first).await.unwrap();
        assert_eq!(
            env.store_listing().complete,
            sorted(chain_ids(keep)),
            "removed {first}"
        );
        assert!(status(&mut c, second, false).await.0.is_some());
        remove(&mut c, second).await.unwrap();
        assert!(env.store_listing().complete.is_empty());
    }
    // Fetched once per round: never twice for the two images of one round.
    assert_eq!(blob_gets(&registry, &one.layers[0].digest), 2);
}

/// Records survive SIGTERM and kill -9; a pull after the restart finds the layers present.
async fn metadata_survives_restarts(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let multi = images::multi_layer(ImageFormat::Docker).unwrap();
    multi.push(&registry, "multi", "1").await.unwrap();
    multi.push(&registry, "multi", "2").await.unwrap();
    let config = images::config_image().unwrap();
    config.push(&registry, "config", "1").await.unwrap();
    let mut env = Env::start(store, "").unwrap();
    let mut c = env.client().await;
    for name in ["multi:1", "multi:2", "config:1"] {
        pull(&mut c, &format!("{}/{name}", registry.addr()), None)
            .await
            .unwrap();
    }
    let by_id = |images: Vec<Image>| -> BTreeMap<String, Image> {
        images.into_iter().map(|i| (i.id.clone(), i)).collect()
    };
    let before = by_id(list(&mut c, None).await);
    let (_, info_before) = status(&mut c, &tagged(&registry, "config", "1"), true).await;
    let layers_before = env.store_listing();
    assert_eq!(before.len(), 2);
    drop(c);

    env.daemon.restart().unwrap();
    let mut c = env.client().await;
    assert_eq!(by_id(list(&mut c, None).await), before, "after SIGTERM");
    let (_, info_after) = status(&mut c, &tagged(&registry, "config", "1"), true).await;
    assert_eq!(info_after, info_before);
    assert_eq!(env.store_listing(), layers_before);
    drop(c);

    env.daemon.kill9().unwrap();
    env.daemon.restart().unwrap();
    let mut c = env.client().await;
    assert_eq!(by_id(list(&mut c, None).await), before, "after kill -9");
    assert_eq!(env.store_listing(), layers_before);

    let counts = blob_counts(&registry, &multi);
    pull(&mut c, &tagged(&registry, "multi", "1"), None)
        .await
        .unwrap();
    assert_eq!(
        blob_counts(&registry, &multi),
        counts,
        "nothing fetched again"
    );
    remove(&mut c, &multi.config_digest).await.unwrap();
    remove(&mut c, &config.config_digest).await.unwrap();
    assert!(env.store_listing().complete.is_empty());
}

/// ImageFsInfo: the store's mountpoint, and bytes and inodes that grow with a pull and
/// shrink back with the removal.
async fn image_fs_info_reports_usage(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::multi_layer(ImageFormat::Oci(Compression::Gzip)).unwrap();
    image.push(&registry, "multi", "1").await.unwrap();
    let env = Env::start(store, "").unwrap();
    let mut c = env.client().await;

    let usage = |r: &k8s_cri::v1::ImageFsInfoResponse| {
        assert_eq!(r.image_filesystems.len(), 1, "{r:?}");
        let fs = &r.image_filesystems[0];
        (
            fs.fs_id.as_ref().unwrap().mountpoint.clone(),
            fs.used_bytes.unwrap().value,
            fs.inodes_used.unwrap().value,
        )
    };
    let (mountpoint, bytes0, inodes0) = usage(&fs_info(&mut c).await);
    let expected_mountpoint = match store {
        Store::Overlay => env.daemon.state_dir.join("overlay"),
        Store::Zfs => env.daemon.state_dir.join("zfs"),
    };
    assert_eq!(std::path::Path::new(&mountpoint), expected_mountpoint);
    assert!(expected_mountpoint.is_dir());

    pull(&mut c, &tagged(&registry, "multi", "1"), None)
        .await
        .unwrap();
    let (_, bytes1, inodes1) = usage(&fs_info(&mut c).await);
    let busybox_size = std::fs::metadata(images::BUSYBOX).unwrap().len();
    assert!(
        bytes1 >= bytes0 + busybox_size / 2,
        "bytes {bytes0} -> {bytes1} for an image holding a {busybox_size}-byte binary"
    );
    // Every applet is a symlink of the base layer: several hundred inodes.
    let base_entries = image.layers[0].entries.len() as u64;
    assert!(
        inodes1 >= inodes0 + base_entries / 2,
        "inodes {inodes0} -> {inodes1} for {base_entries} entries in the base layer"
    );

    remove(&mut c, &image.config_digest).await.unwrap();
    // zfs-fuse may update `used` a moment after a destroy.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, bytes2, inodes2) = usage(&fs_info(&mut c).await);
        if bytes2 < bytes1 && inodes2 < inodes1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage did not drop after removal: ({bytes2}, {inodes2}), after the pull ({bytes1}, {inodes1})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With a single download slot, a layer never takes the slot its parent needs (the
/// overlay store makes a child wait for its parent's files; a child holding the only slot
/// would wait for a parent that cannot start).
async fn one_download_slot_still_pulls(store: Store) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let image = images::multi_layer(ImageFormat::Oci(Compression::Zstd)).unwrap();
    image.push(&registry, "multi", "1").await.unwrap();
    let env = Env::start(store, "[images]\nmax_concurrent_downloads = 1\n").unwrap();
    let mut c = env.client().await;
    let id = tokio::time::timeout(
        Duration::from_secs(20),
        pull(&mut c, &tagged(&registry, "multi", "1"), None),
    )
    .await
    .expect("the pull is stuck")
    .unwrap();
    assert_eq!(id, image.config_digest);
    assert_eq!(env.store_listing().complete, sorted(chain_ids(&image)));
}
