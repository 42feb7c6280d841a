//! `Localhost` seccomp profiles: a JSON file on the node, in the format Docker, containerd
//! and CRI-O read (the OCI `linux.seccomp` section plus `archMap`, `name`, and `includes` /
//! `excludes` by capability, architecture and kernel version), turned into the OCI section
//! for one container as containerd does. podinit's compiler then builds the filter: the
//! profile is compiled here too, so that one it cannot apply is refused at CreateContainer,
//! naming the file and what is wrong with it.
//!
//! The file is untrusted input: it is read up to a size limit and parsed without panicking
//! on any content (see the property tests).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

/// Far more than any real profile (Docker's default is about 20 KB).
const MAX_PROFILE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read: a problem of the node (gRPC FailedPrecondition).
    #[error("seccomp profile {path}: {reason}")]
    Unreadable { path: String, reason: String },
    /// The file is no profile pvecri can apply (gRPC InvalidArgument).
    #[error("seccomp profile {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The file as Docker and containerd read it. Fields no runtime knows are ignored, as Go's
/// JSON decoder does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<String>,
    listener_path: Option<String>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// What the profile is applied for: the container's bounding set and this machine.
pub struct Target<'a> {
    pub caps: &'a HashSet<Capability>,
    /// Go's name of the architecture (`amd64`, `arm64`), as profiles' `arches` use it.
    pub arch: &'a str,
    /// The running kernel's release (`6.18.4-...`), for `minKernel`.
    pub kernel: &'a str,
}

