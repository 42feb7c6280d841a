//! The Prometheus endpoint (`[metrics] address`, off by default): what the node's runtime is
//! doing, under `pvecri_` names.
//!
//! * [`grpc`]: per-RPC latency and errors by gRPC code (a tower layer on the CRI server);
//! * image pulls: the image service's own counters (`imageservice::metrics`);
//! * [`podhost`]: how long pod CTs take to start, by pod host driver;
//! * [`state`]: pods and containers by state, podinit restarts, the layer store and (zfs) its
//!   pool, refreshed when scraped;
//! * [`http`]: `GET /metrics` in the Prometheus text format.
//!
//! docs/metrics.md lists every metric beside CRI-O's.

pub mod grpc;
pub mod http;
pub mod podhost;
pub mod state;
pub mod zpool;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[metrics]` in the config. The endpoint is plain HTTP without authentication: bind it to
/// loopback or a management network, or put a proxy in front. `docs/metrics.md` lists every
/// metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `IP:port` to serve Prometheus metrics on (`GET /metrics`), for example
    /// `127.0.0.1:9464` or `0.0.0.0:9464`; empty (the default) turns the endpoint off.
    pub address: String,
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.address.is_empty() {
            return Ok(());
        }
        self.address
            .parse::<std::net::SocketAddr>()
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                key: "metrics.address".into(),
                value: format!("{:?}", self.address),
                reason: format!("not an IP address and port ({e}); use \"\" to turn it off"),
            })
    }
}

/// Everything the daemon registers beside the image service's counters.
pub struct Metrics {
    pub grpc: std::sync::Arc<grpc::GrpcMetrics>,
    pub ct_start: prometheus::HistogramVec,
    pub state: state::StateMetrics,
}

impl Metrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let grpc = grpc::GrpcMetrics::new()?;
        grpc.register(registry)?;
        let ct_start = podhost::ct_start_histogram()?;
        registry.register(Box::new(ct_start.clone()))?;
        let state = state::StateMetrics::new()?;
        state.register(registry)?;
        Ok(Self {
            grpc: std::sync::Arc::new(grpc),
            ct_start,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["", "127.0.0.1:9464", "[::1]:0", "0.0.0.0:9464"] {
            let c = MetricsConfig { address: ok.into() };
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in ["localhost:9464", "9464", "127.0.0.1", ":9464"] {
            let c = MetricsConfig {
                address: bad.into(),
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("metrics.address"), "{e}");
        }
    }

    #[test]
    fn every_name_is_prefixed_and_registered_once() {
        let r = prometheus::Registry::new();
        let _m = Metrics::new(&r).unwrap();
        imageservice::metrics::PullMetrics::new()
            .unwrap()
            .register(&r)
            .unwrap();
        for family in r.gather() {
            assert!(family.name().starts_with("pvecri_"), "{}", family.name());
        }
    }
}
