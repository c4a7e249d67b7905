//! Sparse files keep their holes on disk: a 1 GiB file holding a few bytes of data,
//! archived by GNU tar (as a GNU sparse entry, and as a plain entry full of zeros, as
//! Docker writes layers), then unpacked, then copied, takes kilobytes on disk at each step,
//! not a gigabyte, and reads the same.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use ocibuild_snapshot::{copy_file_sparse, unpack_layer};

const GIB: u64 = 1 << 30;
/// What a file with a few bytes of data may take on disk at most.
const SMALL: u64 = 1 << 20;

/// Bytes `path` takes on disk.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Makes `dir/big.img`: 1 GiB, data at the start, in the middle and at the end only.
fn make_sparse_file(dir: &Path) {
    let file = File::create(dir.join("big.img")).unwrap();
    file.set_len(GIB).unwrap();
    file.write_all_at(b"header", 0).unwrap();
    file.write_all_at(b"in the middle", GIB / 2 + 123).unwrap();
    file.write_all_at(b"trailer", GIB - 7).unwrap();
    assert!(allocated(&dir.join("big.img")) < SMALL);
}

/// Asserts that `cmp` finds `a` and `b` identical.
fn assert_same_content(a: &Path, b: &Path) {
    let status = Command::new("cmp").arg(a).arg(b).status().unwrap();
    assert!(
        status.success(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// Starts GNU tar with `flags`, archiving `dir/big.img` to its standard output.
fn tar_of(dir: &Path, flags: &[&str]) -> std::process::Child {
    Command::new("tar")
        .args(flags)
        .args(["-cf", "-", "-C"])
        .arg(dir)
        .arg("big.img")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_gnu_sparse_entry_unpacks_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_sparse_file(&src);
    let mut tar = tar_of(&src, &["--format=gnu", "--sparse"]);
    let mut archive = Vec::new();
    tar.stdout
        .take()
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(archive.len() < SMALL as usize, "tar wrote the holes");
    assert_eq!(archive[156], b'S', "a GNU sparse entry");

    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let stats = unpack_layer(archive.as_slice(), &root).unwrap();
    let unpacked = root.join("big.img");
    assert_eq!(fs::metadata(&unpacked).unwrap().len(), GIB);
    assert!(
        allocated(&unpacked) < SMALL,
        "{} bytes",
        allocated(&unpacked)
    );
    assert!(stats.disk_bytes < SMALL, "{stats:?}");
    assert_same_content(&src.join("big.img"), &unpacked);
}

#[test]
fn a_plain_entry_full_of_zeros_unpacks_sparse_and_copies_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_sparse_file(&src);
    // As Docker and ocibuild write layers: the holes are zeros in the tar.
    let mut tar = tar_of(&src, &["--format=posix"]);
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let stats = unpack_layer(tar.stdout.take().unwrap(), &root).unwrap();
    assert!(tar.wait().unwrap().success());
    let unpacked = root.join("big.img");
    assert_eq!(stats.bytes, GIB);
    assert!(
        allocated(&unpacked) < SMALL,
        "{} bytes",
        allocated(&unpacked)
    );
    assert_same_content(&src.join("big.img"), &unpacked);

    let copy = tmp.path().join("copy.img");
    let copied = copy_file_sparse(
        &File::open(&unpacked).unwrap(),
        &File::create(&copy).unwrap(),
    )
    .unwrap();
    assert_eq!(copied, GIB);
    assert_eq!(fs::metadata(&copy).unwrap().len(), GIB);
    assert!(allocated(&copy) < SMALL, "{} bytes", allocated(&copy));
    assert_same_content(&unpacked, &copy);
}
