//! What a pod CT shows in Proxmox: its tags and its description ("Notes" in the UI), which
//! also tell pvecri after a restart which CT belongs to which pod sandbox.
//!
//! The description is untrusted on the way back (anyone with VM.Config.Options can edit it),
//! so parsing it only ever yields a well-formed sandbox id, or nothing.

use crate::spec::is_pod_id;

/// Every pod CT carries this tag; CTs without it are never touched.
pub const TAG: &str = "pvecri";
const POD_HEADER: &str = "pvecri pod ";
const WARM_HEADER: &str = "pvecri warm pool CT";
const HANDS_OFF: &str =
    "Managed by pvecri (Kubernetes CRI runtime): do not start, stop, edit or remove it by hand.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A pod's CT.
    Pod,
    /// Started ahead for the next pod (the warm pool).
    Warm,
}

/// What a description says about its CT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub role: Role,
    pub sandbox: String,
}

pub struct PodFacts<'a> {
    pub sandbox: &'a str,
    pub namespace: &'a str,
    /// The pod's name (without namespace).
    pub name: &'a str,
    pub uid: &'a str,
}

pub fn pod_description(p: &PodFacts<'_>) -> String {
    format!(
        "{POD_HEADER}{}/{}\n{HANDS_OFF}\nnamespace: {}\npod: {}\nuid: {}\nsandbox: {}\n",
        p.namespace, p.name, p.namespace, p.name, p.uid, p.sandbox
    )
}

pub fn warm_description(sandbox: &str) -> String {
    format!("{WARM_HEADER}\n{HANDS_OFF}\nsandbox: {sandbox}\n")
}

pub fn parse(description: &str) -> Option<Described> {
    let mut lines = description.lines();
    let first = lines.next()?;
    let role = if first.starts_with(POD_HEADER) {
        Role::Pod
    } else if first == WARM_HEADER {
        Role::Warm
    } else {
        return None;
    };
    let sandbox = lines
        .filter_map(|l| l.strip_prefix("sandbox: "))
        .map(str::trim)
        .find(|id| is_pod_id(id))?
        .to_string();
    Some(Described { role, sandbox })
}

/// A Proxmox tag for a namespace (`[a-z0-9_][a-z0-9_\-+.]*`): Kubernetes namespaces already
/// are; anything else a CRI client sends is made into one.
pub fn namespace_tag(namespace: &str) -> String {
    let mut tag: String = namespace
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if !tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        tag.insert(0, '_');
    }
    tag
}

/// `pvecri;<namespace>` for a pod CT.
pub fn pod_tags(namespace: &str) -> String {
    let ns = namespace_tag(namespace);
    if ns == TAG {
        TAG.to_string()
    } else {
        format!("{TAG};{ns}")
    }
}

pub fn warm_tags() -> String {
    format!("{TAG};pvecri-warm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = crate::spec::tests::ID;

    #[test]
    fn descriptions_round_trip() {
        let d = pod_description(&PodFacts {
            sandbox: ID,
            namespace: "default",
            name: "web",
            uid: "1234-5678",
        });
        assert!(d.starts_with("pvecri pod default/web\n"), "{d}");
        assert!(d.contains("uid: 1234-5678\n"));
        assert_eq!(
            parse(&d),
            Some(Described {
                role: Role::Pod,
                sandbox: ID.into()
            })
        );
        assert_eq!(parse(&warm_description(ID)).unwrap().role, Role::Warm);
        assert_eq!(parse("pvecri pod x/y\nsandbox: nothex\n"), None);
        assert_eq!(parse("my own notes\nsandbox: {ID}\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn tags() {
        assert_eq!(pod_tags("kube-system"), "pvecri;kube-system");
        assert_eq!(pod_tags("pvecri"), "pvecri");
        assert_eq!(namespace_tag("Cri Test/ns"), "cri_test_ns");
        assert_eq!(namespace_tag("-x"), "_-x");
        assert_eq!(namespace_tag(""), "_");
    }

    proptest! {
        #[test]
        fn tags_are_valid_proxmox_tags(ns in ".{0,80}") {
            let tag = namespace_tag(&ns);
            let mut chars = tag.chars();
            let first = chars.next().unwrap();
            prop_assert!(first.is_ascii_lowercase() || first.is_ascii_digit() || first == '_');
            prop_assert!(chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+.".contains(c)));
        }

        #[test]
        fn parsing_any_description_is_safe(text in "(?s).{0,300}") {
            if let Some(d) = parse(&text) {
                prop_assert!(is_pod_id(&d.sandbox));
            }
        }
    }
}
