//! The cAdvisor metrics the kubelet serves at `/metrics/cadvisor` when it takes pod and
//! container stats from the runtime (`PodAndContainerStatsFromCRI`): ListMetricDescriptors
//! and ListPodSandboxMetrics.
//!
//! Names, help and meaning follow cAdvisor (and CRI-O's list). Labels are cAdvisor's as the
//! kubelet exposes them: `container` (the Kubernetes container name, `POD` for pod-level
//! figures), `id` (container or pod sandbox id), `image`, `name` (the runtime's name: the id),
//! `namespace`, `pod`; plus `interface` for network metrics and `cpu` (`total`) for
//! `container_cpu_usage_seconds_total`. CRI metric values are unsigned integers, so the
//! `_seconds` counters are whole seconds, as with CRI-O and containerd.

use k8s_cri::v1::{
    ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};

use super::{ContainerSample, PodSample};
use crate::runtime::records::ContainerRecord;

const BASE_LABELS: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];
/// The `container` label of pod-level figures, as cAdvisor labels the sandbox.
const POD_CONTAINER: &str = "POD";
const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Clone, Copy)]
enum Extra {
    None,
    Cpu,
    Interface,
    Failure,
}

struct Desc {
    name: &'static str,
    help: &'static str,
    extra: Extra,
}

const fn d(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        extra: Extra::None,
    }
}

const fn net(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        extra: Extra::Interface,
    }
}

const DESCRIPTORS: &[Desc] = &[
    Desc {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        extra: Extra::Cpu,
    },
    d(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
    ),
    d(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
    ),
    d(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
    ),
    d(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
    ),
    d(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
    ),
    d(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    ),
    d(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
    ),
    d("container_memory_rss", "Size of RSS in bytes."),
    d(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
    ),
    d(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
    ),
    d("container_memory_swap", "Container swap usage in bytes."),
    d(
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
    ),
    d(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
    ),
    d(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
    ),
    Desc {
        name: "container_memory_failures_total",
        help: "Cumulative count of memory allocation failures.",
        extra: Extra::Failure,
    },
    d(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
    ),
    d(
        "container_processes",
        "Number of processes running inside the container.",
    ),
    d(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
    ),
    d(
        "container_fs_inodes_used",
        "Number of inodes used by the container on this filesystem.",
    ),
    d(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
    ),
    d("container_spec_cpu_period", "CPU period of the container."),
    d("container_spec_cpu_quota", "CPU quota of the container."),
    d("container_spec_cpu_shares", "CPU share of the container."),
    d(
        "container_last_seen",
        "Last time a container was seen by the exporter",
    ),
    net(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
    ),
    net(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
    ),
    net(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
    ),
    net(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
    ),
    net(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
    ),
    net(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
    ),
    net(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
    ),
    net(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
    ),
];

fn label_keys(extra: Extra) -> Vec<String> {
    let mut keys: Vec<String> = BASE_LABELS.iter().map(|s| s.to_string()).collect();
    match extra {
        Extra::None => {}
        Extra::Cpu => keys.push("cpu".into()),
        Extra::Interface => keys.push("interface".into()),
        Extra::Failure => keys.extend(["failure_type".into(), "scope".into()]),
    }
    keys
}

pub fn descriptors() -> Vec<MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: label_keys(d.extra),
        })
        .collect()
}

/// Builds the metrics of one subject (a container, or the pod itself) with fixed base labels.
struct Emitter {
    base: Vec<String>,
    ts: i64,
    out: Vec<Metric>,
}

impl Emitter {
    fn push(&mut self, name: &str, kind: MetricType, value: u64, extra: &[&str]) {
        let mut labels = self.base.clone();
        labels.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(Metric {
            name: name.to_string(),
            timestamp: self.ts,
            metric_type: kind as i32,
            label_values: labels,
            value: Some(UInt64Value { value }),
        });
    }
    fn counter(&mut self, name: &str, value: u64) {
        self.push(name, MetricType::Counter, value, &[]);
    }
    fn gauge(&mut self, name: &str, value: u64) {
        self.push(name, MetricType::Gauge, value, &[]);
    }
}

