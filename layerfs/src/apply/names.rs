//! Entry names: normalization with the confinement rules, and OCI whiteout names.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::StoreError;

/// OCI whiteout prefix: `.wh.<name>` deletes `<name>` from the lower layers.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// `.wh..wh..opq` makes its directory opaque.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// A normalized entry path relative to the layer root: no empty, `.` or `..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPath {
    components: Vec<OsString>,
}

impl EntryPath {
    /// Normalizes a tar member name (or a hard link's target) relative to the layer root,
    /// the way containerd does: cleaned lexically as Go's `filepath.Clean` cleans it
    /// (`a/../b` is `b`, a `..` at the start of an absolute name stays at `/`), then
    /// leading `/`s dropped (umoci and KIWI write `/etc/x` and a root entry `/`); `/`, `.`
    /// and `./` name the root itself. A relative name that still climbs above the root
    /// (`../x`, `a/../../x`) is unsafe: containerd would clamp it at the root, Docker
    /// refuses it, and no tool writes one for a real layer.
    pub(crate) fn parse(raw: &[u8], entry: &str) -> Result<EntryPath, StoreError> {
        let rooted = raw.first() == Some(&b'/');
        let mut components: Vec<OsString> = Vec::new();
        for part in raw.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => match components.last() {
                    Some(last) if last.as_bytes() != b".." => {
                        components.pop();
                    }
                    _ if rooted => {}
                    _ => components.push(OsString::from("..")),
                },
                _ => components.push(OsStr::from_bytes(part).to_owned()),
            }
        }
        if components.first().is_some_and(|c| c.as_bytes() == b"..") {
            return Err(StoreError::unsafe_entry(
                entry,
                "path leads above the layer root",
            ));
        }
        Ok(EntryPath { components })
    }

    pub(crate) fn components(&self) -> &[OsString] {
        &self.components
    }

    /// All but the last component.
    pub(crate) fn parent(&self) -> &[OsString] {
        match self.components.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The last component (`None` for the root).
    pub(crate) fn name(&self) -> Option<&OsStr> {
        self.components.last().map(OsString::as_os_str)
    }

    pub(crate) fn to_path(&self) -> PathBuf {
        join(&self.components)
    }
}

pub(crate) fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// What an entry's last path component says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// A plain entry.
    Normal,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: delete `<name>` from the lower layers. AUFS bookkeeping that old
    /// Docker versions leaked into layers (`.wh..wh.plnk`, `.wh..wh.aufs`) is one too, as
    /// containerd reads it: a whiteout of `.wh.plnk`, which no layer has.
    Whiteout(OsString),
}

