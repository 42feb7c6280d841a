//! A CNI network of its own for one test: a conflist (bridge + host-local, loopback, and
//! optionally portmap) in a temporary `cni.conf_dir`, on a bridge with a unique name and a
//! /24 that no other interface on the machine uses, so tests run in parallel.
//!
//! The bridge is made here (not by the plugin) while holding a machine-wide lock, so that
//! two tests never pick the same subnet; it is deleted on drop, with whatever veths are
//! still attached to it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;
use tempfile::TempDir;

use crate::cmd::{output, run};
use crate::lock::FileLock;

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
const SUBNET_LOCK: &str = "/var/tmp/pvecri-test-subnets.lock";

/// Which plugins the conflist chains after the bridge.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkOptions {
    /// Add `portmap` (hostPort forwarding; needs iptables).
    pub portmap: bool,
}

/// A test's network; the bridge is deleted on drop.
pub struct TestNetwork {
    dir: TempDir,
    /// Network (and conflist) name.
    pub name: String,
    pub bridge: String,
    /// The /24's first three octets; the gateway (bridge) is `.1`.
    prefix: [u8; 3],
}

impl TestNetwork {
    pub fn new(options: NetworkOptions) -> anyhow::Result<TestNetwork> {
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
                bail!(
                    "CNI plugin {CNI_BIN_DIR}/{plugin} is missing: install the Debian package `containernetworking-plugins`"
                );
            }
        }
        let dir = tempfile::Builder::new().prefix("pvecri-cni-").tempdir()?;
        let suffix = format!("{:08x}", rand::random::<u32>());
        let bridge = format!("pvt{suffix}"); // 11 characters, under IFNAMSIZ
        let name = format!("pvecri-test-{suffix}");
        let prefix = {
            let _lock = FileLock::exclusive(Path::new(SUBNET_LOCK))?;
            let prefix = free_subnet()?;
            create_bridge(&bridge, prefix)?;
            prefix
        };
        let net = TestNetwork {
            dir,
            name,
            bridge,
            prefix,
        };
        std::fs::write(
            net.dir.path().join("10-test.conflist"),
            serde_json::to_vec_pretty(&net.conflist(options))?,
        )?;
        Ok(net)
    }

    /// The directory to give the daemon as `cni.conf_dir`.
    pub fn conf_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[cni]` section of a daemon config using this network.
    pub fn daemon_config(&self) -> String {
        format!(
            "[cni]\nconf_dir = {}\nbin_dirs = [{}]\n",
            toml_str(&self.conf_dir().display().to_string()),
            toml_str(CNI_BIN_DIR)
        )
    }

    pub fn subnet(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Whether `ip` lies in this network's /24.
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[..3] == self.prefix)
    }

    /// host-local's leases (one file per address in use).
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// The names of the interfaces attached to the bridge (the pods' host-side veths).
    pub fn attached_interfaces(&self) -> anyhow::Result<Vec<String>> {
        let out = run(Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect())
    }

    fn conflist(&self, options: NetworkOptions) -> serde_json::Value {
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir(),
                    "ranges": [[{ "subnet": self.subnet(), "gateway": self.gateway().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            }),
            json!({ "type": "loopback" }),
        ];
        if options.portmap {
            plugins.push(json!({ "type": "portmap", "capabilities": { "portMappings": true } }));
        }
        json!({ "cniVersion": "1.0.0", "name": self.name, "plugins": plugins })
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let out = output(Command::new("ip").args(["link", "del", &self.bridge]));
        if let Ok(out) = out
            && !out.status.success()
            && !String::from_utf8_lossy(&out.stderr).contains("Cannot find device")
        {
            eprintln!(
                "e2e: cannot delete bridge {}: {}",
                self.bridge,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

fn toml_str(s: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::to_string(s).unwrap_or_default()
}

/// A 10.x.y.0/24 that no address or route on the machine overlaps.
fn free_subnet() -> anyhow::Result<[u8; 3]> {
    let addrs = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
    let routes = run(Command::new("ip").args(["-4", "route", "show", "table", "all"]))?;
    let used = |p: [u8; 3]| {
        let needle = format!("{}.{}.{}.", p[0], p[1], p[2]);
        addrs.contains(&needle) || routes.contains(&needle)
    };
    for _ in 0..1000 {
        let p = [10, 200 + rand::random::<u8>() % 50, rand::random::<u8>()];
        if !used(p) {
            return Ok(p);
        }
    }
    bail!("no free 10.200-249.x.0/24 subnet for a test network")
}

fn create_bridge(name: &str, p: [u8; 3]) -> anyhow::Result<()> {
    run(Command::new("ip").args(["link", "add", name, "type", "bridge"]))
        .context("creating the test bridge")?;
    let gw = format!("{}.{}.{}.1/24", p[0], p[1], p[2]);
    let setup = run(Command::new("ip").args(["addr", "add", &gw, "dev", name]))
        .and_then(|_| run(Command::new("ip").args(["link", "set", name, "up"])));
    if let Err(e) = setup {
        let _ = output(Command::new("ip").args(["link", "del", name]));
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_quoted() {
        assert_eq!(toml_str("/a \"b\""), "\"/a \\\"b\\\"\"");
    }
}
