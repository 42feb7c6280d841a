//! Running the `zfs` command and reading its property listings.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::StoreError;

/// Dataset name -> property -> value, from `zfs get -H -p -o name,property,value`.
pub(crate) type Listing = BTreeMap<String, BTreeMap<String, String>>;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn command_line(args: &[&str]) -> String {
    format!("zfs {}", args.join(" "))
}

fn exec(args: &[&str]) -> Result<Output, StoreError> {
    let out = Command::new("zfs")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StoreError::io(format!("running `{}`", command_line(args)), e))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn failed(args: &[&str], stderr: String) -> StoreError {
    StoreError::Zfs {
        command: command_line(args),
        stderr,
    }
}

/// Runs `zfs args...`; its stdout on success.
pub(crate) fn run(args: &[&str]) -> Result<String, StoreError> {
    let out = exec(args)?;
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(failed(args, out.stderr))
    }
}

/// Like [`run`], retrying for about ten seconds while the dataset is busy (a mount still
/// in use, or zfs-fuse still flushing or finishing a mount it just made).
pub(crate) fn run_retry_busy(args: &[&str]) -> Result<String, StoreError> {
    let mut delay = Duration::from_millis(50);
    loop {
        let out = exec(args)?;
        if out.ok {
            return Ok(out.stdout);
        }
        if !out.stderr.contains("busy") || delay > Duration::from_secs(5) {
            return Err(failed(args, out.stderr));
        }
        std::thread::sleep(delay);
        delay *= 2;
    }
}

pub(crate) fn is_missing(e: &StoreError) -> bool {
    matches!(e, StoreError::Zfs { stderr, .. } if stderr.contains("does not exist"))
}

fn parse_listing(stdout: &str) -> Listing {
    let mut listing = Listing::new();
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(name), Some(prop), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        listing
            .entry(name.to_owned())
            .or_default()
            .insert(prop.to_owned(), value.to_owned());
    }
    listing
}

/// `zfs get -H -p -o name,property,value <props> <targets>` in one process. Targets
/// that do not exist are left out of the listing rather than failing it.
pub(crate) fn get(
    props: &[&str],
    targets: &[&str],
    recursive: Option<u32>,
) -> Result<Listing, StoreError> {
    let props = props.join(",");
    let depth;
    let mut args = vec!["get", "-H", "-p"];
    if let Some(d) = recursive {
        args.push("-r");
        if d > 0 {
            depth = d.to_string();
            args.extend(["-d", depth.as_str()]);
        }
    }
    args.extend(["-o", "name,property,value", props.as_str()]);
    args.extend(targets);
    let out = exec(&args)?;
    let only_missing = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(|l| l.contains("dataset does not exist"));
    if !out.ok && !only_missing {
        return Err(failed(&args, out.stderr));
    }
    Ok(parse_listing(&out.stdout))
}

/// A user property value meaning "none" (empty values are not allowed).
pub(crate) const NONE: &str = "none";

/// Reads a property that `zfs get` shows as `-` when unset.
pub(crate) fn prop<'a>(listing: &'a Listing, name: &str, prop: &str) -> Option<&'a str> {
    listing
        .get(name)?
        .get(prop)
        .map(String::as_str)
        .filter(|v| *v != "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_parsed_per_dataset() {
        let l = parse_listing(
            "p/a\tused\t100\np/a\tpvecri:diffid\tsha256:x\np/a@layer\tused\t0\np/b\torigin\t-\nbroken line\n",
        );
        assert_eq!(prop(&l, "p/a", "used"), Some("100"));
        assert_eq!(prop(&l, "p/a", "pvecri:diffid"), Some("sha256:x"));
        assert_eq!(prop(&l, "p/a@layer", "used"), Some("0"));
        assert_eq!(prop(&l, "p/b", "origin"), None);
        assert_eq!(l.len(), 3);
    }
}
