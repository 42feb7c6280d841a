//! IDs as the kubelet expects them: 64 lowercase hex characters, found by a unique prefix.

use rand::RngCore;

pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("no {kind} with ID {query:?}")]
    NotFound { kind: &'static str, query: String },
    #[error("ID prefix {query:?} matches more than one {kind}")]
    Ambiguous { kind: &'static str, query: String },
}

/// The one ID among `ids` equal to `query` or starting with it.
pub fn resolve<'a>(
    kind: &'static str,
    query: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<String, IdError> {
    let not_found = || IdError::NotFound {
        kind,
        query: query.to_string(),
    };
    if query.is_empty() || !query.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let query_lower = query.to_ascii_lowercase();
    let mut found: Option<&str> = None;
    for id in ids {
        if id == query_lower {
            return Ok(id.to_string());
        }
        if id.starts_with(&query_lower) {
            if found.is_some() {
                return Err(IdError::Ambiguous {
                    kind,
                    query: query.to_string(),
                });
            }
            found = Some(id);
        }
    }
    found.map(str::to_string).ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, new_id());
    }

    #[test]
    fn prefixes() {
        let ids = ["abc123", "abd456", "ff"];
        assert_eq!(resolve("pod", "abc", ids).unwrap(), "abc123");
        assert_eq!(resolve("pod", "ABD", ids).unwrap(), "abd456");
        assert!(matches!(
            resolve("pod", "ab", ids),
            Err(IdError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve("pod", "0", ids),
            Err(IdError::NotFound { .. })
        ));
        assert!(matches!(
            resolve("pod", "", ids),
            Err(IdError::NotFound { .. })
        ));
        assert!(matches!(
            resolve("pod", "../x", ids),
            Err(IdError::NotFound { .. })
        ));
        assert_eq!(
            resolve("pod", "ff", ["ff", "ff00"]).unwrap(),
            "ff",
            "exact match wins"
        );
    }
}
