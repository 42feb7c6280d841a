//! Content digests (`sha256:<64 lowercase hex>`) and OCI chain IDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// Why a string is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected \"sha256:<64 hex digits>\")")]
    NoAlgorithm(String),
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} does not have 64 lowercase hex digits after \"sha256:\"")]
    BadHex(String),
}

/// A SHA-256 content digest in OCI form, `sha256:<64 lowercase hex digits>`.
///
/// Only valid values can be constructed, so code holding a `Digest` may use
/// [`Digest::hex`] as a file or dataset name without further checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(s.to_owned()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_owned()));
        }
        if hex.len() != HEX_LEN || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex(s.to_owned()));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The digest of a finished SHA-256 hash (32 bytes).
    pub(crate) fn from_sha256(hash: &[u8]) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(hash)))
    }

    /// SHA-256 of `data`.
    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest::from_sha256(&Sha256::digest(data))
    }

    /// The 64 hex digits without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The full form, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses 64 lowercase hex digits (a store's file or dataset name) as a digest.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        Digest::parse(&format!("{PREFIX}{hex}"))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The ChainID of a layer whose parent chain has ID `parent` (None for the base layer) and
/// whose uncompressed digest is `diff_id`, as the OCI image spec defines it:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => {
            let mut hasher = Sha256::new();
            hasher.update(parent.as_str().as_bytes());
            hasher.update(b" ");
            hasher.update(diff_id.as_str().as_bytes());
            Digest::from_sha256(&hasher.finalize())
        }
    }
}

/// The ChainIDs of an image's layers, given its `rootfs.diff_ids` in order (base first).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(out.last(), diff_id);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    const B: &str = "sha256:2c7a5a2a5d6b3d4b6a1d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b";

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let d = Digest::parse(A).unwrap();
        assert_eq!(d.to_string(), A);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert!(matches!(
            Digest::parse("abc"),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse(&A.replace("sha256", "sha512")),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse(&A.to_uppercase().replace("SHA256", "sha256")),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            Digest::parse(&A[..70]),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            Digest::parse("sha256:../../etc"),
            Err(DigestError::BadHex(_))
        ));
    }

    #[test]
    fn serde_round_trip_and_rejects_bad_values() {
        let d = Digest::parse(A).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{A}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::parse(A).unwrap();
        let b = Digest::parse(B).unwrap();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        // Computed independently: printf '%s %s' A B | sha256sum
        let expected = Digest::of_bytes(format!("{A} {B}").as_bytes());
        assert_eq!(ids[1], expected);
        assert_eq!(chain_id(Some(&a), &b), expected);
        assert!(chain_ids(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical(s in ".{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert!(s.starts_with("sha256:") && s.len() == 71);
            }
        }

        #[test]
        fn every_hash_parses_back(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Digest::of_bytes(&data);
            prop_assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        }
    }
}