/// Classifies the last component `name` of entry `entry`.
pub(crate) fn classify(name: &OsStr, entry: &str) -> Result<NameKind, StoreError> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return Ok(NameKind::Opaque);
    }
    let Some(target) = bytes.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(NameKind::Normal);
    };
    match target {
        b"" => Err(StoreError::invalid(entry, "whiteout without a name")),
        b"." | b".." => Err(StoreError::unsafe_entry(
            entry,
            "whiteout names '.' or '..'",
        )),
        _ => Ok(NameKind::Whiteout(OsStr::from_bytes(target).to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<EntryPath, StoreError> {
        EntryPath::parse(s.as_bytes(), s)
    }

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(p("./a//b/./c/").unwrap().to_path(), PathBuf::from("a/b/c"));
        assert!(p("./").unwrap().name().is_none());
        assert!(p("").unwrap().name().is_none());
        assert_eq!(
            p("/etc/passwd").unwrap().to_path(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(p("//./etc//x/").unwrap().to_path(), PathBuf::from("etc/x"));
        for root in ["/", "//", ".", "./", "/./", "/."] {
            assert!(p(root).unwrap().name().is_none(), "{root:?}");
        }
        // `..` is cleaned lexically, as Go's filepath.Clean does.
        assert_eq!(p("a/../b").unwrap().to_path(), PathBuf::from("b"));
        assert_eq!(p("a/b/../../c/").unwrap().to_path(), PathBuf::from("c"));
        assert_eq!(p("/../etc").unwrap().to_path(), PathBuf::from("etc"));
        assert_eq!(p("/a/../../x").unwrap().to_path(), PathBuf::from("x"));
        assert!(p("a/..").unwrap().name().is_none());
        assert!(matches!(
            p("a/../../etc"),
            Err(StoreError::UnsafeEntry { .. })
        ));
        assert!(matches!(p(".."), Err(StoreError::UnsafeEntry { .. })));
        assert!(matches!(p("../x"), Err(StoreError::UnsafeEntry { .. })));
        assert!(matches!(p("./../x"), Err(StoreError::UnsafeEntry { .. })));
        assert!(p("a/..b/c..").is_ok());
    }

    #[test]
    fn classifies_whiteouts() {
        let c = |s: &str| classify(OsStr::new(s), s);
        assert_eq!(c("file").unwrap(), NameKind::Normal);
        assert_eq!(c(".wh..wh..opq").unwrap(), NameKind::Opaque);
        // AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`) is a whiteout of `.wh.plnk`, as
        // containerd reads it.
        assert_eq!(
            c(".wh..wh.plnk").unwrap(),
            NameKind::Whiteout(".wh.plnk".into())
        );
        assert_eq!(c(".wh.foo").unwrap(), NameKind::Whiteout("foo".into()));
        assert_eq!(
            c(".wh..hidden").unwrap(),
            NameKind::Whiteout(".hidden".into())
        );
        assert!(matches!(c(".wh.."), Err(StoreError::UnsafeEntry { .. })));
        assert!(matches!(c(".wh..."), Err(StoreError::UnsafeEntry { .. })));
        assert!(matches!(c(".wh."), Err(StoreError::InvalidLayer { .. })));
    }

    proptest! {
        /// Whatever the bytes, an accepted path has only plain components that, joined,
        /// stay below the root.
        #[test]
        fn accepted_paths_stay_below_the_root(raw in proptest::collection::vec(
            prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(b'w'), Just(b'h'), any::<u8>()], 0..40)
        ) {
            if let Ok(path) = EntryPath::parse(&raw, "x") {
                for c in path.components() {
                    let b = c.as_bytes();
                    prop_assert!(!b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/'));
                }
                let joined = path.to_path();
                prop_assert!(joined.is_relative());
                prop_assert!(joined.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }

        /// `x` and `./x` name the same path below the root (or are both unsafe) unless `x` is
        /// absolute; `/x`, `//x`
        /// and `/./x` are never unsafe (a `..` stops at `/`), and name the same path as `x`
        /// whenever `x` is safe.
        #[test]
        fn absolute_and_dot_slash_names_are_relative_to_the_root(raw in proptest::collection::vec(
            prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), any::<u8>()], 0..24)
        ) {
            let plain = EntryPath::parse(&raw, "x").map_err(|e| e.to_string());
            if raw.first() != Some(&b'/') {
                let dotted = EntryPath::parse(&[&b"./"[..], &raw[..]].concat(), "x").map_err(|e| e.to_string());
                prop_assert_eq!(&dotted, &plain);
            }
            let rooted = EntryPath::parse(&[&b"/"[..], &raw[..]].concat(), "x");
            prop_assert!(rooted.is_ok());
            for prefix in [&b"//"[..], b"/./"] {
                let prefixed = [prefix, &raw[..]].concat();
                let got = EntryPath::parse(&prefixed, "x").map_err(|e| e.to_string());
                prop_assert_eq!(&got, &rooted.as_ref().map_err(|e| e.to_string()).cloned(), "{:?}", String::from_utf8_lossy(&prefixed));
            }
            if let Ok(plain) = plain {
                prop_assert_eq!(rooted.ok(), Some(plain));
            }
        }

        #[test]
        fn whiteout_targets_are_plain_names(name in "(\\.wh\\.)?[a-z.]{0,6}") {
            if let Ok(NameKind::Whiteout(target)) = classify(OsStr::new(&name), &name) {
                let b = target.as_bytes();
                prop_assert!(!b.is_empty() && b != b"." && b != b"..");
            }
        }
    }
}
