//! ARG scoping, checked on `FROM scratch` builds that only set labels (no registry, no
//! RUN): BuildKit's dockerfile frontend is the reference for each rule.

use ocibuild_core::{build, BuildEvent, BuildOptions};
use std::collections::BTreeMap;

/// Builds `dockerfile` (no push) with `build_args`; returns the image labels and the
/// warnings the build reported.
async fn labels_of(
    dockerfile: &str,
    build_args: &[(&str, &str)],
) -> (BTreeMap<String, String>, Vec<String>) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let mut opts = BuildOptions::default();
    opts.context = ctx.path().to_path_buf();
    opts.dockerfile = ctx.path().join("Dockerfile");
    opts.no_push = true;
    // Never the machine's default store (/var/lib/ocibuild as root).
    opts.layer_store = Some(ctx.path().join("layer-store"));
    opts.build_args = build_args
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    let mut warnings = Vec::new();
    let mut events = |e: BuildEvent| {
        if let BuildEvent::Warning(w) = e {
            warnings.push(w);
        }
    };
    let out = build(&opts, &mut events).await.unwrap();
    let labels = out.config().config.labels.clone().unwrap_or_default();
    (labels.into_iter().collect(), warnings)
}

/// BuildKit (dockerfile2llb, a stage whose base is another stage starts from a copy of
/// that stage's dispatch state, build args included): `$NAME` in a stage built FROM
/// `base` is base's value, and so is a bare `ARG NAME` two stages down.
#[tokio::test]
async fn a_stage_built_from_a_stage_starts_with_its_arg_values() {
    let (labels, _) = labels_of(
        "FROM scratch AS base\nARG NAME=\"base\"\n\
         FROM base AS base-dev\nARG NAME=\"$NAME-dev\"\nLABEL dev=$NAME\n\
         FROM base-dev\nARG NAME\nLABEL final=$NAME\n",
        &[],
    )
    .await;
    assert_eq!(labels["dev"], "base-dev");
    assert_eq!(labels["final"], "base-dev");
}

#[tokio::test]
async fn an_image_stage_does_not_see_args_of_other_stages() {
    let (labels, _) = labels_of(
        "FROM scratch AS one\nARG NAME=one\n\
         FROM scratch\nARG NAME\nLABEL seen=\"[$NAME]\"\n",
        &[],
    )
    .await;
    assert_eq!(labels["seen"], "[]");
}

#[tokio::test]
async fn a_build_arg_still_overrides_an_inherited_arg() {
    let (labels, _) = labels_of(
        "FROM scratch AS base\nARG NAME=base\n\
         FROM base\nARG NAME=\"$NAME-dev\"\nLABEL v=$NAME\n",
        &[("NAME", "cli")],
    )
    .await;
    assert_eq!(labels["v"], "cli");
}

/// BuildKit's `ArgCommand.Expand` expands the name as well as the value: with
/// `ENV src=file3`, `ARG ${src}=...` declares `file3`, which `--build-arg file3` sets.
#[tokio::test]
async fn arg_names_are_expanded_before_they_are_declared() {
    let (labels, warnings) = labels_of(
        "FROM scratch\nENV src=file3\nARG ${src}=context/bar/${baz}\nLABEL v=$file3\n",
        &[("file3", "from-cli")],
    )
    .await;
    assert_eq!(labels["v"], "from-cli");
    assert!(warnings.is_empty(), "{warnings:?}");

    let (labels, _) = labels_of(
        "FROM scratch\nENV src=file3 baz=b\nARG ${src}=context/bar/${baz}\nLABEL v=$file3\n",
        &[],
    )
    .await;
    assert_eq!(labels["v"], "context/bar/b");
}
