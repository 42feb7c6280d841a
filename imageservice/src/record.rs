//! Image records (what a pulled image is) and their lookup by ID, tag, digest or ID prefix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::{ImageRef, looks_like_id};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob's digest.
    pub digest: String,
    pub diff_id: String,
    pub chain_id: String,
    pub size: u64,
    pub media_type: String,
}

/// A pulled image. Its ID is the config digest, as in containerd and Docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    /// `registry/repository:tag`
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:...` of the manifest or index that was pulled.
    pub repo_digests: Vec<String>,
    /// Bytes of manifest, config and compressed layers, as containerd reports.
    pub size: u64,
    pub layers: Vec<LayerRecord>,
    /// The image configuration as the registry served it.
    pub config: serde_json::Value,
    pub pinned: bool,
    pub pulled_at_ns: i64,
}

impl ImageRecord {
    pub fn top_chain_id(&self) -> Option<&str> {
        self.layers.last().map(|l| l.chain_id.as_str())
    }

    /// The `User` of the image config: a numeric uid, or a user name.
    pub fn user(&self) -> ImageUser {
        let user = self
            .config
            .pointer("/config/User")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        ImageUser::parse(user)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    None,
    Uid(i64),
    Name(String),
}

impl ImageUser {
    /// `User` is `user[:group]`, each a name or a number.
    pub fn parse(user: &str) -> Self {
        let user = user.split(':').next().unwrap_or("");
        if user.is_empty() {
            Self::None
        } else if let Ok(uid) = user.parse::<i64>() {
            Self::Uid(uid)
        } else {
            Self::Name(user.to_string())
        }
    }
}

/// Where records persist; the daemon implements it on its metadata store.
pub trait ImageCatalog: Send + Sync {
    fn load(&self) -> Result<Vec<ImageRecord>, CatalogError>;
    fn save(&self, image: &ImageRecord) -> Result<(), CatalogError>;
    fn delete(&self, id: &str) -> Result<(), CatalogError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image catalog: {0}")]
pub struct CatalogError(pub String);

/// A catalog that forgets everything; for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    images: std::sync::Mutex<BTreeMap<String, ImageRecord>>,
}

impl ImageCatalog for MemoryCatalog {
    fn load(&self) -> Result<Vec<ImageRecord>, CatalogError> {
        let m = self
            .images
            .lock()
            .map_err(|_| CatalogError("poisoned".into()))?;
        Ok(m.values().cloned().collect())
    }
    fn save(&self, image: &ImageRecord) -> Result<(), CatalogError> {
        let mut m = self
            .images
            .lock()
            .map_err(|_| CatalogError("poisoned".into()))?;
        m.insert(image.id.clone(), image.clone());
        Ok(())
    }
    fn delete(&self, id: &str) -> Result<(), CatalogError> {
        let mut m = self
            .images
            .lock()
            .map_err(|_| CatalogError("poisoned".into()))?;
        m.remove(id);
        Ok(())
    }
}

/// How a query found its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    Id,
    Digest,
    /// The normalised `registry/repository:tag`.
    Tag(String),
}

/// The in-memory view of all records, with CRI's lookup rules.
#[derive(Debug, Default, Clone)]
pub struct ImageIndex {
    by_id: BTreeMap<String, ImageRecord>,
}

impl ImageIndex {
    pub fn new(records: Vec<ImageRecord>) -> Self {
        Self {
            by_id: records.into_iter().map(|r| (r.id.clone(), r)).collect(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.by_id.get(id)
    }

    pub fn insert(&mut self, record: ImageRecord) {
        self.by_id.insert(record.id.clone(), record);
    }

    pub fn remove(&mut self, id: &str) -> Option<ImageRecord> {
        self.by_id.remove(id)
    }

    /// Finds an image by full ID (with or without `sha256:`), by reference (tag or digest,
    /// normalised), or by a unique ID prefix.
    pub fn resolve(&self, query: &str) -> Option<&ImageRecord> {
        self.resolve_how(query).map(|(r, _)| r)
    }

    /// Like [`Self::resolve`], also saying what matched.
    pub fn resolve_how(&self, query: &str) -> Option<(&ImageRecord, Matched)> {
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() == 64
            && let Some(r) = self.by_id.get(&format!("sha256:{hex}"))
        {
            return Some((r, Matched::Id));
        }
        if let Ok(r) = ImageRef::parse(query) {
            let found = match r.digest() {
                Some(d) => {
                    let want = r.with_digest(d);
                    self.by_id
                        .values()
                        .find(|i| i.repo_digests.contains(&want))
                        .map(|i| (i, Matched::Digest))
                }
                None => r.tagged().and_then(|t| {
                    self.by_id
                        .values()
                        .find(|i| i.repo_tags.contains(&t))
                        .map(|i| (i, Matched::Tag(t)))
                }),
            };
            if found.is_some() {
                return found;
            }
        }
        if looks_like_id(query) && hex.len() >= 4 {
            let mut hits = self
                .by_id
                .values()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
            let first = hits.next();
            if hits.next().is_none() {
                return first.map(|r| (r, Matched::Id));
            }
        }
        None
    }

    /// Records other than `except` that carry `tag`.
    pub fn holders_of_tag<'a>(
        &'a self,
        tag: &'a str,
        except: &'a str,
    ) -> impl Iterator<Item = &'a ImageRecord> + 'a {
        self.by_id
            .values()
            .filter(move |i| i.id != except && i.repo_tags.iter().any(|t| t == tag))
    }

    /// Whether any record other than `except` uses the layer `chain_id`.
    pub fn layer_in_use(&self, chain_id: &str, except: &str) -> bool {
        self.by_id
            .values()
            .any(|i| i.id != except && i.layers.iter().any(|l| l.chain_id == chain_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id_digit: char, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_digit.to_string().repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size: 1,
            layers: vec![],
            config: serde_json::json!({"config": {"User": "1000:1000"}}),
            pinned: false,
            pulled_at_ns: 0,
        }
    }

    #[test]
    fn resolves_ids_tags_digests_and_prefixes() {
        let dig = format!("docker.io/library/busybox@sha256:{}", "c".repeat(64));
        let idx = ImageIndex::new(vec![
            rec('a', &["docker.io/library/busybox:latest"], &[&dig]),
            rec('b', &["127.0.0.1:5000/x:1", "127.0.0.1:5000/x:2"], &[]),
        ]);
        let a = format!("sha256:{}", "a".repeat(64));
        assert_eq!(idx.resolve(&a).unwrap().id, a);
        assert_eq!(idx.resolve(&"a".repeat(64)).unwrap().id, a);
        assert_eq!(idx.resolve("busybox").unwrap().id, a);
        assert_eq!(idx.resolve("busybox:latest").unwrap().id, a);
        assert_eq!(
            idx.resolve(&format!("busybox@sha256:{}", "c".repeat(64)))
                .unwrap()
                .id,
            a
        );
        assert_eq!(idx.resolve("aaaa").unwrap().id, a);
        assert!(
            idx.resolve("aaa").is_none(),
            "prefixes shorter than 4 are not IDs"
        );
        assert_eq!(
            idx.resolve("127.0.0.1:5000/x:2").unwrap().repo_tags.len(),
            2
        );
        assert!(idx.resolve("busybox:1.0").is_none());
        assert!(idx.resolve("nothing").is_none());
    }

    #[test]
    fn image_user() {
        assert_eq!(rec('a', &[], &[]).user(), ImageUser::Uid(1000));
        assert_eq!(
            ImageUser::parse("nobody:nogroup"),
            ImageUser::Name("nobody".into())
        );
        assert_eq!(ImageUser::parse(""), ImageUser::None);
    }
}
