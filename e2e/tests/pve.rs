//! The `pve` pod host against real Proxmox VE code (`../shared/pve-harness`: pmxcfs, the HTTPS
//! API with token auth, PVE's CT config parser, CT start through PVE's LXC hooks).
//!
//! The pod and container tests of `pods.rs` and `pods_cri.rs` run here with the pve driver
//! (`<test>::pve`); the rest is what only Proxmox has: what the API and the config files
//! show, kill -9 of the daemon while Proxmox creates or starts a CT, the API going away, and
//! a token without the privileges. Each test brings the harness up if it is down (and the
//! last one takes it down again), and uses its own vmid range.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

mod pod_tests;

use std::time::Duration;

use e2e::pods::{
    PodEnv, PodEnvOptions, Setup, container_config, eventually, exec_ok, pod_status,
    wait_container_state,
};
use e2e::pve::PveHarness;
use k8s_cri::v1::{
    ContainerState, ListPodSandboxRequest, PodSandboxState, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest,
};
use pod_tests::host_namespaces::*;
use pod_tests::pods::*;
use pod_tests::pods_cri::*;
use pod_tests::user_namespaces::*;
use tonic::Code;

e2e::on_pve!(
    two_containers_share_the_pod_network,
    logs_are_cri_format_and_reopen_starts_a_new_file,
    exit_codes_and_reasons,
    exec_sync_output_exit_code_and_timeout,
    volumes_are_visible_and_readonly_is_honoured,
    host_network_pods_share_the_host_network,
    stop_sends_the_image_stop_signal_then_sigkill,
    port_mappings_reach_the_pod_through_portmap,
    runtime_default_seccomp_is_enforced_in_the_process_and_in_exec,
    warm_pool_adopts_and_refills,
    bad_requests_get_their_status_and_leave_the_rest_running,
    ids_names_lists_and_idempotent_removal,
    pods_start_and_go_concurrently,
    stopping_a_pod_with_exited_and_created_containers_is_quiet,
    verbose_container_status_gives_the_host_pid,
    a_host_namespace_pod_sees_the_host_and_ends_only_its_own,
    a_crashed_host_pid_pod_leaves_no_process_behind,
    containers_cannot_have_host_namespaces_their_pod_lacks,
    a_privileged_node_agent_with_a_bidirectional_volume,
    a_host_pid_pod_survives_a_daemon_restart,
    a_user_namespace_pod_owns_its_image_and_volumes,
    bad_user_namespaces_are_refused,
);

const RUNNING: Duration = Duration::from_secs(30);

fn harness(env: &PodEnv) -> &PveHarness {
    env.pve.as_ref().expect("a pve env")
}

/// The vmid of the CT whose description names `sandbox`.
async fn vmid_of(env: &PodEnv, sandbox: &str) -> u32 {
    let h = harness(env);
    let api = h.api().unwrap();
    for ct in h.our_cts().await.unwrap() {
        let cfg = api.ct_config(ct.vmid).await.unwrap();
        let descr = cfg
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        if descr.contains(&format!("sandbox: {sandbox}")) {
            return ct.vmid;
        }
    }
    panic!("no CT in the test's range describes sandbox {sandbox}");
}

/// Every CT config of the test's range, through Proxmox's strict parser.
async fn parse_all(env: &PodEnv) -> Vec<(u32, serde_json::Value)> {
    let h = harness(env);
    let mut out = Vec::new();
    for ct in h.our_cts().await.unwrap() {
        out.push((ct.vmid, h.parse_conf(ct.vmid).unwrap()));
    }
    out
}

/// Proxmox answers numbers as JSON numbers or strings.
fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn raw_value<'a>(conf: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    conf["lxc"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|kv| kv[0] == key)
        .filter_map(|kv| kv[1].as_str())
        .collect()
}

