//! `snapshot-test-helper ROLE ARGS...`: a second process for the tests in `tests/`, which
//! start it (and sometimes kill it). Roles:
//!
//! * `insert STORE BLOB_DIR`: inserts the blob saved in BLOB_DIR (`Blob::save`) into the
//!   layer store STORE, slowly, and prints `extracted N` or `found N` (N: the files in the
//!   layer's `d0/`).
//! * `crawl STORE BLOB_DIR`: inserts that blob, reading it very slowly after the first
//!   64 KiB, to be killed mid-extraction.
//! * `hold-layer STORE BLOB_DIR`: holds the stored layer of that blob, prints `holding`,
//!   and keeps it until its stdin closes.
//! * `hold-mount DIR`: mounts a detached overlay of the directories `overlay::layers` makes
//!   in DIR, prints `holding`, and keeps the mount until its stdin closes (or it is killed).
//! * `probe STATE_DIR`: prints what `Overlay::available(STATE_DIR)` says: `available`, or
//!   why not (`not-permitted`, `state-dir`, `refused`, ...) and the reason.
//!
//! A failed check panics, so the test sees a failed process.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ocibuild_snapshot::store::LayerStore;
use ocibuild_snapshot::{Overlay, Unavailable};

#[allow(dead_code)]
mod blob;
mod overlay;

use blob::{Blob, Slow};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> PathBuf {
        PathBuf::from(
            args.get(i)
                .unwrap_or_else(|| panic!("argument {i} missing: {args:?}")),
        )
    };
    match args.first().map(String::as_str) {
        Some("insert") => insert(&arg(1), &arg(2)),
        Some("crawl") => crawl(&arg(1), &arg(2)),
        Some("hold-layer") => hold_layer(&arg(1), &arg(2)),
        Some("hold-mount") => hold_mount(&arg(1)),
        Some("probe") => probe(&arg(1)),
        other => panic!("unknown role {other:?}"),
    }
}

fn insert(store: &Path, blob_dir: &Path) {
    let store = LayerStore::open(store).unwrap();
    let blob = Blob::load(blob_dir);
    let slow = Slow::new(&blob.bytes[..], 4096, Duration::from_millis(1));
    let inserted = store.insert_from_reader(slow, blob.digests()).unwrap();
    let files = std::fs::read_dir(inserted.layer.path().join("d0"))
        .unwrap()
        .count();
    let done = if inserted.extracted.is_some() {
        "extracted"
    } else {
        "found"
    };
    println!("{done} {files}");
}

fn crawl(store: &Path, blob_dir: &Path) {
    let store = LayerStore::open(store).unwrap();
    let blob = Blob::load(blob_dir);
    let mut slow = Slow::new(&blob.bytes[..], 1024, Duration::from_millis(200));
    slow.fast = 64 * 1024;
    store.insert_from_reader(slow, blob.digests()).unwrap();
    panic!("the crawl was to be killed before it ended");
}

fn hold_layer(store: &Path, blob_dir: &Path) {
    let store = LayerStore::open(store).unwrap();
    let blob = Blob::load(blob_dir);
    let held = store
        .get(&blob.diff_id)
        .unwrap()
        .expect("the layer is stored");
    say_holding_until_stdin_closes();
    drop(held);
}

fn hold_mount(dir: &Path) {
    let layers = overlay::layers(dir);
    let root = layers.open().unwrap();
    say_holding_until_stdin_closes();
    drop(root);
}

/// Prints `holding` and waits for stdin to reach its end.
fn say_holding_until_stdin_closes() {
    println!("holding");
    io::stdout().flush().unwrap();
    io::copy(&mut io::stdin(), &mut io::sink()).unwrap();
}

fn probe(state: &Path) {
    let why = match Overlay::available(state) {
        Ok(()) => {
            println!("available");
            return;
        }
        Err(why) => why,
    };
    let kind = match &why {
        Unavailable::StateDir(_) => "state-dir",
        Unavailable::NoMountApi(_) => "no-mount-api",
        Unavailable::NoOverlay(_) => "no-overlay",
        Unavailable::NotPermitted(_) => "not-permitted",
        Unavailable::Refused(_) => "refused",
        Unavailable::Misbehaves(_) => "misbehaves",
    };
    println!("{kind}: {why}");
}
