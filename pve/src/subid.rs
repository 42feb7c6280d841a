//! Whether root may use the unprivileged CT idmap.
//!
//! When shadow's `newuidmap`/`newgidmap` are installed, LXC writes the idmap through them even
//! as root, and they refuse ranges not delegated to root in `/etc/subuid` and `/etc/subgid`
//! (Proxmox ships `root:100000:65536`). Checking up front turns LXC's late start failure into a
//! create error that says what to fix.

use crate::spec::IdMap;

/// `true` when one `root` (or `0`) line of a subuid/subgid file covers `[start, start+count)`.
pub fn root_has_range(file: &str, start: u64, count: u64) -> bool {
    file.lines().any(|line| {
        let mut parts = line.trim().split(':');
        let (Some(owner), Some(first), Some(len), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(first), Ok(len)) = (first.parse::<u64>(), len.parse::<u64>()) else {
            return false;
        };
        (owner == "root" || owner == "0")
            && first <= start
            && start.saturating_add(count) <= first.saturating_add(len)
    })
}

/// `newuidmap` on `PATH` (what LXC looks for).
pub fn shadow_idmap_tools_installed() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| dir.join("newuidmap").is_file())
}

/// `None` when the idmap can be used; otherwise what is missing.
pub fn check_root_delegation(map: &IdMap) -> Option<String> {
    if !shadow_idmap_tools_installed() {
        return None;
    }
    let missing: Vec<String> = [("/etc/subuid", map.uid), ("/etc/subgid", map.gid)]
        .into_iter()
        .filter(|(file, range)| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            !root_has_range(&text, u64::from(range.host), u64::from(range.count))
        })
        .map(|(file, range)| format!("`root:{}:{}` in {file}", range.host, range.count))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "this unprivileged pod needs {} (newuidmap is installed, and LXC then maps ids \
         through it)",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_ranges() {
        assert!(root_has_range("root:100000:65536\n", 100_000, 65_536));
        assert!(root_has_range(
            "alice:165536:65536\n0:0:1000000000\n",
            100_000,
            65_536
        ));
        assert!(root_has_range("root:100000:65536\n", 100_000, 1));
    }

    #[test]
    fn missing_or_short_ranges() {
        assert!(!root_has_range("", 100_000, 65_536));
        assert!(!root_has_range("alice:100000:65536\n", 100_000, 65_536));
        assert!(!root_has_range("root:100000:65535\n", 100_000, 65_536));
        assert!(!root_has_range("root:100001:65536\n", 100_000, 65_536));
        assert!(!root_has_range(
            "root:x:65536\nroot:100000\n",
            100_000,
            65_536
        ));
        assert!(!root_has_range(
            "root:100000:65536:extra\n",
            100_000,
            65_536
        ));
    }
}
