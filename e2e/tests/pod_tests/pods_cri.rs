//! The bodies of the CRI semantics tests: what the kubelet relies on, and bad requests, each
//! getting the right gRPC status and leaving everything else running. `tests/pods_cri.rs`
//! runs them with the lxc driver, `tests/pve.rs` with the pve driver.

use std::collections::HashMap;
use std::time::Duration;

use e2e::pods::{
    PodEnv, Setup, container_config, container_status, exec, exec_ok, pod_ip, wait_container_state,
};
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest,
    CreateContainerRequest, ListContainersRequest, ListPodSandboxRequest, Mount, PodSandboxFilter,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use tonic::Code;

const RUNNING: Duration = Duration::from_secs(20);

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn anyhow_code<T: std::fmt::Debug>(r: anyhow::Result<T>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .downcast_ref::<tonic::Status>()
            .unwrap_or_else(|| panic!("not a gRPC status: {e:#}"))
            .code(),
    }
}

fn ctr_dirs(env: &PodEnv, pod_id: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.pod_dir(pod_id).join("ctrs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub async fn bad_requests_get_their_status_and_leave_the_rest_running(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    // What must keep running throughout.
    let pod = env.pod_config("steady");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let cfg = container_config("sleeper", &env.images.one_layer, &["sleep", "3600"]);
    let sleeper = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &sleeper, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let unknown = "0".repeat(64);

    // An unknown pod.
    let cfg = container_config("x", &env.images.one_layer, &["true"]);
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &unknown, &pod, cfg).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: unknown.clone(),
                verbose: false
            })
            .await
        ),
        Code::NotFound
    );
    // Unknown containers.
    assert_eq!(
        code(
            rt.container_status(ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            rt.start_container(StartContainerRequest {
                container_id: unknown.clone()
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(exec(&mut rt, &unknown, &["true"], 5).await),
        Code::NotFound
    );

    // An image that was never pulled.
    let cfg = container_config("nopull", &env.images.missing, &["true"]);
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await),
        Code::NotFound
    );
    // A mount source that cannot exist (below a regular file).
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut cfg = container_config("badmount", &env.images.one_layer, &["true"]);
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: format!("{}/sub", file.path().display()),
        ..Default::default()
    }];
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await),
        Code::InvalidArgument
    );
    // A relative container path.
    let mut cfg = container_config("relmount", &env.images.one_layer, &["true"]);
    cfg.mounts = vec![Mount {
        container_path: "data".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await),
        Code::InvalidArgument
    );
    // A command the image does not have fails at start, not at create.
    let cfg = container_config("nocmd", &env.images.one_layer, &["/nope"]);
    let nocmd = env
        .create_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    assert_eq!(
        code(
            rt.start_container(StartContainerRequest {
                container_id: nocmd.clone()
            })
            .await
        ),
        Code::Unknown
    );
    let st = container_status(&mut rt, &nocmd).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_ne!(st.exit_code, 0);
    assert!(st.message.contains("/nope"), "{st:?}");
    // A duplicate name (and attempt) in the pod.
    let cfg = container_config("sleeper", &env.images.one_layer, &["true"]);
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await),
        Code::AlreadyExists
    );
    // A duplicate pod.
    assert_eq!(
        anyhow_code(env.run_pod(&mut rt, &pod).await),
        Code::AlreadyExists
    );
    // No config at all.
    assert_eq!(
        code(
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: None,
                sandbox_config: None
            })
            .await
        ),
        Code::InvalidArgument
    );
    // An unknown runtime handler.
    let other = env.pod_config("handler");
    assert_eq!(
        code(
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(other),
                runtime_handler: "kata".into()
            })
            .await
        ),
        Code::InvalidArgument
    );

    // A container in a stopped pod.
    let stopped = env.pod_config("stopped");
    let stopped_id = env.run_pod(&mut rt, &stopped).await.unwrap();
    let cfg = container_config("early", &env.images.one_layer, &["sleep", "3600"]);
    let early = env
        .create_container(&mut rt, &stopped_id, &stopped, cfg)
        .await
        .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: stopped_id.clone(),
    })
    .await
    .unwrap();
    let cfg = container_config("late", &env.images.one_layer, &["true"]);
    assert_eq!(
        anyhow_code(
            env.create_container(&mut rt, &stopped_id, &stopped, cfg)
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            rt.start_container(StartContainerRequest {
                container_id: early.clone()
            })
            .await
        ),
        Code::FailedPrecondition
    );

    // Everything else still runs, and the failed creates left nothing behind.
    let st = container_status(&mut rt, &sleeper).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(exec_ok(&mut rt, &sleeper, "echo ok").await.unwrap(), "ok\n");
    let mut expected = vec![sleeper.clone(), nocmd.clone()];
    expected.sort();
    assert_eq!(ctr_dirs(&env, &pod_id), expected);
    let listed = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let status = e2e::pods::pod_status(&mut rt, &pod_id).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
}

