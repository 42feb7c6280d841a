//! Restart safety: `kill -9` of the daemon while pods run. Containers keep running while
//! it is away; after the restart their status is right, and an exit that happened
//! meanwhile is reported with its code. Runs on both layer stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::time::{Duration, Instant};

use e2e::pods::{
    PodEnv, Store, container_config, container_status, eventually, exec_ok, parse_cri_log, pod_ip,
    sh, wait_container_state,
};
use k8s_cri::v1::{
    ContainerState, ListContainersRequest, Mount, PodSandboxState, PodSandboxStatusRequest,
    RemovePodSandboxRequest, StopPodSandboxRequest,
};

e2e::on_both_stores!(containers_outlive_a_killed_daemon_and_exits_meanwhile_are_reported);

const RUNNING: Duration = Duration::from_secs(20);

fn log_lines(path: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_cri_log(&text).unwrap().len()
}

async fn containers_outlive_a_killed_daemon_and_exits_meanwhile_are_reported(store: Store) {
    let mut env = PodEnv::start(store).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("survivor");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let ip = pod_ip(&mut rt, &pod_id).await.unwrap();

    let mut steady = container_config("steady", &env.images.one_layer, &[]);
    steady.command = sh("while true; do echo beat; sleep 0.1; done");
    let steady = env
        .run_container(&mut rt, &pod_id, &pod, steady)
        .await
        .unwrap();
    // The quitter waits for a file the test makes on the host while the daemon is down.
    let trigger = tempfile::tempdir().unwrap();
    let mut quitter = container_config("quitter", &env.images.one_layer, &[]);
    quitter.command = sh("while [ ! -e /trigger/quit ]; do sleep 0.05; done; echo bye; exit 7");
    quitter.mounts = vec![Mount {
        container_path: "/trigger".into(),
        host_path: trigger.path().display().to_string(),
        ..Default::default()
    }];
    let quitter = env
        .run_container(&mut rt, &pod_id, &pod, quitter)
        .await
        .unwrap();
    let before = wait_container_state(&mut rt, &steady, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    wait_container_state(&mut rt, &quitter, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    env.daemon.kill9().unwrap();
    drop(rt);
    let killed_at_ns = now_ns();

    // While the daemon is away the steady container keeps logging...
    let steady_log = std::path::Path::new(&pod.log_directory).join("steady/0.log");
    let n = log_lines(&steady_log);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        log_lines(&steady_log) > n,
        "the container stopped logging while the daemon was down"
    );
    // ...and the quitter exits.
    std::fs::write(trigger.path().join("quit"), "").unwrap();
    let quitter_log = std::path::Path::new(&pod.log_directory).join("quitter/0.log");
    let deadline = Instant::now() + RUNNING;
    while !std::fs::read_to_string(&quitter_log)
        .unwrap_or_default()
        .contains("stdout F bye")
    {
        assert!(Instant::now() < deadline, "the quitter did not say bye");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let restarted_at_ns = now_ns();

    env.daemon.restart().unwrap();
    let mut rt = env.rt().await.unwrap();

    let st = container_status(&mut rt, &steady).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    assert_eq!(
        st.started_at, before.started_at,
        "the same process, not a restart"
    );
    let st = container_status(&mut rt, &quitter).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"), "{st:?}");
    assert!(
        st.finished_at > killed_at_ns && st.finished_at < restarted_at_ns,
        "finished_at {} is not between the kill ({killed_at_ns}) and the restart ({restarted_at_ns})",
        st.finished_at
    );

    // The pod is still ready, with its IP, and its containers answer.
    let status = e2e::pods::pod_status(&mut rt, &pod_id).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.network.unwrap().ip, ip);
    assert_eq!(
        exec_ok(&mut rt, &steady, "echo alive").await.unwrap(),
        "alive\n"
    );
    let listed = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);

    // And it goes away cleanly.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    let st = wait_container_state(&mut rt, &steady, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_ne!(st.exit_code, 0, "killed by the pod stop");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    let dir = env.pod_dir(&pod_id);
    eventually("the pod directory is gone", RUNNING, || {
        let dir = dir.clone();
        async move { Ok((!dir.exists()).then_some(())) }
    })
    .await
    .unwrap();
    assert!(
        env.net.attached_interfaces().unwrap().is_empty(),
        "a veth is left on the bridge"
    );
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

e2e::on_both_stores!(a_pod_whose_ct_dies_is_reported_and_removable);

async fn init_pid(rt: &mut e2e::cri_client::RuntimeClient, pod_id: &str) -> i32 {
    let info = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    v["init_pid"].as_i64().unwrap() as i32
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

async fn pod_state(rt: &mut e2e::cri_client::RuntimeClient, pod_id: &str) -> i32 {
    e2e::pods::pod_status(rt, pod_id).await.unwrap().state
}

/// podinit killed while the daemon runs, and another while it is away: the pods turn
/// NotReady, their containers exited (status unknown), and both go away cleanly.
async fn a_pod_whose_ct_dies_is_reported_and_removable(store: Store) {
    let mut env = PodEnv::start(store).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut pods = vec![];
    for name in ["dies-live", "dies-away"] {
        let pod = env.pod_config(name);
        let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
        let cfg = container_config("sleeper", &env.images.one_layer, &["sleep", "3600"]);
        let ctr = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap();
        wait_container_state(&mut rt, &ctr, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let pid = init_pid(&mut rt, &pod_id).await;
        pods.push((pod_id, ctr, pid));
    }

    // While the daemon runs.
    let (live_pod, live_ctr, live_pid) = pods[0].clone();
    kill9(live_pid);
    let st = wait_container_state(&mut rt, &live_ctr, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_ne!(st.exit_code, 0, "{st:?}");
    assert_eq!(st.reason, "Error");
    let mut r = rt.clone();
    eventually("the pod turns NotReady", RUNNING, || {
        let (mut r, id) = (r.clone(), live_pod.clone());
        async move {
            Ok(
                (pod_state(&mut r, &id).await == PodSandboxState::SandboxNotready as i32)
                    .then_some(()),
            )
        }
    })
    .await
    .unwrap();
    // And stays so: the CT is not restarted behind the kubelet's back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pod_state(&mut r, &live_pod).await,
        PodSandboxState::SandboxNotready as i32
    );

    // While the daemon is away.
    let (away_pod, away_ctr, away_pid) = pods[1].clone();
    env.daemon.kill9().unwrap();
    kill9(away_pid);
    let deadline = Instant::now() + RUNNING;
    while e2e::procs::exists(away_pid as u32) {
        assert!(Instant::now() < deadline, "podinit did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.daemon.restart().unwrap();
    let mut rt = env.rt().await.unwrap();
    assert_eq!(
        pod_state(&mut rt, &away_pod).await,
        PodSandboxState::SandboxNotready as i32
    );
    let st = container_status(&mut rt, &away_ctr).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_ne!(st.exit_code, 0, "{st:?}");

    // The kubelet then stops and removes them.
    for (pod_id, _, _) in &pods {
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
        assert!(!env.pod_dir(pod_id).exists());
    }
    assert!(
        env.net.attached_interfaces().unwrap().is_empty(),
        "a veth is left on the bridge"
    );
    let mounts = e2e::mounts::current_mounts().unwrap();
    let left = e2e::mounts::mounts_under(&mounts, &env.daemon.state_dir.join("pods"));
    assert!(left.is_empty(), "mounts left: {left:?}");
}
