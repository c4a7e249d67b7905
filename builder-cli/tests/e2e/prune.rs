//! `ocibuild prune`: the layer store loses its least recently used layers, never one in
//! use, and the command says what it freed.

use crate::common::{ocibuild, sha256_hex};
use ocibuild_snapshot::store::{LayerDigests, LayerStore};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

/// Makes a plain-tar layer holding one file of `size` bytes (with `tar`), stores it and
/// returns its diff ID; last uses of successive layers differ.
fn store_layer(store: &LayerStore, scratch: &Path, name: &str, size: usize) -> String {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join(name), data).unwrap();
    let tar = scratch.join(format!("{name}.tar"));
    let status = Command::new("tar")
        .args([
            "-cf",
            tar.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let diff_id = format!("sha256:{}", sha256_hex(&std::fs::read(&tar).unwrap()));
    let digests = LayerDigests {
        digest: &diff_id,
        diff_id: &diff_id,
    };
    store.insert_from_file(&tar, digests).unwrap();
    thread::sleep(Duration::from_millis(30));
    diff_id
}

fn prune(args: &[&str]) -> String {
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    let out: Output = ocibuild(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ocibuild {all:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn layer_dir(store: &Path, diff_id: &str) -> std::path::PathBuf {
    store
        .join("layers/sha256")
        .join(diff_id.trim_start_matches("sha256:"))
}

#[test]
fn prune_removes_least_recently_used_layers_down_to_max_size_and_says_what_it_freed() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    let old = store_layer(&store, scratch.path(), "old", 300_000);
    let older_use = store_layer(&store, scratch.path(), "middle", 200_000);
    let new = store_layer(&store, scratch.path(), "new", 100_000);
    let sizes: Vec<u64> = store.layers().unwrap().iter().map(|l| l.size).collect();
    let root_arg = root.to_str().unwrap();

    let listed = prune(&["--store", root_arg]);
    assert!(listed.contains("nothing to remove"), "{listed}");
    assert!(listed.contains("freed 0 B; 3 layers"), "{listed}");
    assert!(!listed.contains("removed"), "{listed}");

    let max = sizes[2].to_string();
    let pruned = prune(&["--store", root_arg, "--max-size", &max]);
    assert!(pruned.contains(&format!("removed {old} (")), "{pruned}");
    assert!(
        pruned.contains(&format!("removed {older_use} (")),
        "{pruned}"
    );
    assert!(!pruned.contains(&new), "{pruned}");
    assert!(pruned.contains("; 1 layer ("), "{pruned}");
    assert!(
        pruned.contains("freed ") && !pruned.contains("freed 0 B"),
        "{pruned}"
    );
    assert!(!layer_dir(&root, &old).exists());
    assert!(!layer_dir(&root, &older_use).exists());
    assert!(layer_dir(&root, &new).join("new").is_file());
}

#[test]
fn prune_all_keeps_a_layer_a_build_is_using() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("cache/layer-store");
    let store = LayerStore::open(&root).unwrap();
    let used = store_layer(&store, scratch.path(), "used", 1000);
    let unused = store_layer(&store, scratch.path(), "unused", 1000);
    let held = store.get(&used).unwrap().unwrap();
    let cache_dir = scratch.path().join("cache");
    let cache_arg = cache_dir.to_str().unwrap();

    let pruned = prune(&["--cache-dir", cache_arg, "--all"]);
    assert!(pruned.contains(&format!("removed {unused}")), "{pruned}");
    assert!(pruned.contains(&format!("kept {used}")), "{pruned}");
    assert!(pruned.contains("in use"), "{pruned}");
    assert!(held.path().join("used").is_file());
    drop(held);

    let pruned = prune(&["--cache-dir", cache_arg, "--older-than", "0s"]);
    assert!(pruned.contains(&format!("removed {used}")), "{pruned}");
    assert!(pruned.contains("0 layers (0 B) left"), "{pruned}");
}

#[test]
fn prune_refuses_a_malformed_size_and_leaves_a_missing_store_alone() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("none");
    let out = ocibuild(&[
        "prune",
        "--store",
        missing.to_str().unwrap(),
        "--max-size",
        "10X",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-size"), "{stderr}");
    let said = prune(&["--store", missing.to_str().unwrap(), "--all"]);
    assert!(said.contains("no layer store at"), "{said}");
    assert!(!missing.exists());
}
