//! The size, allocated and free bytes of the pool under the zfs layer store.
//!
//! OpenZFS (Proxmox) prints exact numbers with `zpool list -Hp`; zfs-fuse has no `-p` and
//! prints sizes like `7.94G`, which are read as binary units (three significant digits).

use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("running zpool: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("zpool list {pool}: {stderr}")]
    Failed { pool: String, stderr: String },
    #[error("zpool list {pool}: unreadable output {output:?}")]
    Parse { pool: String, output: String },
}

/// The pool a dataset lives in.
pub fn pool_of(dataset: &str) -> &str {
    dataset.split('/').next().unwrap_or(dataset)
}

pub fn usage(pool: &str) -> Result<PoolUsage, PoolError> {
    let run = |args: &[&str]| Command::new("zpool").args(args).output();
    let exact = run(&["list", "-Hp", "-o", "size,allocated,free", pool])?;
    let out = if exact.status.success() {
        exact
    } else {
        let human = run(&["list", "-H", "-o", "size,allocated,free", pool])?;
        if !human.status.success() {
            return Err(PoolError::Failed {
                pool: pool.to_string(),
                stderr: String::from_utf8_lossy(&human.stderr).trim().to_string(),
            });
        }
        human
    };
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| PoolError::Parse {
        pool: pool.to_string(),
        output: text.trim().to_string(),
    })
}

/// `size\tallocated\tfree` as exact numbers or with a unit suffix.
pub fn parse(text: &str) -> Option<PoolUsage> {
    let mut f = text.lines().next()?.split_whitespace().map(parse_size);
    let usage = PoolUsage {
        size: f.next()??,
        allocated: f.next()??,
        free: f.next()??,
    };
    f.next().is_none().then_some(usage)
}

/// `123`, `128K`, `8.73M`, `7.94G`, `1.5T`, ... (binary units, as zfs prints them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.is_ascii() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let (num, unit) = s.split_at(s.len() - 1);
    let shift = match unit {
        "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_and_human_output() {
        assert_eq!(
            parse("8522825728\t9154560\t8513671168\n"),
            Some(PoolUsage {
                size: 8_522_825_728,
                allocated: 9_154_560,
                free: 8_513_671_168
            })
        );
        let u = parse("7.94G\t8.73M\t7.93G\n").unwrap();
        assert_eq!(u.allocated, (8.73 * 1048576.0) as u64);
        assert_eq!(u.size, (7.94 * 1073741824.0) as u64);
        assert_eq!(parse_size("128K"), Some(131_072));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "1X", "G", "-1G", "1.2.3G", "1e5G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse("1\t2\n"), None);
        assert_eq!(parse("1\t2\t3\t4\n"), None);
        assert_eq!(pool_of("rpool/pvecri/store"), "rpool");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,60}") {
            let _ = parse(&text);
            let _ = parse_size(&text);
        }
    }
}