pub async fn ids_names_lists_and_idempotent_removal(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let alpha = env.pod_config("alpha");
    let beta = env.pod_config("beta");
    let alpha_id = env.run_pod(&mut rt, &alpha).await.unwrap();
    let beta_id = env.run_pod(&mut rt, &beta).await.unwrap();
    for id in [&alpha_id, &beta_id] {
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    // Same metadata again: AlreadyExists; the next attempt is a new sandbox.
    assert_eq!(
        code(
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(alpha.clone()),
                runtime_handler: String::new()
            })
            .await
            .map(|r| r.into_inner())
        ),
        Code::AlreadyExists
    );
    let mut alpha1 = alpha.clone();
    alpha1.metadata.as_mut().unwrap().attempt = 1;
    let alpha1_id = env.run_pod(&mut rt, &alpha1).await.unwrap();

    // A unique prefix finds a pod; PodSandboxStatus has its IP, metadata, times, labels.
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: alpha_id[..12].to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.info.contains_key("info"));
    let status = status.status.unwrap();
    assert_eq!(status.id, alpha_id);
    assert_eq!(status.metadata, alpha.metadata);
    assert_eq!(status.labels, alpha.labels);
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        status.created_at > now - 120_000_000_000 && status.created_at <= now,
        "created_at {} is not nanoseconds near {now}",
        status.created_at
    );
    let ips: Vec<String> = {
        let mut v = vec![];
        for id in [&alpha_id, &beta_id, &alpha1_id] {
            v.push(pod_ip(&mut rt, id).await.unwrap());
        }
        v
    };
    for ip in &ips {
        assert!(env.net.contains(ip), "{ip} not in {}", env.net.subnet());
    }
    assert!(
        ips[0] != ips[1] && ips[1] != ips[2] && ips[0] != ips[2],
        "{ips:?}"
    );

    // Containers: a runner and a finisher in alpha, one in beta.
    let cfg = container_config("runner", &env.images.one_layer, &["sleep", "3600"]);
    let runner = env
        .run_container(&mut rt, &alpha_id, &alpha, cfg)
        .await
        .unwrap();
    let cfg = container_config("finisher", &env.images.one_layer, &["true"]);
    let finisher = env
        .run_container(&mut rt, &alpha_id, &alpha, cfg)
        .await
        .unwrap();
    let cfg = container_config("other", &env.images.one_layer, &["sleep", "3600"]);
    let other = env
        .run_container(&mut rt, &beta_id, &beta, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &runner, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    wait_container_state(&mut rt, &finisher, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    let cfg = container_config("runner", &env.images.one_layer, &["true"]);
    assert_eq!(
        anyhow_code(env.create_container(&mut rt, &alpha_id, &alpha, cfg).await),
        Code::AlreadyExists
    );
    let st = rt
        .container_status(ContainerStatusRequest {
            container_id: runner[..10].to_string(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.id, runner);
    assert!(st.image_ref.contains("sha256:"), "{}", st.image_ref);
    assert_eq!(
        st.image.unwrap().image,
        env.images.one_layer,
        "the image as the kubelet named it"
    );

    // ListPodSandbox filters.
    let lister = rt.clone();
    let list = move |filter: PodSandboxFilter| {
        let mut rt = lister.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        list(PodSandboxFilter::default()).await,
        sorted(vec![&alpha_id, &beta_id, &alpha1_id])
    );
    assert_eq!(
        list(PodSandboxFilter {
            id: beta_id.clone(),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&beta_id)
    );
    assert_eq!(
        list(PodSandboxFilter {
            label_selector: HashMap::from([("app".into(), "alpha".into())]),
            ..Default::default()
        })
        .await,
        sorted(vec![&alpha_id, &alpha1_id])
    );
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: alpha1_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        list(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32
            }),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&alpha1_id)
    );
    assert_eq!(
        list(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32
            }),
            ..Default::default()
        })
        .await,
        sorted(vec![&alpha_id, &beta_id])
    );

    // ListContainers filters.
    let lister = rt.clone();
    let list = move |filter: ContainerFilter| {
        let mut rt = lister.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_containers(ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(list(ContainerFilter::default()).await.len(), 3);
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: alpha_id.clone(),
            ..Default::default()
        })
        .await,
        sorted(vec![&runner, &finisher])
    );
    assert_eq!(
        list(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32
            }),
            ..Default::default()
        })
        .await,
        sorted(vec![&runner, &other])
    );
    assert_eq!(
        list(ContainerFilter {
            label_selector: HashMap::from([("name".into(), "finisher".into())]),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&finisher)
    );
    assert_eq!(
        list(ContainerFilter {
            id: other.clone(),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&other)
    );

    // alpha1 was stopped: its address went back to the pool.
    assert_eq!(leases(&env), 2);

    // Stop and remove succeed twice, and for what never existed.
    for _ in 0..2 {
        rt.stop_container(StopContainerRequest {
            container_id: runner.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        rt.remove_container(RemoveContainerRequest {
            container_id: runner.clone(),
        })
        .await
        .unwrap();
    }
    let unknown = "f".repeat(64);
    rt.stop_container(StopContainerRequest {
        container_id: unknown.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: unknown.clone(),
    })
    .await
    .unwrap();
    // A running container is removed (killed first) as the kubelet's force removal expects.
    rt.remove_container(RemoveContainerRequest {
        container_id: other.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        code(
            rt.container_status(ContainerStatusRequest {
                container_id: other.clone(),
                verbose: false
            })
            .await
        ),
        Code::NotFound
    );
    for _ in 0..2 {
        for id in [&alpha_id, &beta_id, &alpha1_id, &unknown] {
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        }
    }
    assert!(list(ContainerFilter::default()).await.is_empty());
    assert_eq!(leases(&env), 0, "host-local leases left");
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let left: Vec<_> = std::fs::read_dir(env.daemon.state_dir.join("pods"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    assert!(env.net.attached_interfaces().unwrap().is_empty());
}

/// host-local's lease files (named by address) in the env's network.
fn leases(env: &PodEnv) -> usize {
    std::fs::read_dir(env.net.ipam_dir().join(&env.net.name))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("10.")
        })
        .count()
}

/// The kubelet starts and removes pods in parallel.
pub async fn pods_start_and_go_concurrently(setup: Setup) {
    let env = std::sync::Arc::new(PodEnv::start(setup).await.unwrap());
    env.pull(&env.images.one_layer).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let env = env.clone();
        tasks.spawn(async move {
            let mut rt = env.rt().await.unwrap();
            let pod = env.pod_config(&format!("par-{i}"));
            let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
            let cfg = container_config("c", &env.images.one_layer, &["sleep", "3600"]);
            let ctr = env
                .run_container(&mut rt, &pod_id, &pod, cfg)
                .await
                .unwrap();
            wait_container_state(&mut rt, &ctr, ContainerState::ContainerRunning, RUNNING)
                .await
                .unwrap();
            let ip = pod_ip(&mut rt, &pod_id).await.unwrap();
            let seen = exec_ok(&mut rt, &ctr, "ip -4 -o addr show eth0")
                .await
                .unwrap();
            assert!(seen.contains(&format!("inet {ip}/")), "{seen}");
            (pod_id, ip)
        });
    }
    let mut pods = vec![];
    while let Some(r) = tasks.join_next().await {
        pods.push(r.unwrap());
    }
    let mut ips: Vec<&String> = pods.iter().map(|(_, ip)| ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "pod IPs are not distinct: {pods:?}");
    for (pod_id, _) in pods {
        let env = env.clone();
        tasks.spawn(async move {
            let mut rt = env.rt().await.unwrap();
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .unwrap();
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .unwrap();
            (pod_id, String::new())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert!(env.net.attached_interfaces().unwrap().is_empty());
    assert_eq!(leases(&env), 0);
    let left: Vec<_> = std::fs::read_dir(env.daemon.state_dir.join("pods"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "pod directories left: {left:?}");
}

/// StopPodSandbox kills what still runs; a container that already exited, or was never
/// started, is nothing to kill: no error, and no warning in the daemon's log (the kubelet
/// stops every pod this way once its containers are done).
pub async fn stopping_a_pod_with_exited_and_created_containers_is_quiet(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("quiet");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let image = env.images.one_layer.clone();
    let done = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("done", &image, &["true"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &done, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    let created = env
        .create_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("created", &image, &["sleep", "60"]),
        )
        .await
        .unwrap();
    let running = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("running", &image, &["sleep", "60"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &running, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    let st = container_status(&mut rt, &running).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "killed with the pod");
    assert_eq!(
        container_status(&mut rt, &done).await.unwrap().exit_code,
        0,
        "an exit before the stop is kept"
    );
    assert_ne!(
        container_status(&mut rt, &created).await.unwrap().state,
        ContainerState::ContainerRunning as i32
    );
    let log = env.daemon.log();
    assert!(
        !log.contains("stopping container with its pod"),
        "the stop warned about containers that were not running:\n{log}"
    );
}

/// `crictl inspect` shows `info.pid`, which tools hand to nsenter: the host's pid, as
/// containerd gives, not the one inside the pod CT.
pub async fn verbose_container_status_gives_the_host_pid(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("pid");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let image = env.images.one_layer.clone();
    let mut pids = Vec::new();
    for name in ["first", "second"] {
        let id = env
            .run_container(
                &mut rt,
                &pod_id,
                &pod,
                container_config(name, &image, &["sleep", &format!("6{}", pids.len())]),
            )
            .await
            .unwrap();
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let info = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        let verbose: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let pid = verbose["pid"].as_u64().expect("a pid while it runs");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(
            cmdline,
            format!("sleep\x006{}\x00", pids.len()).into_bytes(),
            "{name}: pid {pid} is not the container's process on the host"
        );
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1]);
}

/// A stop that comes right after the start (critest's "stopping container", a kubelet
/// killing a pod it just started) must not be lost while the entrypoint has not set its
/// handler up yet: the container's process is the init of its PID namespace, and the kernel
/// drops a signal such an init does not catch. podinit sends it again once it is caught.
pub async fn a_stop_before_the_handler_is_set_is_not_lost(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("late-trap");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // The trap comes a second after the start; the stop comes at once.
    let script = "sleep 1; trap 'exit 7' TERM; while :; do sleep 0.1; done";
    let id = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("late-trap", &env.images.one_layer, &["sh", "-c", script]),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 60,
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let st = container_status(&mut rt, &id).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        st.exit_code, 7,
        "the trap never ran: the SIGTERM was lost and the stop waited {took:?} for SIGKILL"
    );
    assert!(took < Duration::from_secs(30), "the stop took {took:?}");
}
