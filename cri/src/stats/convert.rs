//! Readings into CRI stats messages.

use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

use super::cgroup::{CpuSample, MemorySample};
use super::netdev::InterfaceStats;
use super::{ContainerSample, PodSample};

/// The interface the kubelet takes for the pod's network figures.
pub const DEFAULT_INTERFACE: &str = "eth0";

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

pub fn cpu(ts: i64, cpu: &CpuSample, nano_cores: Option<u64>) -> CpuUsage {
    CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: v(cpu.usage_ns),
        usage_nano_cores: nano_cores.and_then(v),
    }
}

pub fn memory(ts: i64, m: &MemorySample) -> MemoryUsage {
    MemoryUsage {
        timestamp: ts,
        working_set_bytes: v(m.working_set),
        available_bytes: m.available().and_then(v),
        usage_bytes: v(m.usage),
        rss_bytes: v(m.rss),
        page_faults: v(m.pgfault),
        major_page_faults: v(m.pgmajfault),
    }
}

fn swap(ts: i64, m: &MemorySample) -> Option<SwapUsage> {
    let used = m.swap?;
    Some(SwapUsage {
        timestamp: ts,
        swap_available_bytes: m.swap_limit.map(|l| l.saturating_sub(used)).and_then(v),
        swap_usage_bytes: v(used),
    })
}

pub fn container(c: &ContainerSample, fs_mountpoint: &str) -> ContainerStats {
    let r = &c.record;
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        cpu: c
            .cgroup
            .as_ref()
            .map(|s| cpu(c.ts_ns, &s.cpu, c.nano_cores)),
        memory: c.cgroup.as_ref().map(|s| memory(c.ts_ns, &s.memory)),
        swap: c.cgroup.as_ref().and_then(|s| swap(c.ts_ns, &s.memory)),
        // Every container has a writable layer; one not measured yet reads as empty.
        writable_layer: Some(FilesystemUsage {
            timestamp: c.ts_ns,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: fs_mountpoint.to_string(),
            }),
            used_bytes: v(c.writable_layer.map(|u| u.bytes).unwrap_or(0)),
            inodes_used: v(c.writable_layer.map(|u| u.inodes).unwrap_or(0)),
        }),
    }
}

fn interface(i: &InterfaceStats) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(i.rx_bytes),
        rx_errors: v(i.rx_errors),
        tx_bytes: v(i.tx_bytes),
        tx_errors: v(i.tx_errors),
    }
}

/// `eth0` as the default interface (the kubelet's), the others beside it.
pub fn network(ts: i64, ifaces: &[InterfaceStats]) -> NetworkUsage {
    let default = ifaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .or_else(|| ifaces.first());
    NetworkUsage {
        timestamp: ts,
        default_interface: default.map(interface),
        interfaces: ifaces
            .iter()
            .filter(|i| Some(i.name.as_str()) != default.map(|d| d.name.as_str()))
            .map(interface)
            .collect(),
    }
}

pub fn pod(p: &PodSample, fs_mountpoint: &str) -> PodSandboxStats {
    let r = &p.record;
    let linux = p.cgroup.as_ref().map(|s| LinuxPodSandboxStats {
        cpu: Some(cpu(p.ts_ns, &s.cpu, p.nano_cores)),
        memory: Some(memory(p.ts_ns, &s.memory)),
        network: p.network.as_deref().map(|n| network(p.ts_ns, n)),
        process: Some(ProcessUsage {
            timestamp: p.ts_ns,
            process_count: v(s.processes),
        }),
        containers: p
            .containers
            .iter()
            .map(|c| container(c, fs_mountpoint))
            .collect(),
    });
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        linux,
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, rx: u64) -> InterfaceStats {
        InterfaceStats {
            name: name.into(),
            rx_bytes: rx,
            ..Default::default()
        }
    }

    #[test]
    fn eth0_is_the_default_interface() {
        let n = network(1, &[iface("net1", 5), iface("eth0", 7)]);
        let d = n.default_interface.unwrap();
        assert_eq!((d.name.as_str(), d.rx_bytes.unwrap().value), ("eth0", 7));
        assert_eq!(n.interfaces.len(), 1);
        assert_eq!(n.interfaces[0].name, "net1");
        let n = network(1, &[]);
        assert!(n.default_interface.is_none() && n.interfaces.is_empty());
    }

    #[test]
    fn available_only_under_a_limit() {
        let mut m = MemorySample {
            usage: 100,
            working_set: 60,
            ..Default::default()
        };
        assert_eq!(memory(1, &m).available_bytes, None);
        m.limit = Some(100);
        assert_eq!(memory(1, &m).available_bytes.unwrap().value, 40);
        m.working_set = 200;
        assert_eq!(memory(1, &m).available_bytes.unwrap().value, 0);
        assert!(swap(1, &m).is_none());
        m.swap = Some(10);
        m.swap_limit = Some(30);
        assert_eq!(swap(1, &m).unwrap().swap_available_bytes.unwrap().value, 20);
    }
}
