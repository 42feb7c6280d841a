//! OCI mount `options` to mount(2) flags, propagation changes and filesystem data, as runc
//! reads them. Options podinit cannot honour are errors, never dropped.

/// Parsed options of one mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags for the mount (or the bind remount).
    pub flags: u64,
    /// `MS_BIND` was asked for (`bind` or `rbind`).
    pub bind: bool,
    /// `MS_REC` with `MS_BIND` (`rbind`).
    pub recursive: bool,
    /// Propagation changes applied after mounting, in order (`MS_SHARED | MS_REC`, ...).
    pub propagation: Vec<u64>,
    /// `rro`: make the whole tree read-only (mount_setattr with AT_RECURSIVE).
    pub recursive_ro: bool,
    /// Filesystem-specific options (`mode=755`, `size=64k`, `newinstance`...).
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

const MS_RDONLY: u64 = libc::MS_RDONLY;
const MS_NOSUID: u64 = libc::MS_NOSUID;
const MS_NODEV: u64 = libc::MS_NODEV;
const MS_NOEXEC: u64 = libc::MS_NOEXEC;
const MS_SYNCHRONOUS: u64 = libc::MS_SYNCHRONOUS;
const MS_DIRSYNC: u64 = libc::MS_DIRSYNC;
const MS_NOATIME: u64 = libc::MS_NOATIME;
const MS_NODIRATIME: u64 = libc::MS_NODIRATIME;
const MS_RELATIME: u64 = libc::MS_RELATIME;
const MS_STRICTATIME: u64 = libc::MS_STRICTATIME;
const MS_LAZYTIME: u64 = libc::MS_LAZYTIME;
const MS_NOSYMFOLLOW: u64 = libc::MS_NOSYMFOLLOW;
const MS_SILENT: u64 = libc::MS_SILENT;
const MS_I_VERSION: u64 = libc::MS_I_VERSION;
const MS_REC: u64 = libc::MS_REC;

/// (name, set?, flag): `set` adds the flag, otherwise the option clears it.
const FLAGS: &[(&str, bool, u64)] = &[
    ("async", false, MS_SYNCHRONOUS),
    ("atime", false, MS_NOATIME),
    ("defaults", true, 0),
    ("dev", false, MS_NODEV),
    ("diratime", false, MS_NODIRATIME),
    ("dirsync", true, MS_DIRSYNC),
    ("exec", false, MS_NOEXEC),
    ("iversion", true, MS_I_VERSION),
    ("lazytime", true, MS_LAZYTIME),
    ("loud", false, MS_SILENT),
    ("noatime", true, MS_NOATIME),
    ("nodev", true, MS_NODEV),
    ("nodiratime", true, MS_NODIRATIME),
    ("noexec", true, MS_NOEXEC),
    ("noiversion", false, MS_I_VERSION),
    ("nolazytime", false, MS_LAZYTIME),
    ("nomand", true, 0),
    ("norelatime", false, MS_RELATIME),
    ("nostrictatime", false, MS_STRICTATIME),
    ("nosuid", true, MS_NOSUID),
    ("nosymfollow", true, MS_NOSYMFOLLOW),
    ("relatime", true, MS_RELATIME),
    ("ro", true, MS_RDONLY),
    ("rw", false, MS_RDONLY),
    ("silent", true, MS_SILENT),
    ("strictatime", true, MS_STRICTATIME),
    ("suid", false, MS_NOSUID),
    ("sync", true, MS_SYNCHRONOUS),
];

const PROPAGATION: &[(&str, u64)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | MS_REC),
];

/// Options podinit knows but does not implement.
const UNSUPPORTED: &[&str] = &[
    "remount",
    "mand",
    "idmap",
    "ridmap",
    "tmpcopyup",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnoatime",
    "ratime",
    "rrelatime",
    "rnorelatime",
    "rstrictatime",
    "rnostrictatime",
    "rnodiratime",
    "rdiratime",
    "rnosymfollow",
    "rsymfollow",
];