fn cgroup_metrics(e: &mut Emitter, s: &super::cgroup::Sample) {
    let c = &s.cpu;
    e.push(
        "container_cpu_usage_seconds_total",
        MetricType::Counter,
        c.usage_ns / NS_PER_SEC,
        &["total"],
    );
    e.counter("container_cpu_user_seconds_total", c.user_ns / NS_PER_SEC);
    e.counter(
        "container_cpu_system_seconds_total",
        c.system_ns / NS_PER_SEC,
    );
    e.counter("container_cpu_cfs_periods_total", c.periods);
    e.counter(
        "container_cpu_cfs_throttled_periods_total",
        c.throttled_periods,
    );
    e.counter(
        "container_cpu_cfs_throttled_seconds_total",
        c.throttled_ns / NS_PER_SEC,
    );
    let m = &s.memory;
    e.gauge("container_memory_usage_bytes", m.usage);
    e.gauge("container_memory_working_set_bytes", m.working_set);
    e.gauge("container_memory_rss", m.rss);
    e.gauge("container_memory_cache", m.cache);
    e.gauge("container_memory_mapped_file", m.mapped_file);
    if let Some(swap) = m.swap {
        e.gauge("container_memory_swap", swap);
    }
    e.gauge("container_memory_kernel_usage", m.kernel);
    e.counter("container_memory_failcnt", m.failcnt);
    if let Some(max) = m.max_usage {
        e.gauge("container_memory_max_usage_bytes", max);
    }
    // cAdvisor counts minor faults as pgfault less the major ones.
    e.push(
        "container_memory_failures_total",
        MetricType::Counter,
        m.pgfault.saturating_sub(m.pgmajfault),
        &["pgfault", "container"],
    );
    e.push(
        "container_memory_failures_total",
        MetricType::Counter,
        m.pgmajfault,
        &["pgmajfault", "container"],
    );
    if let Some(n) = m.oom_kills {
        e.counter("container_oom_events_total", n);
    }
    e.gauge("container_processes", s.processes);
}

fn spec_metrics(e: &mut Emitter, r: &ContainerRecord) {
    let Some(res) = r.config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return;
    };
    let pos = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    if let Some(m) = pos(res.memory_limit_in_bytes) {
        e.gauge("container_spec_memory_limit_bytes", m);
    }
    if let Some(p) = pos(res.cpu_period) {
        e.gauge("container_spec_cpu_period", p);
    }
    if let Some(q) = pos(res.cpu_quota) {
        e.gauge("container_spec_cpu_quota", q);
    }
    if let Some(s) = pos(res.cpu_shares) {
        e.gauge("container_spec_cpu_shares", s);
    }
}

fn container_metrics(c: &ContainerSample, pod: &PodSample) -> ContainerMetrics {
    let r = &c.record;
    let m = pod.record.config.metadata.clone().unwrap_or_default();
    let mut e = Emitter {
        base: vec![
            r.config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            r.id.clone(),
            r.config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            r.id.clone(),
            m.namespace,
            m.name,
        ],
        ts: c.ts_ns,
        out: Vec::new(),
    };
    if let Some(s) = &c.cgroup {
        cgroup_metrics(&mut e, s);
    }
    if let Some(fs) = c.writable_layer {
        e.gauge("container_fs_usage_bytes", fs.bytes);
        e.gauge("container_fs_inodes_used", fs.inodes);
    }
    spec_metrics(&mut e, r);
    e.gauge(
        "container_last_seen",
        u64::try_from(c.ts_ns / 1_000_000_000).unwrap_or(0),
    );
    ContainerMetrics {
        container_id: r.id.clone(),
        metrics: e.out,
    }
}

