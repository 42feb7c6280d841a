//! The device policy of a container: which device nodes its processes may create (mknod),
//! read and write, enforced by its cgroup as runc enforces it.
//!
//! The rules are the spec's `linux.resources.devices` followed by runc's default allow list
//! ([`DEFAULT_RULES`]), applied in order to a [`DevicePolicy`] that models the cgroup v1
//! devices controller exactly (as runc's devices emulator does): a default (allow or deny all)
//! and exceptions keyed by type, major and minor. A spec without rules thus gets "deny all but
//! the defaults": a container root with CAP_MKNOD can create `/dev/sda` but not open it.
//!
//! The same policy is written to the v1 `devices.deny`/`devices.allow` files
//! ([`DevicePolicy::v1_writes`]) or compiled to a `BPF_PROG_TYPE_CGROUP_DEVICE` program for
//! cgroup v2 ([`ebpf::program`]), so both hierarchies enforce the same thing.

pub mod bpf;
pub mod cgroup;
pub mod ebpf;

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Invalid(String),
    /// cgroup v1 cannot remove part of a wildcard exception; runc refuses such rules too.
    #[error(
        "device rule {rule} cannot be enforced: it punches a hole in the wildcard rule {wildcard} \
         (the cgroup devices controller ignores that)"
    )]
    Hole { rule: String, wildcard: String },
}

/// Device node type a rule or a request is about (the BPF ctx's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DevType {
    Block,
    Char,
}

impl DevType {
    /// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
    pub fn bpf(self) -> u32 {
        match self {
            DevType::Block => 1,
            DevType::Char => 2,
        }
    }

    fn letter(self) -> char {
        match self {
            DevType::Block => 'b',
            DevType::Char => 'c',
        }
    }
}

/// Access bits, with the BPF ctx's values (`BPF_DEVCG_ACC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Access(pub u32);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// `rwm` letters, in any order; empty or anything else is an error.
    pub fn parse(s: &str) -> Result<Access, DeviceError> {
        if s.is_empty() {
            return Err(DeviceError::Invalid("device access is empty".into()));
        }
        let mut a = 0;
        for c in s.chars() {
            a |= match c {
                'r' => Self::READ.0,
                'w' => Self::WRITE.0,
                'm' => Self::MKNOD.0,
                other => {
                    return Err(DeviceError::Invalid(format!(
                        "device access {s:?}: {other:?} is not one of r, w, m"
                    )));
                }
            };
        }
        Ok(Access(a))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn union(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
    fn minus(self, o: Access) -> Access {
        Access(self.0 & !o.0)
    }
    fn overlaps(self, o: Access) -> bool {
        self.0 & o.0 != 0
    }
    fn within(self, o: Access) -> bool {
        self.0 & !o.0 == 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::READ, 'r'), (Self::WRITE, 'w'), (Self::MKNOD, 'm')] {
            if self.overlaps(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// What an exception matches: a type and a major and minor, `None` for any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub typ: DevType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        write!(
            f,
            "{} {}:{}",
            self.typ.letter(),
            num(self.major),
            num(self.minor)
        )
    }
}

/// One rule of `linux.resources.devices`: `what == None` is type `a` (every device, whatever
/// major and minor say), which sets the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub what: Option<Match>,
    pub access: Access,
}

impl Rule {
    pub const fn allow(typ: DevType, major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
        Rule {
            allow: true,
            what: Some(Match { typ, major, minor }),
            access: Access(access),
        }
    }
}

/// runc's default allow list (libcontainer/specconv `AllowedDevices`), appended after the
/// spec's rules: mknod of any node, `/dev/null`, `random`, `full`, `tty`, `zero`, `urandom`,
/// the pseudo terminals (`pts/*`, `ptmx`) and `/dev/net/tun`.
pub const DEFAULT_RULES: &[Rule] = &[
    Rule::allow(DevType::Char, None, None, 1),
    Rule::allow(DevType::Block, None, None, 1),
    Rule::allow(DevType::Char, Some(1), Some(3), 7),
    Rule::allow(DevType::Char, Some(1), Some(8), 7),
    Rule::allow(DevType::Char, Some(1), Some(7), 7),
    Rule::allow(DevType::Char, Some(5), Some(0), 7),
    Rule::allow(DevType::Char, Some(1), Some(5), 7),
    Rule::allow(DevType::Char, Some(1), Some(9), 7),
    Rule::allow(DevType::Char, Some(136), None, 7),
    Rule::allow(DevType::Char, Some(5), Some(2), 7),
    Rule::allow(DevType::Char, Some(10), Some(200), 7),
];

