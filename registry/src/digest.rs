//! sha256 digests: computing them, checking their form, and comparing a download or an
//! upload against the digest it should have.

use crate::error::{Error, Result};
use crate::reference::{validate_digest, Reference};

pub use ocibuild_image::digest::sha256_digest;

/// Checks that `digest` is a well-formed sha256 digest (the only algorithm supported).
pub(crate) fn check_sha256(digest: &str) -> Result<()> {
    validate_digest(digest).map_err(|reason| Error::InvalidDigest {
        digest: digest.to_string(),
        reason,
    })?;
    if !digest.starts_with("sha256:") {
        return Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: "only sha256 digests are supported".to_string(),
        });
    }
    Ok(())
}

/// An [`Error::DigestMismatch`] for `what` of `r` unless `actual` is `expected`.
pub(crate) fn verify(r: &Reference, what: &str, expected: &str, actual: String) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(Error::DigestMismatch {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        what: what.to_string(),
        expected: expected.to_string(),
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_checks() {
        assert!(check_sha256("sha256:abc").is_err());
        assert!(check_sha256(&sha256_digest(b"x")).is_ok());
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let r = Reference::parse("127.0.0.1:5000/a:1").unwrap();
        assert!(verify(&r, "blob", "sha256:a", "sha256:a".into()).is_ok());
        let e = verify(&r, "blob", "sha256:a", "sha256:b".into()).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }
}
