//! Changes made from the host inside a running CT's namespaces: its hostname and its
//! namespaced sysctls.
//!
//! Used where LXC's config cannot do it: a warm pool CT was started before its pod was known,
//! and Proxmox refuses most `lxc.sysctl.*` keys. Each change runs on a fresh thread that joins
//! the CT's namespaces (`setns` moves only the calling thread) and ends with the change, so no
//! thread of the daemon is ever left in a CT's namespace.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::sysctl;

fn join(pid: u32, kinds: &[(&str, LinkNameSpaceType)]) -> io::Result<()> {
    for (name, kind) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = std::fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))?;
        move_into_link_name_space(file.as_fd(), Some(*kind))
            .map_err(|e| io::Error::other(format!("entering {path}: {e}")))?;
    }
    Ok(())
}

fn on_fresh_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("pvecri-setns".into())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
}

/// Sets the hostname in the UTS namespace of `pid`.
pub fn set_hostname(pid: u32, hostname: &str) -> io::Result<()> {
    let name = hostname.as_bytes().to_vec();
    on_fresh_thread(move || {
        join(pid, &[("uts", LinkNameSpaceType::HostNameAndNISDomainName)])?;
        rustix::system::sethostname(&name)
            .map_err(|e| io::Error::other(format!("sethostname: {e}")))
    })
}

/// `/proc/sys` path of a sysctl in dotted form (`net.ipv4.conf.eth0/100.forwarding`).
pub fn sysctl_path(dotted: &str) -> String {
    let relative: String = dotted
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    format!("/proc/sys/{relative}")
}

/// Writes namespaced sysctls (already validated with [`sysctl::validate_all`]) inside the
/// network, IPC and UTS namespaces of `pid`: `/proc/sys` resolves them in the namespaces of
/// the thread that opens the file.
pub fn apply_sysctls(pid: u32, sysctls: &BTreeMap<String, String>) -> io::Result<()> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let wanted: Vec<(String, String)> = sysctls
        .iter()
        .map(|(k, v)| (sysctl::normalize(k), v.trim().to_string()))
        .collect();
    let needs_net = wanted.iter().any(|(k, _)| k.starts_with("net."));
    on_fresh_thread(move || {
        let mut kinds = vec![
            ("ipc", LinkNameSpaceType::InterProcessCommunication),
            ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
        ];
        if needs_net {
            kinds.push(("net", LinkNameSpaceType::Network));
        }
        join(pid, &kinds)?;
        for (name, value) in &wanted {
            let path = sysctl_path(name);
            std::fs::write(&path, value)
                .map_err(|e| io::Error::new(e.kind(), format!("sysctl {name}={value}: {e}")))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_unprivileged_port_start"),
            "/proc/sys/net/ipv4/ip_unprivileged_port_start"
        );
        assert_eq!(
            sysctl_path(&sysctl::normalize("net/ipv4/conf/eth0.100/forwarding")),
            "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
        );
    }

    #[test]
    fn joining_our_own_namespaces_works() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let me = std::process::id();
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        // Setting the hostname to what it is changes nothing, but goes all the way.
        set_hostname(me, &host).unwrap();
        assert!(set_hostname(u32::MAX, "x").is_err());
    }
}
