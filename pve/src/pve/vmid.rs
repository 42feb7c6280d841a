//! Choosing vmids for pod CTs.
//!
//! Every guest of the cluster (CTs and VMs, on any node) is listed in pmxcfs's
//! `/etc/pve/.vmlist`; `/cluster/nextid` answers from the same list but reserves nothing. So
//! pvecri takes the lowest id of its range that the list does not hold and that no create of
//! its own is using, and a create that loses a race with another guest fails ("already
//! exists") and is retried with the next id.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::config::VmidRange;

pub const VMLIST_PATH: &str = "/etc/pve/.vmlist";

#[derive(Debug, thiserror::Error)]
pub enum VmlistError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not Proxmox's vmlist: {reason}")]
    Parse { path: String, reason: String },
}

/// Every vmid in the cluster's vmlist.
pub fn parse_vmlist(text: &str) -> Result<BTreeSet<u32>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v.get("version").is_none() {
        return Err("no `version`".into());
    }
    // A cluster without guests has no `ids` at all.
    let Some(ids) = v.get("ids") else {
        return Ok(BTreeSet::new());
    };
    let ids = ids.as_object().ok_or("`ids` is not an object")?;
    ids.keys()
        .map(|k| {
            k.parse::<u32>()
                .map_err(|_| format!("`{}` is not a vmid", k.escape_debug()))
        })
        .collect()
}

pub fn read_vmlist(path: &Path) -> Result<BTreeSet<u32>, VmlistError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| VmlistError::Read {
        path: shown.clone(),
        error,
    })?;
    parse_vmlist(&text).map_err(|reason| VmlistError::Parse {
        path: shown,
        reason,
    })
}

/// The vmids creates of this daemon are using right now.
#[derive(Debug, Default, Clone)]
pub struct Allocator {
    in_flight: Arc<Mutex<BTreeSet<u32>>>,
}

/// A vmid held for one create; dropping it frees it for the next.
#[derive(Debug)]
pub struct Reservation {
    pub vmid: u32,
    in_flight: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.vmid);
    }
}

impl Allocator {
    /// The lowest id of `range` that is in none of `taken` (the cluster's guests, the CTs
    /// pvecri knows, ids that just failed) and not held by another create.
    pub fn reserve(&self, range: VmidRange, taken: &[&BTreeSet<u32>]) -> Option<Reservation> {
        let mut held = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let vmid = (range.first..=range.last)
            .find(|id| !held.contains(id) && !taken.iter().any(|set| set.contains(id)))?;
        held.insert(vmid);
        Some(Reservation {
            vmid,
            in_flight: self.in_flight.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VMLIST: &str = r#"{
"version": 4,
"ids": {
"900100": { "node": "pve1", "type": "lxc", "version": 4 },
"101": { "node": "pve2", "type": "qemu", "version": 2 }}

}
"#;

    #[test]
    fn vmlist_holds_every_guest() {
        let ids = parse_vmlist(VMLIST).unwrap();
        assert_eq!(ids, BTreeSet::from([101, 900_100]));
        assert_eq!(
            parse_vmlist("{\n\"version\": 0\n\n}\n").unwrap(),
            BTreeSet::new()
        );
        assert!(parse_vmlist("{\"version\": 1, \"ids\": {\"x\": {}}}").is_err());
        assert!(parse_vmlist("{\"ids\": {}}").is_err());
        assert!(parse_vmlist("").is_err());
    }

    #[test]
    fn lowest_free_id_not_held_twice() {
        let range = VmidRange::new(900_000, 900_003).unwrap();
        let used = BTreeSet::from([900_000, 900_002]);
        let a = Allocator::default();
        let first = a.reserve(range, &[&used]).unwrap();
        assert_eq!(first.vmid, 900_001);
        let second = a.reserve(range, &[&used]).unwrap();
        assert_eq!(second.vmid, 900_003);
        assert!(a.reserve(range, &[&used]).is_none(), "range full");
        drop(first);
        assert_eq!(a.reserve(range, &[&used]).unwrap().vmid, 900_001);
        let failed = BTreeSet::from([900_001]);
        assert!(a.reserve(range, &[&used, &failed]).is_none());
    }

    proptest! {
        #[test]
        fn vmlist_parser_never_panics(text in ".{0,200}") {
            let _ = parse_vmlist(&text);
        }

        #[test]
        fn reserved_ids_are_in_range_and_free(
            used in proptest::collection::btree_set(900_000u32..900_020, 0..20),
            n in 1usize..25,
        ) {
            let range = VmidRange::new(900_000, 900_019).unwrap();
            let a = Allocator::default();
            let mut got = Vec::new();
            for _ in 0..n {
                match a.reserve(range, &[&used]) {
                    Some(r) => got.push(r),
                    None => break,
                }
            }
            let ids: BTreeSet<u32> = got.iter().map(|r| r.vmid).collect();
            prop_assert_eq!(ids.len(), got.len(), "an id was handed out twice");
            for id in &ids {
                prop_assert!(range.contains(*id) && !used.contains(id));
            }
            prop_assert_eq!(got.len(), n.min(20 - used.len()));
        }
    }
}
