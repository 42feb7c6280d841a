//! Overlay mounts of a layer chain, and finding and removing them again.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use crate::error::StoreError;
use crate::sys;

/// The kernel's limit for the legacy `mount(2)` data string is one page.
const LEGACY_OPTIONS_MAX: usize = 4095;

/// Mounts an overlay of `lowers` (top first) with `upper` and `work` at `target`.
///
/// Uses the `fsconfig` API, adding lower layers one by one with `lowerdir+` (Linux 6.8),
/// so long chains do not hit the one-page limit of `mount(2)` options. On older kernels, or
/// if `legacy`, falls back to `mount(2)`, naming lower layers by `/proc/self/fd` paths if
/// their full paths would not fit.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    legacy: bool,
    extra: &[&str],
) -> Result<(), StoreError> {
    if !legacy {
        match mount_with_fsconfig(lowers, upper, work, target, extra) {
            Ok(()) => return Ok(()),
            Err(Fallback::Legacy) => {
                tracing::debug!("kernel lacks overlay lowerdir+, using mount(2)");
            }
            Err(Fallback::Error(e)) => return Err(e),
        }
    }
    mount_legacy(lowers, upper, work, target, extra)
}

enum Fallback {
    Legacy,
    Error(StoreError),
}

/// Reads the messages the kernel left in a filesystem context (why a config step failed).
fn context_messages(fs: &OwnedFd) -> String {
    let mut messages = Vec::new();
    let mut file = std::fs::File::from(match fs.try_clone() {
        Ok(fd) => fd,
        Err(_) => return String::new(),
    });
    let mut buf = [0u8; 1024];
    // Each read returns one message; the fd reports ENODATA when none are left.
    for _ in 0..16 {
        match file.read(&mut buf) {
            Ok(n) if n > 0 => messages.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            _ => break,
        }
    }
    messages.join("; ")
}

fn mount_with_fsconfig(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    extra: &[&str],
) -> Result<(), Fallback> {
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(rustix::io::Errno::NOSYS) => return Err(Fallback::Legacy),
        Err(e) => return Err(Fallback::Error(StoreError::io("fsopen(overlay)", e.into()))),
    };
    let fail = |what: &str, e: rustix::io::Errno| {
        let messages = context_messages(&fs);
        Fallback::Error(StoreError::io(
            format!(
                "mounting overlay at {}: {what} ({messages})",
                target.display()
            ),
            e.into(),
        ))
    };
    rustix::mount::fsconfig_set_string(&fs, "source", "overlay").map_err(|e| fail("source", e))?;
    for (i, lower) in lowers.iter().enumerate() {
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower.as_path()) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) if i == 0 => {
                let messages = context_messages(&fs);
                // Kernels before 6.8: "overlay: Unknown parameter 'lowerdir+'".
                if messages.contains("nknown parameter") {
                    return Err(Fallback::Legacy);
                }
                return Err(Fallback::Error(StoreError::io(
                    format!(
                        "mounting overlay at {}: lowerdir+ {} ({messages})",
                        target.display(),
                        lower.display()
                    ),
                    std::io::Error::from_raw_os_error(libc::EINVAL),
                )));
            }
            Err(e) => return Err(fail(&format!("lowerdir+ {}", lower.display()), e)),
        }
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| fail("upperdir", e))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work).map_err(|e| fail("workdir", e))?;
    for option in extra {
        match option.split_once('=') {
            Some((key, value)) => rustix::mount::fsconfig_set_string(&fs, key, value),
            None => rustix::mount::fsconfig_set_flag(&fs, *option),
        }
        .map_err(|e| fail(option, e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail("create", e))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| fail("fsmount", e))?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", e))?;
    Ok(())
}

/// Escapes the characters that separate overlay options and layers.
fn escape_option(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) fn legacy_options(lowers: &[String], upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        escape_option(upper),
        escape_option(work)
    )
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    extra: &[&str],
) -> Result<(), StoreError> {
    let with_extra = |mut options: String| {
        for option in extra {
            options.push(',');
            options.push_str(option);
        }
        options
    };
    let full: Vec<String> = lowers.iter().map(|l| escape_option(l)).collect();
    let mut options = with_extra(legacy_options(&full, upper, work));
    // Keeps the fds alive until the mount call has resolved the paths.
    let mut fds: Vec<OwnedFd> = Vec::new();
    if options.len() > LEGACY_OPTIONS_MAX {
        let mut short = Vec::new();
        for lower in lowers {
            let fd =
                sys::open_dir(lower).map_err(|e| StoreError::io_at("opening layer", lower, e))?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            fds.push(fd);
        }
        options = with_extra(legacy_options(&short, upper, work));
        if options.len() > LEGACY_OPTIONS_MAX {
            return Err(StoreError::Unsupported {
                driver: "overlay",
                what: format!(
                    "{} layers in one mount on this kernel (options exceed a page)",
                    lowers.len()
                ),
            });
        }
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        StoreError::io(
            format!("mounting overlay at {}", target.display()),
            e.into(),
        )
    })?;
    drop(fds);
    Ok(())
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_options: String,
}

/// Undoes the octal escapes (`\040`) of mountinfo fields.
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_owned();
            let _source = right.next()?;
            let super_options = right.next().unwrap_or_default().to_owned();
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type,
                super_options,
            })
        })
        .collect()
}

fn mounts() -> Result<Vec<MountEntry>, StoreError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| StoreError::io("reading /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
}

/// Mount points of overlays whose upper directory is `upper`.
pub(crate) fn overlay_mounts_of(upper: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let needle = format!("upperdir={}", upper.display());
    Ok(mounts()?
        .into_iter()
        .filter(|m| {
            m.fs_type == "overlay"
                && m.super_options
                    .split(',')
                    .any(|o| unescape(o).as_bytes() == needle.as_bytes() || o == needle)
        })
        .map(|m| m.mount_point)
        .collect())
}

/// Unmounts every overlay using `upper`, retrying while busy for a few seconds.
pub(crate) fn unmount_overlays_of(upper: &Path) -> Result<(), StoreError> {
    for _ in 0..8 {
        let points = overlay_mounts_of(upper)?;
        if points.is_empty() {
            return Ok(());
        }
        for point in points {
            let mut delay = Duration::from_millis(50);
            loop {
                match nix::mount::umount2(&point, MntFlags::UMOUNT_NOFOLLOW) {
                    Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
                    Err(Errno::EBUSY) if delay < Duration::from_secs(2) => {
                        std::thread::sleep(delay);
                        delay *= 2;
                    }
                    Err(e) => {
                        return Err(StoreError::io(
                            format!("unmounting {}", point.display()),
                            e.into(),
                        ));
                    }
                }
            }
        }
    }
    Err(StoreError::Corrupt(format!(
        "overlays of {} keep reappearing",
        upper.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/s/rootfs/x/upper,workdir=/s/rootfs/x/work\n\
                    37 35 98:0 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].fs_type, "overlay");
        assert!(m[0].super_options.contains("upperdir=/s/rootfs/x/upper"));
        assert_eq!(m[1].fs_type, "proc");
    }

    #[test]
    fn legacy_options_escape_separators() {
        let o = legacy_options(
            &[escape_option(Path::new("/a:b")), "/c".into()],
            Path::new("/u,p"),
            Path::new("/w"),
        );
        assert_eq!(o, "lowerdir=/a\\:b:/c,upperdir=/u\\,p,workdir=/w");
    }
}
