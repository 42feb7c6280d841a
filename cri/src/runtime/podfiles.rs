//! The files every container of a pod shares: resolv.conf, hosts, hostname, written into
//! the pod directory and bound into each container.

use std::path::Path;

use k8s_cri::v1::DnsConfig;

/// Names under `<pod dir>/etc/` (and `/etc/` in the container).
pub const POD_FILES: &[&str] = &["hosts", "resolv.conf", "hostname"];

/// resolv.conf from the kubelet's DNS config; without one, the host's, as containerd does.
pub fn resolv_conf(dns: Option<&DnsConfig>, host_resolv: &str) -> String {
    let Some(dns) =
        dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
    else {
        return host_resolv.to_string();
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// A hosts file naming the pod itself; the kubelet usually mounts its own over it.
pub fn hosts(hostname: &str, host_network: bool, host_hosts: &str) -> String {
    if host_network {
        return host_hosts.to_string();
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// Writes the three files into `<pod_dir>/etc/`.
pub fn write(
    pod_dir: &Path,
    hostname: &str,
    dns: Option<&DnsConfig>,
    host_network: bool,
) -> std::io::Result<()> {
    let etc = pod_dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    std::fs::write(etc.join("resolv.conf"), resolv_conf(dns, &host_resolv))?;
    std::fs::write(
        etc.join("hosts"),
        hosts(hostname, host_network, &host_hosts),
    )?;
    std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_the_kubelet() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns), "nameserver 1.1.1.1\n"),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(None, "nameserver 1.1.1.1\n"),
            "nameserver 1.1.1.1\n"
        );
        assert_eq!(resolv_conf(Some(&DnsConfig::default()), "x\n"), "x\n");
    }

    #[test]
    fn hosts_names_the_pod_or_copies_the_host() {
        assert!(hosts("web-0", false, "").contains("127.0.1.1\tweb-0\n"));
        assert_eq!(hosts("web-0", true, "1.2.3.4 node\n"), "1.2.3.4 node\n");
    }
}