impl Target<'_> {
    /// This machine, for a container with `caps`.
    pub fn host(caps: &HashSet<Capability>) -> Target<'_> {
        Target {
            caps,
            arch: go_arch(),
            kernel: kernel_release(),
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn kernel_release() -> &'static str {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE.get_or_init(|| {
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// Reads the profile at `path` (absolute, on the node) and makes the container's section;
/// `None` for a profile that asks for no filter (no default action and no rules, as in
/// containerd).
pub fn load(path: &str, target: &Target<'_>) -> Result<Option<LinuxSeccomp>, ProfileError> {
    let unreadable = |reason: String| ProfileError::Unreadable {
        path: path.to_string(),
        reason,
    };
    if !Path::new(path).is_absolute() {
        return Err(ProfileError::Invalid {
            path: path.to_string(),
            reason: "a Localhost profile must be an absolute path on the node".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    if !file
        .metadata()
        .map_err(|e| unreadable(e.to_string()))?
        .is_file()
    {
        return Err(unreadable("not a regular file".into()));
    }
    let mut data = Vec::new();
    file.take(MAX_PROFILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| unreadable(e.to_string()))?;
    if data.len() as u64 > MAX_PROFILE {
        return Err(ProfileError::Invalid {
            path: path.to_string(),
            reason: format!("larger than {MAX_PROFILE} bytes"),
        });
    }
    parse(&data, target).map_err(|reason| ProfileError::Invalid {
        path: path.to_string(),
        reason,
    })
}

/// The profile text made into the OCI section for `target`, and compiled once to be sure
/// podinit can apply it.
pub fn parse(data: &[u8], target: &Target<'_>) -> Result<Option<LinuxSeccomp>, String> {
    let profile: Profile = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let Some(section) = convert(profile, target)? else {
        return Ok(None);
    };
    podinit::seccomp::compile(&section).map_err(|e| e.to_string())?;
    Ok(Some(section))
}

fn convert(p: Profile, target: &Target<'_>) -> Result<Option<LinuxSeccomp>, String> {
    if p.default_action.is_empty() && p.syscalls.is_empty() {
        return Ok(None);
    }
    if p.default_action.is_empty() {
        return Err("defaultAction is missing".into());
    }
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err("both architectures and archMap are given; use one".into());
    }
    let mut section = LinuxSeccomp::default();
    section.set_default_action(action(&p.default_action)?);
    section.set_default_errno_ret(p.default_errno_ret);
    let native = native_seccomp_arch(target.arch);
    let arch_names: Vec<&String> = if p.arch_map.is_empty() {
        p.architectures.iter().collect()
    } else {
        // Only this machine's entry counts (containerd's rule).
        p.arch_map
            .iter()
            .find(|m| Some(m.architecture.as_str()) == native)
            .map(|m| {
                std::iter::once(&m.architecture)
                    .chain(&m.sub_architectures)
                    .collect()
            })
            .unwrap_or_default()
    };
    if !arch_names.is_empty() {
        let arches = arch_names
            .iter()
            .map(|a| arch(a))
            .collect::<Result<Vec<_>, _>>()?;
        section.set_architectures(Some(arches));
    }
    if !p.flags.is_empty() {
        return Err(format!("flags {:?} are not supported", p.flags));
    }
    if p.listener_path.as_deref().is_some_and(|l| !l.is_empty()) {
        return Err("a listener (SCMP_ACT_NOTIFY) is not supported".into());
    }
    let mut rules = Vec::new();
    for (i, call) in p.syscalls.iter().enumerate() {
        let at = |e: String| format!("syscalls[{i}]: {e}");
        if !applies(call, target).map_err(at)? {
            continue;
        }
        let names = match (call.name.is_empty(), call.names.is_empty()) {
            (false, false) => return Err(at("both name and names are given; use one".into())),
            (false, true) => vec![call.name.clone()],
            (true, _) => call.names.clone(),
        };
        let mut rule = LinuxSyscall::default();
        rule.set_names(names);
        rule.set_action(action(&call.action).map_err(at)?);
        rule.set_errno_ret(call.errno_ret);
        if !call.args.is_empty() {
            let args = call
                .args
                .iter()
                .map(|a| {
                    LinuxSeccompArgBuilder::default()
                        .index(a.index)
                        .value(a.value)
                        .value_two(a.value_two)
                        .op(operator(&a.op)?)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(at)?;
            rule.set_args(Some(args));
        }
        rules.push(rule);
    }
    section.set_syscalls(Some(rules));
    Ok(Some(section))
}

/// containerd's filtering: an excluded architecture or capability, or a kernel at or above
/// an excluded version, drops the rule; so does an included one that is missing.
fn applies(call: &Syscall, target: &Target<'_>) -> Result<bool, String> {
    let has_cap = |name: &String| cap(name).is_some_and(|c| target.caps.contains(&c));
    let ex = &call.excludes;
    if ex.arches.iter().any(|a| a == target.arch) || ex.caps.iter().any(has_cap) {
        return Ok(false);
    }
    if let Some(v) = &ex.min_kernel
        && kernel_at_least(target.kernel, v)?
    {
        return Ok(false);
    }
    let inc = &call.includes;
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch) {
        return Ok(false);
    }
    if !inc.caps.iter().all(has_cap) {
        return Ok(false);
    }
    if let Some(v) = &inc.min_kernel
        && !kernel_at_least(target.kernel, v)?
    {
        return Ok(false);
    }
    Ok(true)
}

/// `CAP_SYS_ADMIN` (or `SYS_ADMIN`) as a capability; `None` for a name Linux does not have.
fn cap(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    Capability::from_str(upper.strip_prefix("CAP_").unwrap_or(&upper)).ok()
}

/// `major.minor` of a release string (`6.18.4-foo` -> (6, 18)).
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

fn kernel_at_least(running: &str, wanted: &str) -> Result<bool, String> {
    let want = major_minor(wanted).ok_or_else(|| format!("minKernel {wanted:?} is no version"))?;
    // An unknown running kernel is taken as new: rules for old kernels are the exceptions.
    Ok(major_minor(running).is_none_or(|have| have >= want))
}

fn native_seccomp_arch(go: &str) -> Option<&'static str> {
    match go {
        "amd64" => Some("SCMP_ARCH_X86_64"),
        "arm64" => Some("SCMP_ARCH_AARCH64"),
        "386" => Some("SCMP_ARCH_X86"),
        _ => None,
    }
}

fn action(name: &str) -> Result<LinuxSeccompAction, String> {
    LinuxSeccompAction::from_str(name).map_err(|_| format!("unknown action {name:?}"))
}

fn operator(name: &str) -> Result<LinuxSeccompOperator, String> {
    LinuxSeccompOperator::from_str(name).map_err(|_| format!("unknown operator {name:?}"))
}

fn arch(name: &str) -> Result<Arch, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| format!("unknown architecture {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn target(caps: &HashSet<Capability>) -> Target<'_> {
        Target {
            caps,
            arch: "amd64",
            kernel: "6.18.4-test",
        }
    }

    fn parse_json(
        v: serde_json::Value,
        caps: &HashSet<Capability>,
    ) -> Result<Option<LinuxSeccomp>, String> {
        parse(v.to_string().as_bytes(), &target(caps))
    }

    fn rule_names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn critest_profiles() {
        let none = HashSet::new();
        let s = parse_json(
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}),
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(rule_names(&s), ["chmod", "fchmodat"]);
        assert_eq!(
            s.syscalls().as_ref().unwrap()[0].action(),
            LinuxSeccompAction::ScmpActErrno
        );
    }

    #[test]
    fn includes_and_excludes_as_containerd() {
        let admin: HashSet<Capability> = [Capability::SysAdmin].into();
        let none = HashSet::new();
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
                {"names": ["sync_file_range2"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["ppc64le"]}},
                {"names": ["io_pgetevents"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.18"}},
                {"names": ["futex_waitv"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.1"}},
                {"name": "getpid", "action": "SCMP_ACT_ALLOW", "comment": "the old single name"}
            ]
        });
        let s = parse_json(profile.clone(), &none).unwrap().unwrap();
        assert_eq!(
            s.architectures().as_ref().unwrap(),
            &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            rule_names(&s),
            ["read", "clone", "arch_prctl", "io_pgetevents", "getpid"]
        );
        let s = parse_json(profile, &admin).unwrap().unwrap();
        assert_eq!(
            rule_names(&s),
            ["read", "mount", "arch_prctl", "io_pgetevents", "getpid"]
        );
    }

    #[test]
    fn what_is_wrong_is_said() {
        let none = HashSet::new();
        for (profile, needle) in [
            (
                json!({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
                "defaultAction",
            ),
            (json!({"defaultAction": "SCMP_ACT_FLY"}), "SCMP_ACT_FLY"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                    "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}),
                "archMap",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
                "SCMP_ARCH_VAX",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_S390X"]}),
                "do not include",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}),
                "syscalls[0]",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}),
                "SCMP_CMP_ABOUT",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
                "index 9",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"}),
                "listener",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}),
                "flags",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}]}),
                "minKernel",
            ),
            (json!([1, 2]), "not JSON"),
        ] {
            let e = parse_json(profile.clone(), &none).unwrap_err();
            assert!(e.contains(needle), "{profile}: {e}");
        }
        // Neither a default action nor rules: no filter, as in containerd.
        assert_eq!(parse_json(json!({}), &none).unwrap(), None);
    }

    #[test]
    fn files_are_named_in_errors() {
        let none = HashSet::new();
        let t = target(&none);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let e = load(missing.to_str().unwrap(), &t).unwrap_err();
        assert!(matches!(e, ProfileError::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("missing.json"), "{e}");
        let e = load(dir.path().to_str().unwrap(), &t).unwrap_err();
        assert!(matches!(e, ProfileError::Unreadable { .. }), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let e = load(bad.to_str().unwrap(), &t).unwrap_err();
        assert!(
            matches!(e, ProfileError::Invalid { .. }) && e.to_string().contains("bad.json"),
            "{e}"
        );
        let e = load("relative.json", &t).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        assert!(load(good.to_str().unwrap(), &t).unwrap().is_some());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(major_minor("6.18.4-fc-v1252"), Some((6, 18)));
        assert_eq!(major_minor("5"), Some((5, 0)));
        assert_eq!(major_minor("x.1"), None);
        assert!(kernel_at_least("6.18.4", "4.8").unwrap());
        assert!(!kernel_at_least("4.7.0", "4.8").unwrap());
        assert!(
            kernel_at_least("4.10", "4.8").unwrap(),
            "minor 10 is above 8"
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            prop::sample::select(vec![
                "SCMP_ACT_ALLOW",
                "SCMP_ACT_ERRNO",
                "SCMP_ACT_KILL",
                "SCMP_ACT_TRACE",
                "SCMP_ACT_NOTIFY",
                "SCMP_CMP_EQ",
                "SCMP_CMP_GT",
                "SCMP_CMP_MASKED_EQ",
                "SCMP_ARCH_X86_64",
                "SCMP_ARCH_X86",
                "amd64",
                "CAP_SYS_ADMIN",
                "4.8",
                "read",
                "chmod",
                "clone",
                "nope",
                "",
            ])
            .prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        let keys = prop::sample::select(vec![
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "archMap",
            "architecture",
            "subArchitectures",
            "flags",
            "listenerPath",
            "syscalls",
            "name",
            "names",
            "action",
            "errnoRet",
            "args",
            "index",
            "value",
            "valueTwo",
            "op",
            "includes",
            "excludes",
            "caps",
            "arches",
            "minKernel",
            "comment",
        ]);
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    serde_json::Value::Object(
                        kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let caps = HashSet::new();
            let _ = parse(&data, &target(&caps));
        }

        /// JSON shaped like profiles, with the right keys and wrong values: an answer, never a
        /// panic; what is accepted compiles.
        #[test]
        fn profile_shaped_json_never_panics(v in json_value(), admin in any::<bool>()) {
            let caps: HashSet<Capability> =
                if admin { [Capability::SysAdmin].into() } else { HashSet::new() };
            if let Ok(Some(section)) = parse(v.to_string().as_bytes(), &target(&caps)) {
                prop_assert!(podinit::seccomp::compile(&section).is_ok());
            }
        }

        /// Well-formed profiles with random rules: accepted exactly when every part is one
        /// podinit supports.
        #[test]
        fn well_formed_profiles_compile(
            default in prop::sample::select(vec!["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG"]),
            rules in prop::collection::vec((
                prop::collection::vec(prop::sample::select(vec!["read", "chmod", "mount", "ugetrlimit", "x"]), 1..4),
                prop::sample::select(vec!["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"]),
                prop::option::of(0u32..200),
                prop::collection::vec((0usize..6, any::<u64>(), any::<u64>(),
                    prop::sample::select(vec!["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                              "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"])), 0..4),
            ), 0..40),
        ) {
            let syscalls: Vec<serde_json::Value> = rules.iter().map(|(names, action, errno, args)| json!({
                "names": names, "action": action, "errnoRet": errno,
                "args": args.iter().map(|(i, v, v2, op)| json!({"index": i, "value": v, "valueTwo": v2, "op": op})).collect::<Vec<_>>(),
            })).collect();
            let caps = HashSet::new();
            let r = parse_json(json!({"defaultAction": default, "syscalls": syscalls}), &caps);
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }
}
