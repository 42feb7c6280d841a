//! How long pod CTs take to start: the pod host wrapped so that every successful `start` is
//! timed, labelled with the driver (`lxc`, `pve`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{HistogramOpts, HistogramVec};
use pve::{CtInfo, CtRuntime, CtStatus, PodHost, PodHostError, PodSpec};

pub fn ct_start_histogram() -> Result<HistogramVec, prometheus::Error> {
    HistogramVec::new(
        HistogramOpts::new(
            "pvecri_pod_ct_start_duration_seconds",
            "Time for the pod host to start a pod's CT until its init (podinit) runs, by driver",
        )
        .buckets(vec![
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
        ]),
        &["driver"],
    )
}

pub struct TimedPodHost {
    inner: Arc<dyn PodHost>,
    starts: HistogramVec,
}

impl TimedPodHost {
    pub fn wrap(inner: Arc<dyn PodHost>, starts: HistogramVec) -> Arc<dyn PodHost> {
        Arc::new(Self { inner, starts })
    }
}

#[async_trait]
impl PodHost for TimedPodHost {
    fn driver(&self) -> &'static str {
        self.inner.driver()
    }

    fn supports_user_namespaces(&self) -> bool {
        self.inner.supports_user_namespaces()
    }

    async fn create(&self, spec: &PodSpec) -> Result<(), PodHostError> {
        self.inner.create(spec).await
    }

    async fn start(&self, id: &str) -> Result<CtRuntime, PodHostError> {
        let started = Instant::now();
        let ct = self.inner.start(id).await?;
        self.starts
            .with_label_values(&[self.inner.driver()])
            .observe(started.elapsed().as_secs_f64());
        Ok(ct)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), PodHostError> {
        self.inner.stop(id, timeout).await
    }

    async fn destroy(&self, id: &str) -> Result<(), PodHostError> {
        self.inner.destroy(id).await
    }

    async fn status(&self, id: &str) -> Result<CtStatus, PodHostError> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<CtInfo>, PodHostError> {
        self.inner.list().await
    }

    async fn unavailable(&self) -> Option<String> {
        self.inner.unavailable().await
    }

    async fn list_warm(&self) -> Result<Vec<String>, PodHostError> {
        self.inner.list_warm().await
    }

    fn warm_fits(&self, spec: &PodSpec) -> bool {
        self.inner.warm_fits(spec)
    }

    async fn adopt(&self, spec: &PodSpec) -> Result<CtRuntime, PodHostError> {
        self.inner.adopt(spec).await
    }
}