/// The state of a cgroup v1 devices controller: a default and exceptions to it (with
/// the access each exception covers). Exceptions of an allow-all policy deny; those of a
/// deny-all policy allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePolicy {
    default_allow: bool,
    exceptions: BTreeMap<Match, Access>,
}

impl Default for DevicePolicy {
    /// Deny everything (a fresh policy before any rule, as runc's emulator starts).
    fn default() -> Self {
        Self {
            default_allow: false,
            exceptions: BTreeMap::new(),
        }
    }
}

impl DevicePolicy {
    /// Every device, every access.
    pub fn allow_all() -> Self {
        Self {
            default_allow: true,
            exceptions: BTreeMap::new(),
        }
    }

    /// The spec's rules, then [`DEFAULT_RULES`].
    pub fn from_rules(rules: &[Rule]) -> Result<Self, DeviceError> {
        let mut p = Self::default();
        for r in rules.iter().chain(DEFAULT_RULES) {
            p.apply(r)?;
        }
        Ok(p)
    }

    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// Nothing is refused.
    pub fn allows_everything(&self) -> bool {
        self.default_allow && self.exceptions.is_empty()
    }

    /// Exceptions in a stable order (wildcards first).
    pub fn exceptions(&self) -> impl Iterator<Item = (Match, Access)> + '_ {
        self.exceptions.iter().map(|(m, a)| (*m, *a))
    }

    /// Applies one rule as the v1 controller would (writing it to `devices.allow` or
    /// `devices.deny`).
    pub fn apply(&mut self, rule: &Rule) -> Result<(), DeviceError> {
        let Some(what) = rule.what else {
            // `a`: resets everything to the new default.
            *self = Self {
                default_allow: rule.allow,
                exceptions: BTreeMap::new(),
            };
            return Ok(());
        };
        if rule.allow == self.default_allow {
            // Back towards the default: an exception is narrowed or removed.
            self.remove(what, rule.access)
        } else {
            let e = self.exceptions.entry(what).or_default();
            *e = e.union(rule.access);
            Ok(())
        }
    }

    fn remove(&mut self, what: Match, access: Access) -> Result<(), DeviceError> {
        // cgroup v1 silently ignores removing part of a wildcard exception; refuse it, as runc
        // does, rather than leave an access the rule meant to take away.
        for partial in [
            Match {
                major: None,
                ..what
            },
            Match {
                minor: None,
                ..what
            },
            Match {
                major: None,
                minor: None,
                ..what
            },
        ] {
            if partial == what {
                continue;
            }
            if let Some(a) = self.exceptions.get(&partial)
                && a.overlaps(access)
            {
                return Err(DeviceError::Hole {
                    rule: format!("{what} {access}"),
                    wildcard: format!("{partial} {a}"),
                });
            }
        }
        if let Some(a) = self.exceptions.get_mut(&what) {
            *a = a.minus(access);
            if a.is_empty() {
                self.exceptions.remove(&what);
            }
        }
        Ok(())
    }

    /// Whether a process may do `access` on a node: the v1 controller's decision (a request
    /// for several accesses at once, like an `O_RDWR` open, needs all of them).
    pub fn permits(&self, typ: DevType, major: u32, minor: u32, access: Access) -> bool {
        let matching = self.exceptions.iter().filter(|(m, _)| {
            m.typ == typ && m.major.is_none_or(|x| x == major) && m.minor.is_none_or(|x| x == minor)
        });
        if self.default_allow {
            // Denied when any requested access is in a matching exception.
            !matching.into_iter().any(|(_, a)| a.overlaps(access))
        } else {
            matching.into_iter().any(|(_, a)| access.within(*a))
        }
    }

    /// What to write, in order, into the v1 controller's files of a fresh cgroup: the default
    /// (`a` into `devices.allow` or `devices.deny`) then each exception into the other file.
    pub fn v1_writes(&self) -> Vec<(&'static str, String)> {
        let (default_file, exception_file) = if self.default_allow {
            ("devices.allow", "devices.deny")
        } else {
            ("devices.deny", "devices.allow")
        };
        let mut out = vec![(default_file, "a".to_string())];
        for (m, a) in &self.exceptions {
            out.push((exception_file, format!("{m} {a}")));
        }
        out
    }
}

