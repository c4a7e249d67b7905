//! sha256 digests in the `sha256:<hex>` form of OCI descriptors.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of `digest` when it is `sha256:` and 64 lowercase hex digits (so also a
/// safe file name), else `None`.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    (hex.len() == 64 && hex.bytes().all(lower_hex)).then_some(hex)
}

/// `sha256:<hex>` and size of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// `sha256:<hex>` and size of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn bytes_readers_and_files_hash_alike() {
        assert_eq!(sha256_digest(b""), EMPTY);
        assert_eq!(sha256_reader(&b""[..]).unwrap(), (EMPTY.to_string(), 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), (sha256_digest(b"abc"), 3));
    }

    #[test]
    fn sha256_hex_takes_only_well_formed_sha256_digests() {
        assert_eq!(sha256_hex(EMPTY), Some(&EMPTY[7..]));
        assert_eq!(sha256_hex(&EMPTY[7..]), None, "no algorithm");
        assert_eq!(
            sha256_hex(&EMPTY.to_uppercase().replace("SHA", "sha")),
            None
        );
        assert_eq!(sha256_hex(&EMPTY[..70]), None, "too short");
        assert_eq!(sha256_hex("sha256:../../../../etc/passwd"), None);
        assert_eq!(sha256_hex(&EMPTY.replace("sha256", "sha512")), None);
    }
}