/// Parses a mount's options. `is_bind` says whether the mount is a bind mount by type; a bind
/// mount passes no data to the kernel, so an unknown option there is an error.
pub fn parse(options: &[String], is_bind_type: bool) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    for opt in options {
        let o = opt.as_str();
        if let Some(&(_, set, flag)) = FLAGS.iter().find(|(n, _, _)| *n == o) {
            if set {
                out.flags |= flag;
            } else {
                out.flags &= !flag;
            }
        } else if let Some(&(_, p)) = PROPAGATION.iter().find(|(n, _)| *n == o) {
            out.propagation.push(p);
        } else if o == "bind" {
            out.bind = true;
        } else if o == "rbind" {
            out.bind = true;
            out.recursive = true;
        } else if o == "rro" {
            out.recursive_ro = true;
        } else if UNSUPPORTED.contains(&o) {
            return Err(format!("mount option {o:?} is not supported"));
        } else if o.is_empty() || o.contains(',') {
            return Err(format!("invalid mount option {o:?}"));
        } else {
            out.data.push(o.to_string());
        }
    }
    if (out.bind || is_bind_type) && !out.data.is_empty() {
        return Err(format!(
            "unknown option(s) {:?} for a bind mount",
            out.data.join(",")
        ));
    }
    Ok(out)
}

/// The `MS_*` flags matching `statvfs` `ST_*` flags. In a user namespace these flags are locked
/// on a mount, and a bind remount that drops them fails, so remounts carry them over.
pub fn locked_flags(st_flags: u64) -> u64 {
    let map: [(u64, u64); 6] = [
        (libc::ST_NOSUID, MS_NOSUID),
        (libc::ST_NODEV, MS_NODEV),
        (libc::ST_NOEXEC, MS_NOEXEC),
        (libc::ST_NOATIME, MS_NOATIME),
        (libc::ST_NODIRATIME, MS_NODIRATIME),
        (libc::ST_RELATIME, MS_RELATIME),
    ];
    map.iter()
        .filter(|(st, _)| st_flags & st != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bind_with_flags_and_propagation() {
        let o = parse(&opts(&["rbind", "ro", "nosuid", "rslave"]), false).expect("parse");
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MS_RDONLY | MS_NOSUID);
        assert_eq!(o.propagation, vec![libc::MS_SLAVE | MS_REC]);
        assert!(o.data.is_empty());
    }

    #[test]
    fn later_options_win() {
        let o = parse(&opts(&["ro", "rw", "noexec", "exec", "nodev"]), false).expect("parse");
        assert_eq!(o.flags, MS_NODEV);
    }

    #[test]
    fn tmpfs_data_is_kept_in_order() {
        let o = parse(
            &opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
            false,
        )
        .expect("parse");
        assert_eq!(o.flags, MS_NOSUID | MS_STRICTATIME);
        assert_eq!(o.data_string(), "mode=755,size=65536k");
    }

    #[test]
    fn unknown_bind_options_are_errors() {
        assert!(parse(&opts(&["bind", "frobnicate"]), false).is_err());
        assert!(parse(&opts(&["frobnicate"]), true).is_err());
        assert!(parse(&opts(&["frobnicate"]), false).is_ok());
    }

    #[test]
    fn unsupported_options_are_errors() {
        for o in ["remount", "idmap", "rnosuid", "tmpcopyup", "a,b", ""] {
            assert!(parse(&opts(&[o]), false).is_err(), "{o}");
        }
        assert!(parse(&opts(&["rro"]), true).expect("rro").recursive_ro);
    }

    #[test]
    fn locked_flags_map() {
        assert_eq!(
            locked_flags(libc::ST_NOSUID | libc::ST_NODEV | libc::ST_RDONLY),
            MS_NOSUID | MS_NODEV
        );
    }

    proptest! {
        #[test]
        fn never_panics(v in proptest::collection::vec(".{0,12}", 0..8), b in any::<bool>()) {
            let _ = parse(&v, b);
        }
    }
}
