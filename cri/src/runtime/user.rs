//! Resolving a container's user against the image's own /etc/passwd and /etc/group, read
//! confined to the container's root: a symlinked /etc/passwd in an image must not make the
//! daemon read a host file.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use k8s_cri::v1::SupplementalGroupsPolicy;

use super::spec::ResolvedUser;

/// Bigger than any real passwd file; a bigger one is not read.
const MAX_FILE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("reading {path} in the container root: {error}")]
    Read { path: String, error: String },
    #[error("run_as_group {0} is set without run_as_user or run_as_username: a group needs a user")]
    GroupWithoutUser(u32),
    #[error("supplemental_groups_policy {0} is not one pvecri knows (Merge or Strict)")]
    UnknownGroupsPolicy(i32),
}

/// Reads `rel` (relative to `root`) with every path component resolved inside `root`.
/// A missing file is `None`.
pub fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>, UserError> {
    let err = |e: String| UserError::Read {
        path: rel.to_string(),
        error: e,
    };
    let dir = std::fs::File::open(root).map_err(|e| err(e.to_string()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_fd(), rel, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata().map_err(|e| err(e.to_string()))?.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    Ok(Some(text))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0].to_string(),
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// What the request and the image say about the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    /// securityContext.runAsUser
    pub run_as_user: Option<u32>,
    /// securityContext.runAsUserName (Windows in Kubernetes, honoured if given)
    pub run_as_username: Option<String>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    /// securityContext.supplementalGroupsPolicy: `Merge` (0, the default) adds the user's
    /// groups from the image's /etc/group; `Strict` (1) does not.
    pub groups_policy: i32,
    /// The image config's `User`: `user[:group]`, names or numbers.
    pub image_user: String,
}

impl UserRequest {
    /// containerd's and CRI-O's rule: a group alone names no user to run as, and taking the
    /// image's user with the request's group would mix two sources, so it is refused.
    pub fn check(&self) -> Result<(), UserError> {
        if SupplementalGroupsPolicy::try_from(self.groups_policy).is_err() {
            return Err(UserError::UnknownGroupsPolicy(self.groups_policy));
        }
        match self.run_as_group {
            Some(g) if self.run_as_user.is_none() && self.run_as_username.is_none() => {
                Err(UserError::GroupWithoutUser(g))
            }
            _ => Ok(()),
        }
    }
}

/// Resolves to numbers as containerd does: a numeric user needs no passwd entry (its gid is
/// then its passwd gid if there is an entry, else 0); a name must exist; under the `Merge`
/// policy the user's groups from /etc/group come before the supplemental ones (`Strict`
/// leaves them out), and the primary gid heads the list unless it is in it already.
pub fn resolve(
    req: &UserRequest,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let (image_user, image_group) = match req.image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (req.image_user.as_str(), None),
    };
    let (uid, name, mut gid) = if let Some(uid) = req.run_as_user {
        let entry = passwd_entries(passwd).find(|e| e.uid == uid);
        (
            uid,
            entry.as_ref().map(|e| e.name.clone()),
            entry.map_or(0, |e| e.gid),
        )
    } else {
        let wanted = req.run_as_username.as_deref().unwrap_or(image_user);
        if wanted.is_empty() {
            let entry = passwd_entries(passwd).find(|e| e.uid == 0);
            (0, entry.map(|e| e.name).or(Some("root".into())), 0)
        } else if let Ok(uid) = wanted.parse::<u32>() {
            let entry = passwd_entries(passwd).find(|e| e.uid == uid);
            (
                uid,
                entry.as_ref().map(|e| e.name.clone()),
                entry.map_or(0, |e| e.gid),
            )
        } else {
            let e = passwd_entries(passwd)
                .find(|e| e.name == wanted)
                .ok_or_else(|| UserError::UnknownUser(wanted.to_string()))?;
            (e.uid, Some(e.name), e.gid)
        }
    };
    if let Some(g) = req.run_as_group {
        gid = g;
    } else if let Some(g) = image_group
        .filter(|g| !g.is_empty())
        .filter(|_| req.run_as_user.is_none())
    {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    let mut additional: Vec<u32> = Vec::new();
    let merge = req.groups_policy != SupplementalGroupsPolicy::Strict as i32;
    if let Some(name) = name.as_ref().filter(|_| merge) {
        // containerd: groups listing the user, but not the one named after it.
        for g in
            group_entries(group).filter(|g| &g.name != name && g.members.iter().any(|m| m == name))
        {
            if !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for g in &req.supplemental_groups {
        if !additional.contains(g) {
            additional.push(*g);
        }
    }
    if !additional.contains(&gid) {
        additional.insert(0, gid);
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// Reads passwd and group from the container root and resolves.
pub fn resolve_in_root(root: &Path, req: &UserRequest) -> Result<ResolvedUser, UserError> {
    let passwd = read_in_root(root, "etc/passwd")?;
    let group = read_in_root(root, "etc/group")?;
    resolve(req, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1001:\naudio:x:29:app\n";

    fn req(image_user: &str) -> UserRequest {
        UserRequest {
            image_user: image_user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_numbers_and_groups() {
        let r = resolve(&req("app"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![1001, 10, 29]
            }
        );
        let r = resolve(&req("1000:10"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 10));
        let r = resolve(&req("4242"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        let r = resolve(&req("app:audio"), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(r.gid, 29);
        let r = resolve(&req(""), None, None).unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (0, 0, vec![0]));
    }

    #[test]
    fn request_overrides_the_image() {
        let r = resolve(
            &UserRequest {
                run_as_user: Some(65534),
                run_as_group: Some(7),
                supplemental_groups: vec![3],
                image_user: "app".into(),
                ..Default::default()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 65534,
                gid: 7,
                additional_gids: vec![7, 3]
            }
        );
    }

    /// critest's image: uid 1000 in group 1000, and a member of 50000 in /etc/group.
    #[test]
    fn merge_and_strict_groups_policies() {
        let passwd = "root:x:0:0::/:/bin/sh\ndefault-user:x:1000:1000::/home:/bin/sh\n";
        let group = "root:x:0:\ndefault-user:x:1000:default-user\n\
                     group-defined-in-image:x:50000:default-user\n";
        let mut r = UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: vec![1234],
            ..Default::default()
        };
        let merged = resolve(&r, Some(passwd), Some(group)).unwrap();
        assert_eq!((merged.uid, merged.gid), (1000, 1000));
        assert_eq!(merged.additional_gids, vec![1000, 50000, 1234]);
        r.groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let strict = resolve(&r, Some(passwd), Some(group)).unwrap();
        assert_eq!(strict.additional_gids, vec![1000, 1234]);
        r.groups_policy = 7;
        assert_eq!(r.check(), Err(UserError::UnknownGroupsPolicy(7)));
    }

    #[test]
    fn a_group_needs_a_user() {
        let group_only = UserRequest {
            run_as_group: Some(1002),
            image_user: "app".into(),
            ..Default::default()
        };
        assert_eq!(group_only.check(), Err(UserError::GroupWithoutUser(1002)));
        assert!(group_only.check().unwrap_err().to_string().contains("1002"));
        let with_uid = UserRequest {
            run_as_user: Some(0),
            ..group_only.clone()
        };
        assert_eq!(with_uid.check(), Ok(()));
        let with_name = UserRequest {
            run_as_username: Some("app".into()),
            ..group_only
        };
        assert_eq!(with_name.check(), Ok(()));
        assert_eq!(req("app").check(), Ok(()));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve(&req("ghost"), Some(PASSWD), Some(GROUP)),
            Err(UserError::UnknownUser("ghost".into()))
        );
        assert_eq!(
            resolve(&req("app:ghosts"), Some(PASSWD), Some(GROUP)),
            Err(UserError::UnknownGroup("ghosts".into()))
        );
    }

    #[test]
    fn reading_is_confined_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(dir.path().join("secret"), "host:x:0:0::/:/bin/sh\n").unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap(), None);
        std::os::unix::fs::symlink("../../secret", root.join("etc/group")).unwrap();
        assert_eq!(read_in_root(&root, "etc/group").unwrap(), None);
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(
            read_in_root(&root, "etc/passwd").unwrap().as_deref(),
            Some(PASSWD)
        );
    }
}
