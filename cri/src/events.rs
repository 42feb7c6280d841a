//! GetContainerEvents: created, started, stopped and deleted events of containers and pod
//! sandboxes, for the kubelet's evented PLEG.
//!
//! Each event carries, as containerd sends them, the pod's PodSandboxStatus and the statuses
//! of all its containers; a sandbox's own events carry the sandbox id as `container_id`.
//! Events come from the RPCs that cause them and, for containers that exit by themselves, from
//! the status file podinit rewrites on every transition (`ctrs/<id>/status.json`, renamed into
//! place), watched with inotify.
//!
//! Subscribers share one bounded ring ([`CAPACITY`] events): sending never waits, and a
//! subscriber that falls further behind than the ring is dropped (its stream ends with
//! `ABORTED`; the kubelet then reconnects and relists), so a slow client never holds the
//! runtime back. Events are only built while someone listens.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, PodSandboxState};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tonic::Status;

use crate::runtime::records::PodRecord;
use crate::runtime::{Runtime, now_ns};
use crate::server::runtime::{container_status, pod_status};

/// Events a subscriber may fall behind by before it is dropped.
pub const CAPACITY: usize = 1024;

pub type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    /// The last event sent per container or sandbox id: each is sent once, in order.
    last: Mutex<HashMap<String, ContainerEventType>>,
    watcher: Option<Watcher>,
}

/// Container directories watched for podinit's status file.
struct Watcher {
    inotify: AsyncFd<InotifyFd>,
    /// Watch descriptor -> (pod id, container id).
    watches: Mutex<HashMap<WatchDescriptor, (String, String)>>,
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn rank(t: ContainerEventType) -> u8 {
    match t {
        ContainerEventType::ContainerCreatedEvent => 0,
        ContainerEventType::ContainerStartedEvent => 1,
        ContainerEventType::ContainerStoppedEvent => 2,
        ContainerEventType::ContainerDeletedEvent => 3,
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// Needs a tokio runtime for the inotify watcher; without one (or without inotify), exits
    /// are reported only when an RPC observes them.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        let inotify = match tokio::runtime::Handle::try_current() {
            Ok(_) => Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(std::io::Error::from)
                .and_then(|i| {
                    // SAFETY: the descriptor is the Inotify's own, which the AsyncFd owns
                    // (through InotifyFd) for its whole life and never replaces.
                    unsafe { AsyncFd::register_with_interest(InotifyFd(i), Interest::READABLE) }
                        .map_err(std::io::Error::from)
                }),
            Err(e) => Err(std::io::Error::other(e)),
        };
        let watcher = match inotify {
            Ok(inotify) => Some(Watcher {
                inotify,
                watches: Mutex::new(HashMap::new()),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable: container exits reach the event stream late");
                None
            }
        };
        Self {
            tx,
            last: Mutex::new(HashMap::new()),
            watcher,
        }
    }

    /// A new subscriber's stream: every event from now on, until the subscriber falls
    /// [`CAPACITY`] events behind.
    pub fn subscribe(&self) -> EventStream {
        let rx = self.tx.subscribe();
        Box::pin(futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "dropping a slow container event subscriber");
                    Some((
                        Err(Status::aborted(format!(
                            "event subscriber fell {n} events behind and was dropped; subscribe again and relist"
                        ))),
                        None,
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }))
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Claims the right to send `kind` for `id`: false if it (or a later event) was sent.
    fn claim(&self, id: &str, kind: ContainerEventType) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(id) {
            Some(prev) if rank(*prev) >= rank(kind) => false,
            _ => {
                if kind == ContainerEventType::ContainerDeletedEvent {
                    last.remove(id);
                } else {
                    last.insert(id.to_string(), kind);
                }
                true
            }
        }
    }

    fn send(&self, ev: ContainerEventResponse) {
        // An error means nobody listens.
        let _ = self.tx.send(ev);
    }

