//! Layers being applied in this process: one application per chain ID, and a way for
//! others (the same layer requested again, or a child waiting for its parent) to wait for
//! its result.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::store::LayerInfo;

type Outcome = Result<LayerInfo, StoreError>;

/// How long a failed application is remembered: a child that asks for its parent after
/// the parent failed gets that failure at once instead of waiting for a parent that
/// nobody is applying any more.
const FAILURE_MEMORY: Duration = Duration::from_secs(120);

struct Flight {
    parent: Option<Digest>,
    result: Option<Outcome>,
}

#[derive(Default)]
struct State {
    flights: HashMap<Digest, Arc<Mutex<Flight>>>,
    /// The last failed application of each chain ID, until it starts again or is old.
    failed: HashMap<Digest, (Instant, StoreError)>,
}

impl State {
    fn recent_failure(&self, chain_id: &Digest) -> Option<StoreError> {
        self.failed
            .get(chain_id)
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, e)| e.clone())
    }
}

/// The registry of applications in progress.
#[derive(Default)]
pub(crate) struct Inflight {
    state: Mutex<State>,
    /// Signalled whenever a flight starts or ends.
    changed: Condvar,
}

/// The caller applies the layer and must call [`Leader::finish`].
pub(crate) struct Leader<'a> {
    inflight: &'a Inflight,
    chain_id: Digest,
    flight: Arc<Mutex<Flight>>,
    finished: bool,
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    /// Another thread applied (or is applying) it: this is its result.
    Follower(Outcome),
}

