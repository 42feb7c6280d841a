//! Single-use tokens for the streaming URLs: each Exec, Attach or PortForward RPC stores its
//! request under a fresh random token; the first HTTP request naming the token takes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// How long a URL stays valid (the kubelet's streaming cache TTL).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting for their client at once (the kubelet's `maxInFlight`).
pub const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes per token.
const TOKEN_BYTES: usize = 32;

/// What a token stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    Exec(k8s_cri::v1::ExecRequest),
    Attach(k8s_cri::v1::AttachRequest),
    PortForward(k8s_cri::v1::PortForwardRequest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("too many streaming requests waiting for their clients ({MAX_IN_FLIGHT})")]
    Full,
}

pub struct RequestCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Default for RequestCache {
    fn default() -> Self {
        Self::new(TOKEN_TTL, MAX_IN_FLIGHT)
    }
}

impl RequestCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `req` and returns its token (URL-safe base64 of 32 random bytes).
    pub fn insert(&self, req: Pending) -> Result<String, CacheError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            entries.retain(|_, (expiry, _)| *expiry > now);
            if entries.len() >= self.max {
                return Err(CacheError::Full);
            }
        }
        let mut raw = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        entries.insert(token.clone(), (now + self.ttl, req));
        Ok(token)
    }

    /// Takes the request of `token` if it exists and has not expired; a token works once.
    pub fn consume(&self, token: &str) -> Option<Pending> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (expiry, req) = entries.remove(token)?;
        (expiry > Instant::now()).then_some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(k8s_cri::v1::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        })
    }

    #[test]
    fn tokens_are_single_use_random_and_url_safe() {
        let c = RequestCache::default();
        let a = c.insert(pf()).unwrap();
        let b = c.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes of base64 without padding");
        assert!(
            a.bytes()
                .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_')
        );
        assert_eq!(c.consume(&a), Some(pf()));
        assert_eq!(c.consume(&a), None, "used");
        assert_eq!(c.consume("nope"), None);
        assert!(c.consume(&b).is_some());
    }

    #[test]
    fn tokens_expire() {
        let c = RequestCache::new(Duration::from_millis(20), 10);
        let t = c.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.consume(&t), None);
    }

    #[test]
    fn a_full_cache_refuses_until_entries_expire() {
        let c = RequestCache::new(Duration::from_millis(30), 2);
        c.insert(pf()).unwrap();
        c.insert(pf()).unwrap();
        assert_eq!(c.insert(pf()), Err(CacheError::Full));
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.insert(pf()).is_ok(), "expired entries make room");
    }
}