    /// Starts watching a container's directory for podinit's status file.
    pub fn watch(&self, pod_dir: &Path, pod_id: &str, ctr_id: &str) {
        let Some(w) = &self.watcher else {
            return;
        };
        let dir = pod_dir.join(podinit::api::CTRS_DIR).join(ctr_id);
        match w
            .inotify
            .get_ref()
            .0
            .add_watch(&dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR)
        {
            Ok(wd) => {
                w.watches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(wd, (pod_id.to_string(), ctr_id.to_string()));
            }
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "watching a container"),
        }
    }

    /// Waits for status file changes; returns the containers whose status was rewritten.
    async fn changed(&self) -> std::io::Result<Vec<(String, String)>> {
        let Some(w) = &self.watcher else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = w.inotify.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    let mut watches = w.watches.lock().unwrap_or_else(|p| p.into_inner());
                    let mut out = Vec::new();
                    for ev in events {
                        if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                            // The directory went with its container.
                            watches.remove(&ev.wd);
                            continue;
                        }
                        if ev.name.as_deref() == Some(OsStr::new(podinit::api::STATUS_FILE))
                            && let Some(ids) = watches.get(&ev.wd)
                        {
                            out.push(ids.clone());
                        }
                    }
                    return Ok(out);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The event for `subject` (a container id, or the pod id for the sandbox's own events) with
/// the pod's status and all its containers' statuses, if it was not sent yet and someone
/// listens.
pub async fn emit(rt: &Runtime, pod_id: &str, subject: &str, kind: ContainerEventType) {
    if rt.events.subscribers() == 0 {
        // Nobody to tell; later subscribers relist first anyway.
        let _ = rt.events.claim(subject, kind);
        return;
    }
    if let Ok(pod) = rt.find_pod(pod_id) {
        emit_for(rt, &pod, subject, kind).await;
    }
}

/// [`emit`] with the pod's record at hand (a removed pod's, say).
pub async fn emit_for(rt: &Runtime, pod: &PodRecord, subject: &str, kind: ContainerEventType) {
    let events = &rt.events;
    if !events.claim(subject, kind) || events.subscribers() == 0 {
        return;
    }
    let state = match kind {
        ContainerEventType::ContainerStoppedEvent | ContainerEventType::ContainerDeletedEvent
            if subject == pod.id =>
        {
            PodSandboxState::SandboxNotready
        }
        _ => rt.pod_state(pod).await,
    };
    let mut statuses = Vec::new();
    for c in rt
        .containers()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.pod_id == pod.id && !c.creating)
    {
        let st = rt.observed_status(&c).await;
        statuses.push(container_status(&c, &st));
    }
    events.send(ContainerEventResponse {
        container_id: subject.to_string(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: Some(pod_status(pod, state)),
        containers_statuses: statuses,
    });
}

/// A container was created: watch it, and tell.
pub async fn container_created(rt: &Runtime, id: &str) {
    if let Ok(c) = rt.find_container(id) {
        rt.events.watch(&rt.pod_dir(&c.pod_id), &c.pod_id, &c.id);
        emit(
            rt,
            &c.pod_id,
            &c.id,
            ContainerEventType::ContainerCreatedEvent,
        )
        .await;
    }
}

/// `kind` for the container `query` names, if it exists.
pub async fn container_event(rt: &Runtime, query: &str, kind: ContainerEventType) {
    if let Ok(c) = rt.find_container(query) {
        emit(rt, &c.pod_id, &c.id, kind).await;
    }
}

/// The pod stopped, and its containers with it.
pub async fn pod_stopped(rt: &Runtime, pod: &PodRecord) {
    for c in rt.containers().unwrap_or_default() {
        if c.pod_id == pod.id && !c.creating {
            emit_for(rt, pod, &c.id, ContainerEventType::ContainerStoppedEvent).await;
        }
    }
    emit_for(rt, pod, &pod.id, ContainerEventType::ContainerStoppedEvent).await;
}

/// The pod was removed with `containers` (their records are gone now).
pub async fn pod_removed(rt: &Runtime, pod: &PodRecord, containers: &[String]) {
    for id in containers {
        emit_for(rt, pod, id, ContainerEventType::ContainerStoppedEvent).await;
        emit_for(rt, pod, id, ContainerEventType::ContainerDeletedEvent).await;
    }
    emit_for(rt, pod, &pod.id, ContainerEventType::ContainerStoppedEvent).await;
    emit_for(rt, pod, &pod.id, ContainerEventType::ContainerDeletedEvent).await;
}

/// Turns podinit's status rewrites into started and stopped events, for as long as the
/// daemon runs. Containers that exist now are watched first.
pub async fn watch_exits(rt: Arc<crate::daemon::Daemon>) {
    let runtime = &rt.runtime;
    for c in runtime.containers().unwrap_or_default() {
        if !c.creating {
            runtime
                .events
                .watch(&runtime.pod_dir(&c.pod_id), &c.pod_id, &c.id);
        }
    }
    loop {
        let changed = match runtime.events.changed().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "container exit watcher stopped");
                return;
            }
        };
        for (pod_id, ctr_id) in changed {
            let dir = runtime.pod_dir(&pod_id);
            let id = ctr_id.clone();
            let status =
                tokio::task::spawn_blocking(move || podinit::status::read_status(&dir, &id))
                    .await
                    .ok()
                    .and_then(Result::ok);
            let kind = match status.map(|s| s.state) {
                Some(podinit::api::ContainerState::Running) => {
                    ContainerEventType::ContainerStartedEvent
                }
                Some(podinit::api::ContainerState::Exited) => {
                    ContainerEventType::ContainerStoppedEvent
                }
                _ => continue,
            };
            emit(runtime, &pod_id, &ctr_id, kind).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn ev(id: &str) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_event_once_and_in_order() {
        let e = Events::new();
        use ContainerEventType::*;
        assert!(e.claim("c", ContainerCreatedEvent));
        assert!(!e.claim("c", ContainerCreatedEvent));
        assert!(
            e.claim("c", ContainerStoppedEvent),
            "started may be skipped"
        );
        assert!(!e.claim("c", ContainerStartedEvent), "no going back");
        assert!(e.claim("c", ContainerDeletedEvent));
        assert!(
            e.claim("c", ContainerCreatedEvent),
            "an id may come again after deletion"
        );
    }

    /// Reads what is there without waiting for more.
    async fn drain(s: &mut EventStream) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(Ok(ev))) =
            tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await
        {
            out.push(ev.container_id);
        }
        out
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_the_sender_never_waits() {
        let e = Events::new();
        let mut slow = e.subscribe();
        let mut fast = e.subscribe();
        e.send(ev("first"));
        assert_eq!(fast.next().await.unwrap().unwrap().container_id, "first");
        // The slow one reads nothing while more than the ring holds is sent; the fast one
        // keeps up.
        let mut got = 0;
        for i in 0..CAPACITY + 10 {
            e.send(ev(&i.to_string()));
            if i % 100 == 0 {
                got += drain(&mut fast).await.len();
            }
        }
        got += drain(&mut fast).await.len();
        assert_eq!(got, CAPACITY + 10, "the fast subscriber missed nothing");
        let err = slow.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert!(slow.next().await.is_none(), "the stream ends");
        e.send(ev("last"));
        assert_eq!(drain(&mut fast).await, ["last"]);
        assert_eq!(e.subscribers(), 1);
    }

    #[tokio::test]
    async fn status_file_renames_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let ctr = dir.path().join("ctrs/c1");
        std::fs::create_dir_all(&ctr).unwrap();
        let e = Events::new();
        e.watch(dir.path(), "p1", "c1");
        std::fs::write(ctr.join("status.json.tmp"), "{}").unwrap();
        std::fs::rename(ctr.join("status.json.tmp"), ctr.join("status.json")).unwrap();
        let changed = tokio::time::timeout(std::time::Duration::from_secs(5), e.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed, vec![("p1".to_string(), "c1".to_string())]);
        // Removing the directory drops the watch.
        std::fs::remove_dir_all(&ctr).unwrap();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), e.changed()).await;
        assert!(
            e.watcher
                .as_ref()
                .unwrap()
                .watches
                .lock()
                .unwrap()
                .is_empty()
        );
    }
}
