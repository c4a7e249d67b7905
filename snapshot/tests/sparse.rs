//! Sparse files keep their holes on disk: a 1 GiB file holding a few bytes of data,
//! archived by GNU tar (as a GNU sparse entry, and as a plain entry full of zeros, as
//! Docker writes layers), then unpacked, then copied, takes kilobytes on disk at each step,
//! not a gigabyte, and reads the same.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ocibuild_snapshot::{copy_file_sparse, unpack_layer, UnpackStats};

const GIB: u64 = 1 << 30;
/// What a file with a few bytes of data may take on disk at most.
const SMALL: u64 = 1 << 20;

/// Bytes `path` takes on disk.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Makes `tmp/src/big.img`: 1 GiB, data at the start, in the middle and at the end only.
/// Returns `tmp/src`.
fn make_sparse_file(tmp: &Path) -> PathBuf {
    let dir = tmp.join("src");
    fs::create_dir(&dir).unwrap();
    let file = File::create(dir.join("big.img")).unwrap();
    file.set_len(GIB).unwrap();
    file.write_all_at(b"header", 0).unwrap();
    file.write_all_at(b"in the middle", GIB / 2 + 123).unwrap();
    file.write_all_at(b"trailer", GIB - 7).unwrap();
    assert!(allocated(&dir.join("big.img")) < SMALL);
    dir
}

/// Unpacks the layer tar `archive` into a new `tmp/root` and returns its `big.img` and the
/// unpacker's counters.
fn unpack_big_img(tmp: &Path, archive: impl Read) -> (PathBuf, UnpackStats) {
    let root = tmp.join("root");
    fs::create_dir(&root).unwrap();
    let stats = unpack_layer(archive, &root).unwrap();
    (root.join("big.img"), stats)
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
    let src = make_sparse_file(tmp.path());
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

    let (unpacked, stats) = unpack_big_img(tmp.path(), archive.as_slice());
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
    let src = make_sparse_file(tmp.path());
    // As Docker and ocibuild write layers: the holes are zeros in the tar.
    let mut tar = tar_of(&src, &["--format=posix"]);
    let (unpacked, stats) = unpack_big_img(tmp.path(), tar.stdout.take().unwrap());
    assert!(tar.wait().unwrap().success());
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
