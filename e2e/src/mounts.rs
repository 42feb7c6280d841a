//! Finding and lazily unmounting what tests left mounted under a directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, umount2};

/// One line of `/proc/self/mountinfo`, reduced to what cleanup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Parses the text of a mountinfo file; lines that do not have the documented shape are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional...] - fs_type source super_options
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?;
    let source = right.next()?;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current process's mounts.
pub fn current_mounts() -> anyhow::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Mounts at `root` or below it, deepest first.
pub fn mounts_under(all: &[MountEntry], root: &Path) -> Vec<MountEntry> {
    let mut found: Vec<MountEntry> = all
        .iter()
        .filter(|m| m.mount_point.starts_with(root))
        .cloned()
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    found
}

/// Lazily unmounts (`MNT_DETACH`) every mount at or below `root` that `keep` does not claim,
/// deepest first, repeating while stacked mounts remain. Returns how many were unmounted.
pub fn unmount_under(root: &Path, keep: impl Fn(&MountEntry) -> bool) -> anyhow::Result<usize> {
    let mut unmounted = 0;
    // A mount point can carry several stacked mounts; each pass removes the top one.
    for _ in 0..64 {
        let targets: Vec<MountEntry> = mounts_under(&current_mounts()?, root)
            .into_iter()
            .filter(|m| !keep(m))
            .collect();
        if targets.is_empty() {
            return Ok(unmounted);
        }
        let mut progressed = false;
        for target in targets {
            match umount2(&target.mount_point, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    unmounted += 1;
                    progressed = true;
                }
                // A parent detached earlier in this pass takes its children with it.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot unmount {}", target.mount_point.display())
                    });
                }
            }
        }
        if !progressed {
            anyhow::bail!("mounts under {} remain after unmounting", root.display());
        }
    }
    anyhow::bail!("too many stacked mounts under {}", root.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
43 22 0:40 / /tmp/tpool rw,relatime - fuse.zfs tpool rw,user_id=0
44 43 0:41 / /tmp/tpool/a rw,relatime - fuse.zfs tpool/a rw,user_id=0
50 22 0:50 / /var/lib/x/with\\040space rw shared:5 master:2 - overlay overlay rw,lowerdir=/a
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].fs_type, "fuse.zfs");
        assert_eq!(mounts[1].source, "tpool");
        assert_eq!(
            mounts[3].mount_point,
            PathBuf::from("/var/lib/x/with space")
        );
        assert_eq!(mounts[3].fs_type, "overlay");
    }

    #[test]
    fn unescape_leaves_incomplete_escapes_alone() {
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("\\0"), "\\0");
        assert_eq!(unescape("x\\999"), "x\\999");
    }

    #[test]
    fn under_is_deepest_first_and_not_prefix_matching() {
        let mut all = parse_mountinfo(SAMPLE);
        all.push(MountEntry {
            mount_point: "/tmp/tpoolx".into(),
            fs_type: "tmpfs".into(),
            source: "t".into(),
        });
        let under = mounts_under(&all, Path::new("/tmp/tpool"));
        let points: Vec<_> = under.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/tmp/tpool/a"), PathBuf::from("/tmp/tpool")]
        );
    }
}