/// What waiting for a layer found.
pub(crate) enum Waited {
    /// It was being applied, with this result.
    Finished(Outcome),
    /// Nobody was applying it (within the grace period): look at the store.
    NotInFlight,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent enough to
    // report results; do not propagate the poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inflight {
    /// Becomes the one applying `chain_id`, or waits for the thread that is.
    pub(crate) fn begin(&self, chain_id: &Digest, parent: Option<&Digest>) -> Role<'_> {
        let mut state = lock(&self.state);
        if let Some(flight) = state.flights.get(chain_id).cloned() {
            drop(state);
            return Role::Follower(self.wait_flight(&flight));
        }
        let flight = Arc::new(Mutex::new(Flight {
            parent: parent.cloned(),
            result: None,
        }));
        state.failed.remove(chain_id);
        state.flights.insert(chain_id.clone(), flight.clone());
        drop(state);
        self.changed.notify_all();
        Role::Leader(Leader {
            inflight: self,
            chain_id: chain_id.clone(),
            flight,
            finished: false,
        })
    }

    fn wait_flight(&self, flight: &Arc<Mutex<Flight>>) -> Outcome {
        let mut state = lock(&self.state);
        loop {
            if let Some(result) = &lock(flight).result {
                return result.clone();
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// If `chain_id` is being applied, waits for the result; if its last application
    /// failed (recently, and nothing began it again since), reports that failure.
    /// Otherwise waits until some application starts or ends, at most `max`, and reports
    /// [`Waited::NotInFlight`]: the caller looks at the store again and decides whether to
    /// keep waiting.
    pub(crate) fn wait(&self, chain_id: &Digest, max: Duration) -> Waited {
        let state = lock(&self.state);
        if let Some(flight) = state.flights.get(chain_id).cloned() {
            drop(state);
            return Waited::Finished(self.wait_flight(&flight));
        }
        if let Some(e) = state.recent_failure(chain_id) {
            return Waited::Finished(Err(e));
        }
        if max.is_zero() {
            return Waited::NotInFlight;
        }
        let (state, _) = self
            .changed
            .wait_timeout(state, max)
            .unwrap_or_else(|e| e.into_inner());
        match state.flights.get(chain_id).cloned() {
            Some(flight) => {
                drop(state);
                Waited::Finished(self.wait_flight(&flight))
            }
            None => Waited::NotInFlight,
        }
    }

    /// Whether an application in progress has `parent` as its parent.
    pub(crate) fn has_child_of(&self, parent: &Digest) -> bool {
        let state = lock(&self.state);
        state
            .flights
            .values()
            .any(|f| lock(f).parent.as_ref() == Some(parent))
    }

    /// Whether `chain_id` is being applied.
    pub(crate) fn is_in_flight(&self, chain_id: &Digest) -> bool {
        lock(&self.state).flights.contains_key(chain_id)
    }
}

impl Leader<'_> {
    /// Publishes the result to waiters and ends the flight.
    pub(crate) fn finish(mut self, result: Outcome) -> Outcome {
        self.complete(result.clone(), true);
        result
    }

    /// `remember`: keep a failure for children that ask after the flight ended.
    fn complete(&mut self, result: Outcome, remember: bool) {
        self.finished = true;
        let mut state = lock(&self.inflight.state);
        state
            .failed
            .retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        if let (Err(e), true) = (&result, remember) {
            state
                .failed
                .insert(self.chain_id.clone(), (Instant::now(), e.clone()));
        }
        lock(&self.flight).result = Some(result);
        state.flights.remove(&self.chain_id);
        drop(state);
        self.inflight.changed.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.complete(
                Err(StoreError::Corrupt(format!(
                    "application of layer {} ended without a result",
                    self.chain_id
                ))),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn info(d: &Digest) -> LayerInfo {
        LayerInfo {
            chain_id: d.clone(),
            parent: None,
            diff_id: d.clone(),
            size: 1,
        }
    }

    #[test]
    fn concurrent_requests_apply_once_and_share_the_result() {
        let inflight = Inflight::default();
        let d = Digest::of_bytes(b"x");
        let applied = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| match inflight.begin(&d, None) {
                    Role::Leader(leader) => {
                        applied.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        leader.finish(Ok(info(&d))).unwrap();
                    }
                    Role::Follower(result) => assert_eq!(result.unwrap(), info(&d)),
                });
            }
        });
        // Late arrivals after the flight ended lead a new one (they then find the layer on
        // disk); with all threads started inside 50 ms only one leader ran.
        assert_eq!(applied.load(Ordering::SeqCst), 1);
        assert!(!inflight.is_in_flight(&d));
    }

    #[test]
    fn waiting_sees_a_late_start_and_errors() {
        let inflight = Inflight::default();
        let d = Digest::of_bytes(b"p");
        assert!(matches!(
            inflight.wait(&d, Duration::from_millis(10)),
            Waited::NotInFlight
        ));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                let Role::Leader(leader) = inflight.begin(&d, None) else {
                    panic!()
                };
                std::thread::sleep(Duration::from_millis(30));
                let _ = leader.finish(Err(StoreError::InvalidRequest("bad".into())));
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match inflight.wait(&d, Duration::from_millis(100)) {
                    Waited::Finished(Err(StoreError::InvalidRequest(m))) => {
                        assert_eq!(m, "bad");
                        break;
                    }
                    Waited::Finished(_) => panic!("expected the leader's error"),
                    Waited::NotInFlight => assert!(std::time::Instant::now() < deadline),
                }
            }
        });
    }

    #[test]
    fn a_failure_is_reported_to_those_who_ask_after_it() {
        let inflight = Inflight::default();
        let d = Digest::of_bytes(b"failed");
        let Role::Leader(leader) = inflight.begin(&d, None) else {
            panic!()
        };
        let _ = leader.finish(Err(StoreError::InvalidRequest("broken".into())));
        let started = Instant::now();
        match inflight.wait(&d, Duration::from_secs(5)) {
            Waited::Finished(Err(StoreError::InvalidRequest(m))) => assert_eq!(m, "broken"),
            _ => panic!("expected the remembered failure"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // A new application forgets it.
        let Role::Leader(leader) = inflight.begin(&d, None) else {
            panic!()
        };
        leader.finish(Ok(info(&d))).unwrap();
        assert!(matches!(
            inflight.wait(&d, Duration::ZERO),
            Waited::NotInFlight
        ));
    }

    #[test]
    fn a_dropped_leader_releases_waiters() {
        let inflight = Inflight::default();
        let d = Digest::of_bytes(b"q");
        let parent = Digest::of_bytes(b"parent");
        let Role::Leader(leader) = inflight.begin(&d, Some(&parent)) else {
            panic!()
        };
        assert!(inflight.has_child_of(&parent));
        drop(leader);
        assert!(!inflight.has_child_of(&parent));
        assert!(matches!(
            inflight.wait(&d, Duration::ZERO),
            Waited::NotInFlight
        ));
    }
}
