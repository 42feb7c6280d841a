//! `/sys/fs/cgroup` inside a container: an OCI mount of type `cgroup`, made the way the CT
//! has its own, so that programs read their limits where they look for them (JVMs, Go's
//! GOMAXPROCS helpers, .NET, `free` in some images).
//!
//! The container has a cgroup namespace rooted at its own cgroup, so a cgroup filesystem
//! mounted there shows that cgroup as the root: `memory.max` (v2) or
//! `memory/memory.limit_in_bytes` (v1) are the container's own limits.
//! * v2 (`cgroup2` on `/sys/fs/cgroup` in the CT): one `cgroup2` mount.
//! * v1: a tmpfs, with one `cgroup` mount per hierarchy the CT has under `/sys/fs/cgroup`
//!   (same controllers, `name=` hierarchies included), the hybrid `unified` mount, and the
//!   CT's symlinks (`cpuacct -> cpu,cpuacct`). The tmpfs is made read-only after it is
//!   filled when the mount asks for `ro`.

use std::path::PathBuf;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What to mount, read from the CT's mount table and its `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Unified,
    Legacy {
        /// (directory name below the mount, the controllers as mount data, e.g. `cpu,cpuacct`
        /// or `none,name=systemd`).
        hierarchies: Vec<(String, String)>,
        /// The hybrid layout's empty cgroup2 hierarchy, by its directory name.
        unified: Option<String>,
        /// (name, target) of the symlinks in the CT's `/sys/fs/cgroup`.
        links: Vec<(String, PathBuf)>,
    },
}

/// Reads the layout from a mountinfo text (the CT's) and the symlinks found in its
/// `/sys/fs/cgroup`. `None` when no cgroup filesystem is mounted there.
pub fn layout(mountinfo: &str, links: Vec<(String, PathBuf)>) -> Option<Layout> {
    let mut hierarchies = Vec::new();
    let mut unified = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        let mut post = post.split(' ');
        let (Some(fstype), _source, super_opts) = (post.next(), post.next(), post.next()) else {
            continue;
        };
        if fstype == "cgroup2" && point == CGROUP_ROOT {
            return Some(Layout::Unified);
        }
        let Some(name) = point
            .strip_prefix(CGROUP_ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\\'))
        else {
            continue;
        };
        match fstype {
            "cgroup2" => unified = Some(name.to_string()),
            "cgroup" => {
                let data = controllers(super_opts.unwrap_or(""));
                if !data.is_empty() && !hierarchies.iter().any(|(n, _)| n == name) {
                    hierarchies.push((name.to_string(), data));
                }
            }
            _ => {}
        }
    }
    if hierarchies.is_empty() && unified.is_none() {
        return None;
    }
    Some(Layout::Legacy {
        hierarchies,
        unified,
        links,
    })
}

/// The controller part of a v1 mount's super options: controllers and `name=`; a named
/// hierarchy without controllers needs `none`.
fn controllers(super_opts: &str) -> String {
    const NOT_CONTROLLERS: &[&str] = &["rw", "ro", "clone_children", "xattr", "noprefix"];
    let picked: Vec<&str> = super_opts
        .split(',')
        .filter(|o| {
            !o.is_empty() && !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent=")
        })
        .collect();
    if !picked.is_empty() && picked.iter().all(|o| o.starts_with("name=")) {
        format!("none,{}", picked.join(","))
    } else {
        picked.join(",")
    }
}

/// The symlinks directly in `/sys/fs/cgroup` (the CT's view).
pub fn ct_links() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut links: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            // Only links to a sibling (`cpu -> cpu,cpuacct`); anything else is not ours to copy.
            let plain = target.components().count() == 1 && target.is_relative();
            plain.then(|| (e.file_name().to_string_lossy().into_owned(), target))
        })
        .collect();
    links.sort();
    links
}

/// Whether an OCI mount type asks for the container's cgroup filesystem.
pub fn is_cgroup_mount(fstype: &str) -> bool {
    fstype == "cgroup" || fstype == "cgroup2"
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CT: &str = "\
600 580 0:60 / / rw - ext4 /dev/vda rw
610 600 0:70 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs none rw,size=304k,mode=755
611 610 0:31 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuset,clone_children
612 610 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
613 610 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
614 610 0:34 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd
615 610 0:35 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
616 600 0:36 / /var/lib/pvecri/pods/x/ctrs/y/rootfs/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn v1_hierarchies_keep_their_controllers_and_names() {
        let links = vec![("cpu".to_string(), PathBuf::from("cpu,cpuacct"))];
        assert_eq!(
            layout(HYBRID_CT, links.clone()),
            Some(Layout::Legacy {
                hierarchies: vec![
                    ("cpuset".into(), "cpuset".into()),
                    ("cpu,cpuacct".into(), "cpu,cpuacct".into()),
                    ("memory".into(), "memory".into()),
                    ("systemd".into(), "none,name=systemd".into()),
                ],
                unified: Some("unified".into()),
                links,
            })
        );
    }

    #[test]
    fn v2_is_one_mount() {
        let text = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(layout(text, Vec::new()), Some(Layout::Unified));
    }

    #[test]
    fn no_cgroups_no_layout() {
        assert_eq!(
            layout("27 1 254:0 / / rw - ext4 /dev/vda rw\n", Vec::new()),
            None
        );
        assert_eq!(layout("garbage\n", Vec::new()), None);
    }

    #[test]
    fn controller_options() {
        assert_eq!(controllers("rw,memory"), "memory");
        assert_eq!(controllers("rw,cpuset,clone_children"), "cpuset");
        assert_eq!(controllers("rw,xattr,name=systemd"), "none,name=systemd");
        assert_eq!(
            controllers("rw,cpu,cpuacct,release_agent=/x"),
            "cpu,cpuacct"
        );
        assert_eq!(controllers("rw"), "");
    }
}
