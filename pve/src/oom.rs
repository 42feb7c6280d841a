//! `oom_score_adj` for the CT's init.
//!
//! Lowering `oom_score_adj` below the writer's own value needs `CAP_SYS_RESOURCE`, which a
//! daemon in a container or a restricted host often lacks; the kubelet still asks for -998 for
//! guaranteed pods. containerd's `restrict_oom_score_adj` raises such requests to the daemon's
//! own value instead of failing; so do we, always (a lower value could not be set anyway).

use std::io;

pub const MIN: i32 = -1000;
pub const MAX: i32 = 1000;

/// The value to set: `requested` within the kernel's range, but never below `current` (the
/// daemon's own value).
pub fn clamp(requested: i32, current: i32) -> i32 {
    requested.clamp(MIN, MAX).max(current.clamp(MIN, MAX))
}

/// The calling process's own `oom_score_adj`.
pub fn current() -> io::Result<i32> {
    let text = std::fs::read_to_string("/proc/self/oom_score_adj")?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/self/oom_score_adj holds `{}`", text.trim()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_than_own_value_is_raised_to_it() {
        assert_eq!(clamp(-998, 0), 0);
        assert_eq!(clamp(-998, -500), -500);
        assert_eq!(clamp(-1000, -999), -999);
    }

    #[test]
    fn higher_values_pass_unchanged() {
        assert_eq!(clamp(1000, 0), 1000);
        assert_eq!(clamp(500, -999), 500);
        assert_eq!(clamp(0, 0), 0);
        assert_eq!(clamp(-998, -998), -998);
    }

    #[test]
    fn out_of_range_values_are_pulled_into_range() {
        assert_eq!(clamp(5000, 0), 1000);
        assert_eq!(clamp(i32::MIN, -2000), -1000);
        assert_eq!(clamp(-2000, i32::MIN), -1000);
    }

    #[test]
    fn own_value_is_readable() {
        let own = current().unwrap();
        assert!((MIN..=MAX).contains(&own));
    }
}
