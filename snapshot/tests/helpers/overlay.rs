//! Overlay directories, shared by `tests/overlay_mounts.rs` and the mount holder it
//! starts (`snapshot-test-helper hold-mount`, see `helper.rs`).

use std::fs;
use std::path::Path;

use ocibuild_snapshot::OverlayLayers;

/// The directories [`layers`] makes in `tmp`.
pub fn layer_paths(tmp: &Path) -> OverlayLayers {
    OverlayLayers {
        lowers: vec![tmp.join("lower")],
        upper: tmp.join("upper"),
        work: tmp.join("work"),
    }
}

/// One lower (holding `file`), one upper and one work directory in `tmp`.
pub fn layers(tmp: &Path) -> OverlayLayers {
    let layers = layer_paths(tmp);
    for dir in [&layers.lowers[0], &layers.upper, &layers.work] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(layers.lowers[0].join("file"), b"lower").unwrap();
    layers
}
