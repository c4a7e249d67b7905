//! `cache-test-writer ROLE DIR ...`: a process storing into the local cache `DIR/cache`,
//! started (and sometimes killed) by the tests in `tests/cache.rs`. Roles:
//!
//! * `worker DIR SCRATCH ID`: stores 8 keys every worker shares (same layers) and 6 of its
//!   own, checking each with a lookup.
//! * `forever DIR SCRATCH SIZE`: stores layers of SIZE bytes under fresh keys until killed,
//!   alternating hard links (layer files in DIR) and copies (in SCRATCH).
//! * `rival DIR ID`: stores 8 keys every rival also stores, each time with a layer of its
//!   own (as builds whose layers are not reproducible do), 3 rounds.
//! * `limited DIR ID MAX`: stores 30 keys of its own, 50 kB each, with the size limit MAX,
//!   printing `stored <key name> <nanoseconds since the epoch>` after each.
//!
//! A failed check panics, so the test sees a failed process.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ocibuild_cache::LocalCache;

mod common;

use common::{key, layer_file, sha256};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .unwrap_or_else(|| panic!("argument {i} missing: {args:?}"))
    };
    let number = |i: usize| -> u64 { arg(i).parse().unwrap() };
    let dir = PathBuf::from(arg(1));
    match arg(0) {
        "worker" => worker(&dir, Path::new(arg(2)), number(3)),
        "forever" => forever(&dir, Path::new(arg(2)), number(3) as usize),
        "rival" => rival(&dir, number(2)),
        "limited" => limited(&dir, number(2), number(3)),
        other => panic!("unknown role {other}"),
    }
}

fn worker(dir: &Path, scratch: &Path, id: u64) {
    let cache = LocalCache::open(&dir.join("cache"), None).unwrap();
    for round in 0..6u64 {
        for shared in 0..8u64 {
            let (layer, file) = layer_file(dir, 100 + shared, 30_000);
            let k = key(&format!("shared-{shared}"));
            cache.put(&k, &layer, &file).unwrap();
            let mut warnings = Vec::new();
            let (got, path) = cache.get(&k, &mut warnings).unwrap().unwrap();
            assert_eq!(got.digest, layer.digest);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
        }
        let seed = 1000 * id + round;
        let (layer, file) = layer_file(scratch, seed, 50_000);
        let k = key(&format!("own-{seed}"));
        cache.put(&k, &layer, &file).unwrap();
        let mut warnings = Vec::new();
        let (got, _) = cache.get(&k, &mut warnings).unwrap().unwrap();
        assert_eq!(got, layer);
    }
}

fn forever(dir: &Path, scratch: &Path, size: usize) {
    let cache = LocalCache::open(&dir.join("cache"), None).unwrap();
    for i in 0u64.. {
        let base = if i % 2 == 0 { dir } else { scratch };
        let (layer, file) = layer_file(base, 5000 + i, size);
        cache.put(&key(&format!("k{i}")), &layer, &file).unwrap();
        fs::remove_file(file).unwrap();
    }
}

fn rival(dir: &Path, id: u64) {
    let cache = LocalCache::open(&dir.join("cache"), None).unwrap();
    for round in 0..3u64 {
        for shared in 0..8u64 {
            let seed = 10_000 * id + 100 * round + shared;
            let (layer, file) = layer_file(dir, seed, 100_000);
            cache
                .put(&key(&format!("shared-{shared}")), &layer, &file)
                .unwrap();
            fs::remove_file(file).unwrap();
        }
    }
}

fn limited(dir: &Path, id: u64, max: u64) {
    let cache = LocalCache::open(&dir.join("cache"), Some(max)).unwrap();
    for i in 0..30u64 {
        let name = format!("limited-{id}-{i}");
        let (layer, file) = layer_file(dir, 20_000 * id + i, 50_000);
        cache.put(&key(&name), &layer, &file).unwrap();
        fs::remove_file(file).unwrap();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        println!("stored {name} {nanos}");
    }
}