/// `linux.resources.devices` as rules. Type `a` (or none) is every device; a major or minor
/// that is absent or -1 is a wildcard; access must be non-empty `rwm` letters.
pub fn rules_from_spec(
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
) -> Result<Vec<Rule>, DeviceError> {
    use oci_spec::runtime::LinuxDeviceType;
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let bad =
            |msg: String| DeviceError::Invalid(format!("linux.resources.devices[{i}]: {msg}"));
        let access =
            Access::parse(r.access().as_deref().unwrap_or("")).map_err(|e| bad(e.to_string()))?;
        let number = |name: &str, v: Option<i64>| -> Result<Option<u32>, DeviceError> {
            match v {
                None | Some(-1) => Ok(None),
                // The BPF program compares with sign-extended 32-bit immediates; Linux device
                // numbers have 12 (major) and 20 (minor) bits.
                Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(u32::try_from(n).ok()),
                Some(n) => Err(bad(format!("{name} {n} is not a device number"))),
            }
        };
        let what = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            t @ (LinuxDeviceType::B | LinuxDeviceType::C) => Some(Match {
                typ: if t == LinuxDeviceType::B {
                    DevType::Block
                } else {
                    DevType::Char
                },
                major: number("major", r.major())?,
                minor: number("minor", r.minor())?,
            }),
            other => {
                return Err(bad(format!(
                    "type {:?} is not a cgroup device type (a, b or c)",
                    other.as_str()
                )));
            }
        };
        out.push(Rule {
            allow: r.allow(),
            what,
            access,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DevType::{Block, Char};

    fn rule(allow: bool, typ: DevType, major: Option<u32>, minor: Option<u32>, a: &str) -> Rule {
        Rule {
            allow,
            what: Some(Match { typ, major, minor }),
            access: Access::parse(a).unwrap(),
        }
    }
    fn all(allow: bool) -> Rule {
        Rule {
            allow,
            what: None,
            access: Access::ALL,
        }
    }

    #[test]
    fn access_letters() {
        assert_eq!(Access::parse("rwm").unwrap(), Access::ALL);
        assert_eq!(Access::parse("mr").unwrap().to_string(), "rm");
        assert!(Access::parse("").is_err());
        assert!(Access::parse("rx").unwrap_err().to_string().contains("'x'"));
    }

    #[test]
    fn no_rules_is_deny_all_but_runcs_defaults() {
        let p = DevicePolicy::from_rules(&[]).unwrap();
        assert!(!p.default_allow());
        // mknod of anything, open of the host's disk not.
        assert!(p.permits(Block, 254, 0, Access::MKNOD));
        assert!(p.permits(Char, 10, 229, Access::MKNOD));
        assert!(!p.permits(Block, 254, 0, Access::READ));
        assert!(!p.permits(Block, 8, 0, Access(Access::READ.0 | Access::WRITE.0)));
        assert!(
            !p.permits(Char, 10, 229, Access::READ),
            "fuse is not a default"
        );
        assert!(
            !p.permits(Char, 5, 1, Access::WRITE),
            "console is not a default"
        );
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (10, 200),
        ] {
            assert!(p.permits(Char, maj, min, Access::ALL), "{maj}:{min}");
            assert!(!p.permits(Block, maj, min, Access::READ), "b {maj}:{min}");
        }
        assert!(p.permits(Char, 136, 7, Access(6)), "pts");
        assert_eq!(
            p.v1_writes()[..3],
            [
                ("devices.deny", "a".to_string()),
                ("devices.allow", "b *:* m".to_string()),
                ("devices.allow", "c *:* m".to_string()),
            ]
        );
        assert!(
            p.v1_writes()
                .contains(&("devices.allow", "c 136:* rwm".into()))
        );
        assert_eq!(p.v1_writes().len(), 1 + DEFAULT_RULES.len());
    }

    #[test]
    fn containerds_spec_deny_all_then_a_device() {
        // What containerd (and pvecri's daemon) writes: deny all, then each CRI device.
        let p =
            DevicePolicy::from_rules(&[all(false), rule(true, Char, Some(10), Some(229), "rw")])
                .unwrap();
        assert!(p.permits(Char, 10, 229, Access::READ));
        assert!(p.permits(Char, 10, 229, Access(6)));
        // m comes from the wildcard default; the device's own rule had no m.
        assert!(p.permits(Char, 10, 229, Access::MKNOD));
        assert!(!p.permits(Char, 10, 228, Access::READ));
        assert!(
            p.v1_writes()
                .contains(&("devices.allow", "c 10:229 rw".to_string()))
        );
    }

    #[test]
    fn read_only_device() {
        let p = DevicePolicy::from_rules(&[all(false), rule(true, Block, Some(7), Some(3), "r")])
            .unwrap();
        assert!(p.permits(Block, 7, 3, Access::READ));
        assert!(!p.permits(Block, 7, 3, Access::WRITE));
        assert!(!p.permits(Block, 7, 3, Access(6)), "O_RDWR needs both");
    }

    #[test]
    fn privileged_allows_everything() {
        let p = DevicePolicy::from_rules(&[all(false), all(true)]).unwrap();
        assert!(p.allows_everything());
        assert!(p.permits(Block, 254, 0, Access::ALL));
        assert_eq!(p.v1_writes(), vec![("devices.allow", "a".to_string())]);
        assert_eq!(p, DevicePolicy::allow_all());
    }

    #[test]
    fn deny_list_exceptions_and_removal() {
        let mut p = DevicePolicy::allow_all();
        p.apply(&rule(false, Block, Some(8), None, "rw")).unwrap();
        assert!(!p.permits(Block, 8, 1, Access::READ));
        assert!(!p.permits(Block, 8, 1, Access(3)), "any overlap denies");
        assert!(p.permits(Block, 8, 1, Access::MKNOD));
        assert!(p.permits(Block, 9, 1, Access::READ));
        assert_eq!(
            p.v1_writes(),
            vec![
                ("devices.allow", "a".to_string()),
                ("devices.deny", "b 8:* rw".to_string())
            ]
        );
        // Allowing back part of the wildcard exception is what v1 cannot do.
        let e = p
            .apply(&rule(true, Block, Some(8), Some(1), "r"))
            .unwrap_err();
        assert!(matches!(e, DeviceError::Hole { .. }), "{e}");
        // The exact exception can be narrowed and removed.
        p.apply(&rule(true, Block, Some(8), None, "w")).unwrap();
        assert!(p.permits(Block, 8, 1, Access::WRITE));
        assert!(!p.permits(Block, 8, 1, Access::READ));
        p.apply(&rule(true, Block, Some(8), None, "rwm")).unwrap();
        assert!(p.allows_everything());
    }

    #[test]
    fn allow_list_exceptions_merge() {
        let p = DevicePolicy::from_rules(&[
            all(false),
            rule(true, Char, Some(4), Some(1), "r"),
            rule(true, Char, Some(4), Some(1), "w"),
            rule(false, Char, Some(1), Some(3), "w"),
        ]);
        // Removing w from 1:3 before the defaults add it back.
        let p = p.unwrap();
        assert!(p.permits(Char, 4, 1, Access(6)));
        assert!(p.permits(Char, 1, 3, Access::WRITE), "defaults come after");
        // A later `a` resets earlier rules.
        let p = DevicePolicy::from_rules(&[rule(true, Char, Some(4), Some(1), "rw"), all(false)])
            .unwrap();
        assert!(!p.permits(Char, 4, 1, Access::READ));
    }

    #[test]
    fn spec_rules_are_parsed() {
        let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
            serde_json::from_value(serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"},
                {"allow": true, "type": "b", "major": 7, "access": "r"},
                {"allow": true, "type": "c", "major": -1, "minor": -1, "access": "m"}
            ]))
            .unwrap();
        let r = rules_from_spec(&rules).unwrap();
        assert_eq!(r[0], all(false));
        assert_eq!(r[1], rule(true, Char, Some(10), Some(229), "rw"));
        assert_eq!(r[2], rule(true, Block, Some(7), None, "r"));
        assert_eq!(r[3], rule(true, Char, None, None, "m"));

        for (bad, needle) in [
            (serde_json::json!({"allow": true, "type": "c"}), "empty"),
            (
                serde_json::json!({"allow": true, "type": "p", "access": "r"}),
                "type",
            ),
            (
                serde_json::json!({"allow": true, "type": "c", "major": -5, "access": "r"}),
                "major -5",
            ),
            (
                serde_json::json!({"allow": true, "type": "c", "minor": 4294967296i64, "access": "r"}),
                "minor",
            ),
        ] {
            let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
                serde_json::from_value(serde_json::json!([bad])).unwrap();
            let e = rules_from_spec(&rules).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("devices[0]"), "{e}");
        }
    }
}
