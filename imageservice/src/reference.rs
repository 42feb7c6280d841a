//! Image references, parsed and normalised as the kubelet and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;

use oci_client::Reference;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// A normalised image reference: registry, repository, and a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        if input.trim() != input || input.chars().any(char::is_whitespace) {
            return Err(fail("contains whitespace"));
        }
        let parsed = Reference::try_from(input).map_err(|e| {
            let name = input.split(['@', ':']).next().unwrap_or(input);
            let path = input.split_once('/').map_or(input, |(_, rest)| rest);
            if path
                .split(['@', ':'])
                .next()
                .is_some_and(|p| p.chars().any(|c| c.is_ascii_uppercase()))
            {
                fail("repository name must be lowercase")
            } else if name.contains("//") {
                fail("empty path component")
            } else {
                fail(&e.to_string())
            }
        })?;
        if let Some(digest) = parsed.digest() {
            validate_digest(digest).map_err(|r| fail(&r))?;
        }
        Ok(Self {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: parsed.tag().map(str::to_string),
            digest: parsed.digest().map(str::to_string),
        }
        .with_default_tag())
    }

    /// A reference with neither tag nor digest means `:latest`.
    fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// What to fetch from the registry: the digest when there is one, else the tag.
    pub fn to_oci(&self, registry: &str) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => {
                Reference::with_digest(registry.into(), self.repository.clone(), d.clone())
            }
            (None, Some(t)) => {
                Reference::with_tag(registry.into(), self.repository.clone(), t.clone())
            }
            (None, None) => {
                Reference::with_tag(registry.into(), self.repository.clone(), "latest".into())
            }
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Only sha256 is accepted: it is what registries and the OCI spec require in practice, and
/// the layer store names layers by it.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unsupported digest algorithm in {digest:?} (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not 64 lowercase hex characters"
        ));
    }
    Ok(())
}

/// Whether `s` looks like an image ID or a prefix of one (hex, optionally `sha256:`).
pub fn looks_like_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_the_kubelet() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
            ("localhost:5000/a/b:1", "localhost:5000/a/b:1"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.tagged(), None);
        let r = ImageRef::parse(&format!("repo:tag@{D}")).unwrap();
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_oci(r.registry()).digest(), Some(D));
    }

    #[test]
    fn bad_references_say_why() {
        let e = ImageRef::parse("Busybox").unwrap_err();
        assert!(e.reason.contains("lowercase"), "{e}");
        let e = ImageRef::parse("").unwrap_err();
        assert!(e.reason.contains("empty"), "{e}");
        let e = ImageRef::parse("a b").unwrap_err();
        assert!(e.reason.contains("whitespace"), "{e}");
        let e = ImageRef::parse("x@sha256:abc").unwrap_err();
        assert!(e.to_string().contains("x@sha256:abc"), "{e}");
        assert!(ImageRef::parse("host/ns/img:t:x").is_err());
        assert!(ImageRef::parse("a//b").is_err());
    }

    #[test]
    fn ids() {
        assert!(looks_like_id("0123abc"));
        assert!(looks_like_id(D));
        assert!(!looks_like_id("busybox"));
        assert!(!looks_like_id(""));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn display_round_trips(
            host in prop_oneof![Just(String::new()), "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{2,5})?".prop_map(|h| format!("{h}/"))],
            path in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let input = match &tag { Some(t) => format!("{host}{path}:{t}"), None => format!("{host}{path}") };
            let r = ImageRef::parse(&input).unwrap();
            let again = ImageRef::parse(&r.to_string()).unwrap();
            prop_assert_eq!(&r, &again);
            prop_assert_eq!(r.tag(), Some(tag.as_deref().unwrap_or("latest")));
        }
    }
}