/// What Proxmox shows for pod CTs: tags, description, config keys, and configs its own parser
/// takes in strict mode; the pod's limits as Proxmox limits; a vmid another guest holds is
/// skipped, and that guest is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cts_show_in_proxmox_and_every_config_parses_strictly() {
    let env = PodEnv::start(Setup::pve()).await.unwrap();
    let h = harness(&env);
    let api = h.api().unwrap();
    let (first, _) = h.vmid_range();
    // Another guest (not pvecri's) on the first vmid of the range.
    let params = vec![
        ("vmid", first.to_string()),
        (
            "ostemplate",
            h.get("PVE_HARNESS_TEMPLATE").unwrap().to_string(),
        ),
        (
            "rootfs",
            format!("{}:0", h.get("PVE_HARNESS_STORAGE").unwrap()),
        ),
        ("ostype", "unmanaged".to_string()),
        ("hostname", "not-a-pod".to_string()),
        ("tags", "someone-else".to_string()),
    ];
    let upid = api.create_ct(&params).await.unwrap();
    api.wait_task(&upid, Duration::from_secs(60)).await.unwrap();

    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut pod = env.pod_config("shown");
    pod.metadata.as_mut().unwrap().namespace = "kube-system".into();
    pod.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
        resources: Some(k8s_cri::v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 150_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 300 << 20,
            ..Default::default()
        }),
        sysctls: std::collections::HashMap::from([
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            (
                "net.ipv4.ping_group_range".to_string(),
                "0 2147483647".to_string(),
            ),
        ]),
        ..Default::default()
    });
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let uid = pod.metadata.as_ref().unwrap().uid.clone();
    let vmid = vmid_of(&env, &pod_id).await;
    assert_ne!(vmid, first, "the vmid of another guest was taken");

    // The API's list: name, tags; the config: description, type, limits.
    let listed = api.list_cts().await.unwrap();
    let ct = listed.iter().find(|c| c.vmid == vmid).unwrap();
    assert_eq!(ct.name.as_deref(), Some("shown"));
    assert_eq!(ct.tags, ["kube-system", "pvecri"]);
    assert!(ct.running());
    let cfg = api.ct_config(vmid).await.unwrap();
    let descr = cfg["description"].as_str().unwrap();
    for want in [
        "pvecri pod kube-system/shown\n".to_string(),
        "namespace: kube-system\n".into(),
        "pod: shown\n".into(),
        format!("uid: {uid}\n"),
        format!("sandbox: {pod_id}\n"),
    ] {
        assert!(descr.contains(&want), "{want:?} not in {descr:?}");
    }
    assert_eq!(cfg["ostype"], "unmanaged");
    assert_eq!(cfg["arch"], "amd64");
    assert_eq!(num(&cfg["memory"]), 300.0);
    assert_eq!(num(&cfg["swap"]), 0.0);
    assert_eq!(num(&cfg["cpulimit"]), 1.5);
    assert_eq!(num(&cfg["cpuunits"]), 512.0);
    assert!(cfg.get("net0").is_none(), "no net0: CNI does the network");

    // Every config in the range parses with Proxmox's parser in strict mode; ours carry the
    // raw keys, the other guest's none.
    let parsed = parse_all(&env).await;
    assert_eq!(parsed.len(), 2);
    for (id, conf) in &parsed {
        if *id == first {
            assert!(conf.get("lxc").is_none(), "{conf}");
            continue;
        }
        assert_eq!(
            raw_value(conf, "lxc.init.cmd"),
            ["/sbin/podinit --pod-dir /pvecri"]
        );
        let entries = raw_value(conf, "lxc.mount.entry");
        assert!(
            entries[0].starts_with(&env.pod_dir(&pod_id).display().to_string()),
            "{entries:?}"
        );
        assert_eq!(raw_value(conf, "lxc.net.0.type"), ["empty"]);
    }
    // The LXC config Proxmox generates from it ends with our keys (they win).
    let lxc = h.lxc_conf(vmid).unwrap();
    let init_at = lxc.find("lxc.init.cmd = /sbin/podinit").unwrap();
    assert!(lxc.find("lxc.include").unwrap() < init_at, "{lxc}");

    // The sysctls reached the pod's namespaces (written after start: Proxmox takes no
    // lxc.sysctl.net.*).
    let ctr = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("c", &env.images.one_layer, &["sleep", "3600"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &ctr, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    assert_eq!(
        exec_ok(
            &mut rt,
            &ctr,
            "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ping_group_range"
        )
        .await
        .unwrap(),
        "1\n0\t2147483647\n"
    );

    // Removing the pod removes its CT and nothing else.
    e2e::cri_client::remove_all_pods(&env.daemon.socket)
        .await
        .unwrap();
    let left: Vec<u32> = h.our_cts().await.unwrap().iter().map(|c| c.vmid).collect();
    assert_eq!(left, [first], "only the other guest stays");
    let upid = api.destroy_ct(first).await.unwrap();
    api.wait_task(&upid, Duration::from_secs(60)).await.unwrap();
}

/// A pod with its own user namespace is an unprivileged CT with Proxmox's idmap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_pods_are_unprivileged_cts() {
    let env = PodEnv::start(Setup::pve()).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut pod = env.pod_config("userns");
    pod.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
        security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
            namespace_options: Some(k8s_cri::v1::NamespaceOption {
                userns_options: Some(k8s_cri::v1::UserNamespace {
                    mode: k8s_cri::v1::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod_id = match env.run_pod(&mut rt, &pod).await {
        Ok(id) => id,
        Err(e) => panic!("{e:#}"),
    };
    let h = harness(&env);
    let vmid = vmid_of(&env, &pod_id).await;
    let cfg = h.api().unwrap().ct_config(vmid).await.unwrap();
    assert_eq!(num(&cfg["unprivileged"]), 1.0, "{cfg:?}");
    h.parse_conf(vmid).unwrap();
    let lxc = h.lxc_conf(vmid).unwrap();
    assert!(lxc.contains("lxc.idmap = u 0 100000 65536"), "{lxc}");
    assert_eq!(
        pod_status(&mut rt, &pod_id).await.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    // podinit runs as the CT's root, host uid 100000.
    let init = harness(&env)
        .api()
        .unwrap()
        .ct_status(vmid)
        .await
        .unwrap()
        .pid
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
}

/// Kills the daemon the moment `ready` says so, restarts it, and checks that reconciliation
/// leaves no CT of the half-made pod and that pods run again.
async fn kill_during(env: &mut PodEnv, what: &str, ready: impl AsyncFn(&PodEnv) -> bool) {
    let mut rt = env.rt().await.unwrap();
    let config = env.pod_config(what);
    let run = tokio::spawn(async move {
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready(env).await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the moment to kill never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.daemon.kill9().unwrap();
    let _ = run.await;
    eprintln!(
        "{what}: daemon killed with CTs {:?}",
        harness(env).our_cts().await.unwrap()
    );
    env.daemon.restart().unwrap();
    let h = harness(env);
    // Proxmox's task may still be running; reconciliation waits for it and removes the CT.
    let cts = eventually(
        &format!("{what}: no CT left"),
        Duration::from_secs(120),
        || async {
            let cts = h.our_cts().await?;
            Ok(cts.is_empty().then_some(cts))
        },
    )
    .await;
    if cts.is_err() {
        panic!(
            "{what}: CTs left after the restart: {:?}\n{}",
            h.our_cts().await.unwrap(),
            env.daemon.log()
        );
    }
    let mut rt = env.rt().await.unwrap();
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{what}: {pods:?}");
    let records = std::fs::read_dir(env.daemon.state_dir.join("pve/cts"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "{what}: records left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_create_and_start_leaves_no_ct_behind() {
    let mut env = PodEnv::start(Setup::pve()).await.unwrap();
    // During create: the config exists (`lock: create`), the task runs.
    kill_during(&mut env, "during-create", async |env: &PodEnv| {
        let (first, last) = harness(env).vmid_range();
        (first..=last).any(|v| {
            std::fs::read_to_string(harness(env).conf_path(v).unwrap())
                .is_ok_and(|t| t.contains("lock: create"))
        })
    })
    .await;
    // During start: Proxmox's start task asked systemd (the harness's shim) for the CT.
    let shim_log = format!(
        "/proc/{}/root/run/pve/systemctl-shim.log",
        harness(&env).ns_pid().unwrap()
    );
    let seen = std::fs::read_to_string(&shim_log)
        .unwrap_or_default()
        .lines()
        .count();
    kill_during(&mut env, "during-start", async move |_env: &PodEnv| {
        std::fs::read_to_string(&shim_log)
            .unwrap_or_default()
            .lines()
            .skip(seen)
            .any(|l| l.contains("start pve-container@"))
    })
    .await;
    // And the daemon runs pods again.
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("after");
    let id = env.run_pod(&mut rt, &pod).await.unwrap();
    assert_eq!(
        pod_status(&mut rt, &id).await.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
}

fn runtime_ready(status: &k8s_cri::v1::StatusResponse) -> (bool, String) {
    let c = status
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    (c.status, c.message.clone())
}

/// The API going away: RuntimeReady false with the reason, RunPodSandbox Unavailable; when it
/// is back, everything works again and the running pod never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_is_unavailable_and_recovers() {
    let h = PveHarness::acquire().unwrap();
    let upstream: std::net::SocketAddr = h
        .api_base()
        .unwrap()
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    drop(h);
    let proxy = e2e::proxy::FaultProxy::start(upstream).unwrap();
    let listen = proxy.addr();
    let env = PodEnv::start_with(
        Setup::pve(),
        PodEnvOptions {
            pve_api_url: Some(format!("https://{listen}/api2/json")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("before");
    let before = env.run_pod(&mut rt, &pod).await.unwrap();
    let ctr = env
        .run_container(
            &mut rt,
            &before,
            &pod,
            container_config("c", &env.images.one_layer, &["sleep", "3600"]),
        )
        .await
        .unwrap();

    drop(proxy); // the API is gone: connections are refused
    let (ready, why) = eventually("RuntimeReady false", Duration::from_secs(30), || {
        let mut rt = rt.clone();
        async move {
            let s = rt
                .status(StatusRequest { verbose: false })
                .await?
                .into_inner();
            let (ready, why) = runtime_ready(&s);
            Ok((!ready).then_some((ready, why)))
        }
    })
    .await
    .unwrap();
    assert!(!ready);
    assert!(why.contains("unreachable"), "{why}");
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("during")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("unreachable"), "{}", err.message());
    // The pod's containers do not need the API.
    assert_eq!(
        exec_ok(&mut rt, &ctr, "echo alive").await.unwrap(),
        "alive\n"
    );

    let _proxy = e2e::proxy::FaultProxy::start_on(&listen, upstream).unwrap();
    eventually("RuntimeReady true again", Duration::from_secs(30), || {
        let mut rt = rt.clone();
        async move {
            let s = rt
                .status(StatusRequest { verbose: false })
                .await?
                .into_inner();
            Ok(runtime_ready(&s).0.then_some(()))
        }
    })
    .await
    .unwrap();
    let after = env
        .run_pod(&mut rt, &env.pod_config("after"))
        .await
        .unwrap();
    for id in [&before, &after] {
        assert_eq!(
            pod_status(&mut rt, id).await.unwrap().state,
            PodSandboxState::SandboxReady as i32
        );
    }
    // Nothing half made by the failed RunPodSandbox.
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_eq!(harness(&env).our_cts().await.unwrap().len(), 2);
}

/// A token that may not create CTs (or is wrong) gets an error that says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_privileges_gets_a_clear_error() {
    let h = PveHarness::acquire().unwrap();
    let name = format!("t{:08x}", rand::random::<u32>());
    // PVEAuditor: may look, not create.
    let auditor = h
        .add_token(&format!("aud{name}"), "pvecri", &[], &[("/", "PVEAuditor")])
        .unwrap();
    drop(h);
    let env = PodEnv::start_with(
        Setup::pve(),
        PodEnvOptions {
            pve_token: Some(auditor.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut rt = env.rt().await.unwrap();
    let s = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(runtime_ready(&s).0, "the API answers: {s:?}");
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("denied")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let msg = err.message();
    let token_id = auditor.rsplit_once('=').unwrap().0;
    assert!(
        msg.contains(token_id)
            && msg.contains("lacks a privilege")
            && msg.contains("VM.Allocate on /vms/"),
        "{msg}"
    );
    assert!(
        !msg.contains(auditor.rsplit_once('=').unwrap().1),
        "the secret leaked: {msg}"
    );
    assert!(
        !env.daemon
            .log()
            .contains(auditor.rsplit_once('=').unwrap().1),
        "the secret is in the log"
    );
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    drop(env);

    // A wrong secret: not ready, with the reason; RunPodSandbox Unauthenticated.
    let wrong = format!("{}=00000000-0000-0000-0000-000000000000", token_id);
    let env = PodEnv::start_with(
        Setup::pve(),
        PodEnvOptions {
            pve_token: Some(wrong),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut rt = env.rt().await.unwrap();
    let s = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let (ready, why) = runtime_ready(&s);
    assert!(!ready && why.contains("rejected the API token"), "{why}");
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(env.pod_config("wrong")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

/// A CT removed behind pvecri's back is reported, not made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ct_removed_in_proxmox_is_reported_not_resurrected() {
    let env = PodEnv::start(Setup::pve()).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("gone");
    let id = env.run_pod(&mut rt, &pod).await.unwrap();
    let vmid = vmid_of(&env, &id).await;
    let api = harness(&env).api().unwrap();
    let upid = api.destroy_ct(vmid).await.unwrap();
    api.wait_task(&upid, Duration::from_secs(60)).await.unwrap();
    eventually("the pod is NotReady", Duration::from_secs(10), || {
        let mut rt = rt.clone();
        let id = id.clone();
        async move {
            let st = pod_status(&mut rt, &id).await?.state;
            Ok((st == PodSandboxState::SandboxNotready as i32).then_some(()))
        }
    })
    .await
    .unwrap();
    assert!(
        harness(&env).our_cts().await.unwrap().is_empty(),
        "the CT came back"
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
}

/// The privileges docs/proxmox.md gives pvecri's token, on the paths it gives them, and no
/// more: the whole pod lifecycle works with them.
pub const VM_PRIVILEGES: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Options",
];
pub const STORAGE_PRIVILEGES: &[&str] = &[
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_least_privilege_token_runs_pods() {
    let h = PveHarness::acquire().unwrap();
    let storage = h.get("PVE_HARNESS_STORAGE").unwrap().to_string();
    let name = format!("k8s{:08x}", rand::random::<u32>());
    let token = h
        .add_token(
            &name,
            "pvecri",
            &[
                ("PVECRIVM", VM_PRIVILEGES),
                ("PVECRIStorage", STORAGE_PRIVILEGES),
            ],
            &[
                ("/vms", "PVECRIVM"),
                (&format!("/storage/{storage}"), "PVECRIStorage"),
            ],
        )
        .unwrap();
    drop(h);
    let env = PodEnv::start_with(
        Setup::pve(),
        PodEnvOptions {
            pve_token: Some(token),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("least");
    let id = env.run_pod(&mut rt, &pod).await.unwrap();
    let ctr = env
        .run_container(
            &mut rt,
            &id,
            &pod,
            container_config("c", &env.images.one_layer, &["sleep", "3600"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &ctr, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    e2e::cri_client::remove_all_pods(&env.daemon.socket)
        .await
        .unwrap();
    assert!(harness(&env).our_cts().await.unwrap().is_empty());
}
