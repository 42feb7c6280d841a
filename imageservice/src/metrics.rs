//! Counters of the image service, registered by the daemon on its Prometheus registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::error::ErrorKind;

#[derive(Debug, Clone)]
pub struct PullMetrics {
    /// Compressed bytes received from registries.
    pub bytes_pulled: IntCounter,
    /// Whole pulls, by result (`success` or `failure`).
    pub pulls: IntCounterVec,
    /// Failed pulls by reason (the class of the error: `not_found`, `unauthenticated`, ...).
    pub pull_failures: IntCounterVec,
    pub pull_duration: Histogram,
    /// Layers a pull found already in the store.
    pub layers_reused: IntCounter,
    /// Layers fetched and applied.
    pub layers_fetched: IntCounter,
}

impl PullMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            bytes_pulled: IntCounter::with_opts(Opts::new(
                "pvecri_image_pull_bytes_total",
                "Compressed bytes received from registries",
            ))?,
            pulls: IntCounterVec::new(
                Opts::new("pvecri_image_pulls_total", "Image pulls by result"),
                &["result"],
            )?,
            pull_failures: IntCounterVec::new(
                Opts::new(
                    "pvecri_image_pull_failures_total",
                    "Failed image pulls by reason",
                ),
                &["reason"],
            )?,
            pull_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "pvecri_image_pull_duration_seconds",
                    "Time from PullImage to the image being recorded",
                )
                .buckets(vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ]),
            )?,
            layers_reused: IntCounter::with_opts(Opts::new(
                "pvecri_image_layers_reused_total",
                "Layers a pull found already in the layer store",
            ))?,
            layers_fetched: IntCounter::with_opts(Opts::new(
                "pvecri_image_layers_fetched_total",
                "Layers fetched from a registry and applied",
            ))?,
        })
    }

    /// Counts a failed pull under its reason.
    pub fn pull_failed(&self, kind: ErrorKind) {
        let reason = match kind {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DataLoss => "data_loss",
            ErrorKind::Internal => "internal",
        };
        self.pull_failures.with_label_values(&[reason]).inc();
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.bytes_pulled.clone()))?;
        registry.register(Box::new(self.pulls.clone()))?;
        registry.register(Box::new(self.pull_failures.clone()))?;
        registry.register(Box::new(self.pull_duration.clone()))?;
        registry.register(Box::new(self.layers_reused.clone()))?;
        registry.register(Box::new(self.layers_fetched.clone()))?;
        Ok(())
    }
}