pub fn pod_metrics(p: &PodSample) -> PodSandboxMetrics {
    let m = p.record.config.metadata.clone().unwrap_or_default();
    let mut e = Emitter {
        base: vec![
            POD_CONTAINER.to_string(),
            p.record.id.clone(),
            String::new(),
            p.record.id.clone(),
            m.namespace,
            m.name,
        ],
        ts: p.ts_ns,
        out: Vec::new(),
    };
    if let Some(s) = &p.cgroup {
        cgroup_metrics(&mut e, s);
    }
    for i in p.network.iter().flatten() {
        let iface = [i.name.as_str()];
        let mut c = |name: &str, v: u64| e.push(name, MetricType::Counter, v, &iface);
        c("container_network_receive_bytes_total", i.rx_bytes);
        c("container_network_receive_packets_total", i.rx_packets);
        c(
            "container_network_receive_packets_dropped_total",
            i.rx_dropped,
        );
        c("container_network_receive_errors_total", i.rx_errors);
        c("container_network_transmit_bytes_total", i.tx_bytes);
        c("container_network_transmit_packets_total", i.tx_packets);
        c(
            "container_network_transmit_packets_dropped_total",
            i.tx_dropped,
        );
        c("container_network_transmit_errors_total", i.tx_errors);
    }
    PodSandboxMetrics {
        pod_sandbox_id: p.record.id.clone(),
        metrics: e.out,
        container_metrics: p
            .containers
            .iter()
            .map(|c| container_metrics(c, p))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn descriptors_are_unique_and_cadvisor_named() {
        let ds = descriptors();
        let mut names: Vec<_> = ds.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ds.len());
        for d in &ds {
            assert!(d.name.starts_with("container_"), "{}", d.name);
            assert_eq!(&d.label_keys[..6], BASE_LABELS);
        }
        let net = ds
            .iter()
            .find(|d| d.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(net.label_keys.last().unwrap(), "interface");
    }

    /// Every metric emitted names a descriptor and carries as many values as it has keys.
    #[test]
    fn metrics_match_their_descriptors() {
        let keys: HashMap<String, usize> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        super::super::cgroup::tests::fake_v2_pod(dir.path());
        let cg = super::super::cgroup::Cgroup::V2(dir.path().to_path_buf());
        let record = ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            config: k8s_cri::v1::ContainerConfig {
                metadata: Some(k8s_cri::v1::ContainerMetadata {
                    name: "web".into(),
                    attempt: 0,
                }),
                image: Some(k8s_cri::v1::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                linux: Some(k8s_cri::v1::LinuxContainerConfig {
                    resources: Some(k8s_cri::v1::LinuxContainerResources {
                        memory_limit_in_bytes: 1000,
                        cpu_shares: 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            image_id: "sha256:x".into(),
            image_ref: "r".into(),
            created_at_ns: 1,
            log_path: String::new(),
            mounts: vec![],
            stop_signal: 15,
            user: None,
            creating: false,
        };
        let pod_record = crate::runtime::records::PodRecord {
            id: "p1".into(),
            config: k8s_cri::v1::PodSandboxConfig {
                metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            state: crate::runtime::records::PodState::Ready,
            created_at_ns: 1,
            ips: vec![],
            host_network: false,
            runtime_handler: String::new(),
            init_pid: None,
        };
        let pod = PodSample {
            record: pod_record,
            ts_ns: 5_000_000_000,
            cgroup: Some(cg.sample().unwrap()),
            nano_cores: None,
            network: Some(vec![super::super::netdev::InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 9,
                ..Default::default()
            }]),
            containers: vec![ContainerSample {
                record,
                ts_ns: 5_000_000_000,
                cgroup: Some(cg.container("c1").sample().unwrap()),
                nano_cores: None,
                writable_layer: Some(layerfs::RootfsUsage {
                    bytes: 4096,
                    inodes: 3,
                }),
            }],
        };
        let pm = pod_metrics(&pod);
        let all = pm
            .metrics
            .iter()
            .chain(pm.container_metrics.iter().flat_map(|c| c.metrics.iter()));
        let mut n = 0;
        for m in all {
            assert_eq!(keys.get(&m.name), Some(&m.label_values.len()), "{}", m.name);
            n += 1;
        }
        assert!(n > 20);
        let find = |name: &str| {
            pm.container_metrics[0]
                .metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .clone()
        };
        let ws = find("container_memory_working_set_bytes");
        assert_eq!(ws.value.unwrap().value, 40 << 20);
        assert_eq!(ws.label_values, ["web", "c1", "busybox", "c1", "ns", "p"]);
        assert_eq!(find("container_fs_usage_bytes").value.unwrap().value, 4096);
        assert_eq!(
            find("container_spec_memory_limit_bytes")
                .value
                .unwrap()
                .value,
            1000
        );
        assert_eq!(
            find("container_cpu_usage_seconds_total")
                .value
                .unwrap()
                .value,
            2
        );
        let rx = pm
            .metrics
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_values[0], "POD");
        assert_eq!(rx.label_values[6], "eth0");
    }
}
