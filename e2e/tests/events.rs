//! GetContainerEvents through the real daemon: a full pod lifecycle arrives in order, with the
//! pod's status and its containers' statuses in each event, including the exit of a container
//! that ends by itself; a subscriber that never reads does not hold the runtime back.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::pods::{PodEnv, Store, container_config, eventually, sh, wait_container_state};
use k8s_cri::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, GetEventsRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};

const RUNNING: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lifecycle_arrives_in_order() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();

    let mut stream = rt
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // Subscribed and never read.
    let _idle = env
        .rt()
        .await
        .unwrap()
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<ContainerEventResponse>>> = Arc::default();
    let sink = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(ev) = stream.message().await.unwrap() {
            sink.lock().unwrap().push(ev);
        }
    });

    let pod = env.pod_config("events");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut quitter = container_config("quitter", &env.images.one_layer, &[]);
    quitter.command = sh("sleep 1; exit 3");
    let quitter_id = env
        .run_container(&mut rt, &pod_id, &pod, quitter)
        .await
        .unwrap();
    wait_container_state(
        &mut rt,
        &quitter_id,
        ContainerState::ContainerExited,
        RUNNING,
    )
    .await
    .unwrap();
    // The exit is reported without anyone asking for the container's status.
    eventually("the quitter's exit event", RUNNING, || {
        let seen = seen.clone();
        let id = quitter_id.clone();
        async move {
            Ok(seen
                .lock()
                .unwrap()
                .iter()
                .any(|e| {
                    e.container_id == id
                        && e.container_event_type
                            == ContainerEventType::ContainerStoppedEvent as i32
                })
                .then_some(()))
        }
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: quitter_id.clone(),
    })
    .await
    .unwrap();
    let sleeper = container_config("sleeper", &env.images.one_layer, &["sleep", "3600"]);
    let sleeper_id = env
        .run_container(&mut rt, &pod_id, &pod, sleeper)
        .await
        .unwrap();
    wait_container_state(
        &mut rt,
        &sleeper_id,
        ContainerState::ContainerRunning,
        RUNNING,
    )
    .await
    .unwrap();
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
    eventually("the pod's deletion event", RUNNING, || {
        let seen = seen.clone();
        let id = pod_id.clone();
        async move {
            Ok(seen
                .lock()
                .unwrap()
                .iter()
                .any(|e| {
                    e.container_id == id
                        && e.container_event_type
                            == ContainerEventType::ContainerDeletedEvent as i32
                })
                .then_some(()))
        }
    })
    .await
    .unwrap();
    reader.abort();

    use ContainerEventType::*;
    let events = seen.lock().unwrap().clone();
    let name = |id: &str| {
        if id == pod_id {
            "pod"
        } else if id == quitter_id {
            "quitter"
        } else if id == sleeper_id {
            "sleeper"
        } else {
            "other"
        }
    };
    let got: Vec<(String, ContainerEventType)> = events
        .iter()
        .map(|e| {
            (
                name(&e.container_id).to_string(),
                ContainerEventType::try_from(e.container_event_type).unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, ContainerEventType)> = [
        ("pod", ContainerCreatedEvent),
        ("pod", ContainerStartedEvent),
        ("quitter", ContainerCreatedEvent),
        ("quitter", ContainerStartedEvent),
        ("quitter", ContainerStoppedEvent),
        ("quitter", ContainerDeletedEvent),
        ("sleeper", ContainerCreatedEvent),
        ("sleeper", ContainerStartedEvent),
        ("sleeper", ContainerStoppedEvent),
        ("pod", ContainerStoppedEvent),
        ("sleeper", ContainerDeletedEvent),
        ("pod", ContainerDeletedEvent),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect();
    assert_eq!(got, want);

    let uid = pod.metadata.as_ref().unwrap().uid.clone();
    let mut last = 0;
    for e in &events {
        let st = e
            .pod_sandbox_status
            .as_ref()
            .expect("every event has the pod's status");
        assert_eq!(st.metadata.as_ref().unwrap().uid, uid);
        assert_eq!(st.id, pod_id);
        assert!(e.created_at >= last, "timestamps in order");
        last = e.created_at;
    }
    // The quitter's stop event carries its exit.
    let stop = events
        .iter()
        .find(|e| {
            e.container_id == quitter_id && e.container_event_type == ContainerStoppedEvent as i32
        })
        .unwrap();
    let st = stop
        .containers_statuses
        .iter()
        .find(|c| c.id == quitter_id)
        .unwrap();
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 3)
    );
    // The sandbox's start event lists it ready.
    let started = &events[1];
    assert_eq!(
        started.pod_sandbox_status.as_ref().unwrap().state,
        k8s_cri::v1::PodSandboxState::SandboxReady as i32
    );
}
