//! Layer compression: from the media type, checked against the stream's magic bytes.

use std::fmt;
use std::io::{self, BufRead, Read};

use crate::error::StoreError;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Layer media types and the compression each one declares.
const MEDIA_TYPES: &[(&str, Compression)] = &[
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    // Deprecated by the image spec but still in registries.
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Compression::None,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Compression::Zstd,
    ),
];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression a layer media type declares; other media types (configs, foreign
    /// formats, unknown suffixes) are [`StoreError::UnsupportedMediaType`].
    pub fn from_media_type(media_type: &str) -> Result<Compression, StoreError> {
        // Parameters (`; charset=...`) are not part of the type.
        let bare = media_type.split(';').next().unwrap_or_default().trim();
        MEDIA_TYPES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(bare))
            .map(|(_, c)| *c)
            .ok_or_else(|| StoreError::UnsupportedMediaType(media_type.to_owned()))
    }

    /// Checks the first bytes of the stream against the declared compression.
    pub(crate) fn check_magic(self, head: &[u8]) -> Result<(), StoreError> {
        let found = sniff(head);
        let agrees = match self {
            Compression::Gzip => found == Sniffed::Gzip,
            Compression::Zstd => found == Sniffed::Zstd,
            Compression::None => found == Sniffed::Other,
        };
        if agrees {
            return Ok(());
        }
        let found = match found {
            Sniffed::Gzip => "starts with the gzip magic bytes".to_owned(),
            Sniffed::Zstd => "starts with the zstd magic bytes".to_owned(),
            Sniffed::Other if head.len() < 4 => format!("is only {} bytes long", head.len()),
            Sniffed::Other => format!("starts with {:02x?}", &head[..head.len().min(4)]),
        };
        Err(StoreError::CompressionMismatch {
            declared: self,
            found,
        })
    }

    /// Wraps `input` (positioned at the start of the blob) in the matching decoder.
    pub(crate) fn decoder<'a, R: BufRead + 'a>(self, input: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            // Multi-member: some tools concatenate gzip members; the whole blob is the layer.
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Gzip,
    Zstd,
    Other,
}

fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(&GZIP_MAGIC) {
        Sniffed::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) || is_zstd_skippable_frame(head) {
        Sniffed::Zstd
    } else {
        Sniffed::Other
    }
}

/// zstd skippable frames (magic 0x184D2A50..=0x184D2A5F, little endian) may open a stream.
fn is_zstd_skippable_frame(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Compression::None
        );
        assert!(matches!(
            Compression::from_media_type("application/vnd.oci.image.config.v1+json"),
            Err(StoreError::UnsupportedMediaType(_))
        ));
        assert!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2").is_err()
        );
    }

    #[test]
    fn magic_must_agree() {
        let gz = [0x1f, 0x8b, 8, 0];
        let zs = [0x28, 0xb5, 0x2f, 0xfd];
        let skippable = [0x5a, 0x2a, 0x4d, 0x18];
        let tar = *b"etc/";
        assert!(Compression::Gzip.check_magic(&gz).is_ok());
        assert!(Compression::Zstd.check_magic(&zs).is_ok());
        assert!(Compression::Zstd.check_magic(&skippable).is_ok());
        assert!(Compression::None.check_magic(&tar).is_ok());
        for (declared, head) in [
            (Compression::Gzip, &zs[..]),
            (Compression::Gzip, &tar[..]),
            (Compression::Zstd, &gz[..]),
            (Compression::None, &gz[..]),
            (Compression::None, &zs[..]),
            (Compression::Gzip, &[][..]),
        ] {
            let err = declared.check_magic(head).unwrap_err();
            assert!(
                matches!(err, StoreError::CompressionMismatch { .. }),
                "{declared}: {err}"
            );
        }
    }
}
