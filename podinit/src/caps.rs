//! Capability numbers (linux/capability.h) for the OCI spec's capability names.

use oci_spec::runtime::{Capabilities, Capability};

/// The kernel's number for a capability.
pub fn number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// Every capability the OCI spec names (Linux 5.9 and later), lowest number first.
pub const ALL: [Capability; 41] = {
    use Capability::*;
    [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ]
};

/// The capabilities whose bits are set in `mask` (bits of numbers the spec has no name for
/// are left out).
pub fn set_of(mask: u64) -> std::collections::HashSet<Capability> {
    ALL.iter()
        .copied()
        .filter(|c| mask & (1u64 << number(*c)) != 0)
        .collect()
}

/// A capability set as a bit mask (bit n = capability n).
pub fn mask(set: Option<&Capabilities>) -> u64 {
    set.map(|s| s.iter().fold(0u64, |m, c| m | (1u64 << number(*c))))
        .unwrap_or(0)
}

/// The capability numbers set in `mask`, lowest first.
pub fn numbers(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |n| mask & (1u64 << n) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_kernel_header() {
        assert_eq!(number(Capability::Chown), 0);
        assert_eq!(number(Capability::NetBindService), 10);
        assert_eq!(number(Capability::SysAdmin), 21);
        assert_eq!(number(Capability::Setfcap), 31);
        assert_eq!(number(Capability::CheckpointRestore), 40);
    }

    #[test]
    fn masks() {
        let set: Capabilities = [Capability::Chown, Capability::Kill, Capability::Bpf]
            .into_iter()
            .collect();
        let m = mask(Some(&set));
        assert_eq!(m, 1 | (1 << 5) | (1 << 39));
        assert_eq!(numbers(m).collect::<Vec<_>>(), vec![0, 5, 39]);
        assert_eq!(mask(None), 0);
    }

    #[test]
    fn all_is_in_kernel_order_and_round_trips() {
        for (n, c) in ALL.iter().enumerate() {
            assert_eq!(number(*c), n as u32);
        }
        let set = set_of(0x1ff_feff_ffff);
        assert_eq!(set.len(), 40);
        assert!(!set.contains(&Capability::SysResource));
        let all: Capabilities = ALL.iter().copied().collect();
        assert_eq!(set_of(mask(Some(&all))).len(), 41);
        assert_eq!(set_of(1 << 63), Default::default());
    }
}
