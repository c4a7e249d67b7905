//! The embedding API ([`ocibuild_core::Build`]): inline Dockerfiles, directory and tar
//! stream contexts, images that own their layer files, exports read by umoci and skopeo,
//! pushes and cancellation. The RUN and push tests need the test lab
//! (`eval "$(scripts/lab.sh env)"` provides `OCIBUILD_TEST_REGISTRY`).

use ocibuild_core::{
    Build, BuildError, BuildEvent, BuiltImage, CancelToken, Context, Dockerfile, Isolation,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn registry() -> String {
    std::env::var("OCIBUILD_TEST_REGISTRY").expect(
        "OCIBUILD_TEST_REGISTRY is not set: run `eval \"$(scripts/lab.sh env)\"` (after `scripts/lab.sh up`)",
    )
}

/// A context directory holding `a` (`hello`).
fn context_with_a() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "hello\n").unwrap();
    ctx
}

/// Builds `FROM scratch` + `COPY a /a` from `context`.
async fn build_copy_a(context: Context) -> BuiltImage {
    let store = tempfile::tempdir().unwrap();
    Build::new(Dockerfile::inline("FROM scratch\nCOPY a /a\n"), context)
        .layer_store(store.path())
        .run()
        .await
        .unwrap()
}

/// Runs a command, failing the test with its output when it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The manifest digest skopeo sees at `transport`.
fn skopeo_digest(transport: &str) -> String {
    let json = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", transport]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["Digest"].as_str().unwrap().to_string()
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn an_inline_dockerfile_and_a_directory_give_an_oci_layout_umoci_and_skopeo_read() {
    let ctx = context_with_a();
    let image = build_copy_a(Context::dir(ctx.path())).await;
    assert_eq!(image.layers().len(), 1);
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    image.write_oci_layout(&layout, Some("v1")).await.unwrap();

    let reference = format!("oci:{}:v1", layout.display());
    assert_eq!(skopeo_digest(&reference), image.digest());
    let bundle = out.path().join("bundle");
    let image_arg = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["unpack", "--image", &image_arg])
        .arg(&bundle));
    let copied = std::fs::read_to_string(bundle.join("rootfs/a")).unwrap();
    assert_eq!(copied, "hello\n");
}

#[tokio::test]
async fn the_layer_files_live_until_the_image_is_dropped() {
    let ctx = context_with_a();
    let image = build_copy_a(Context::dir(ctx.path())).await;
    let dir = image.dir().to_path_buf();
    let paths: Vec<_> = image.layers().into_iter().filter_map(|l| l.path).collect();
    assert_eq!(paths.len(), 1);
    for path in &paths {
        assert!(
            path.starts_with(&dir),
            "{} not in {}",
            path.display(),
            dir.display()
        );
        assert!(path.is_file(), "{} is missing", path.display());
    }
    drop(image);
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn a_tar_stream_is_a_context() {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "a", &b"hello\n"[..])
        .unwrap();
    let bytes = archive.into_inner().unwrap();

    let image = build_copy_a(Context::tar_stream(std::io::Cursor::new(bytes))).await;
    let out = tempfile::tempdir().unwrap();
    let tarball = out.path().join("image.tar");
    image
        .write_docker_archive(&tarball, &["example.com/api/tar:1"])
        .await
        .unwrap();
    let transport = format!("docker-archive:{}", tarball.display());
    let config = run(Command::new("skopeo").args(["inspect", "--config", &transport]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(image.layers()[0].diff_id.as_str())
    );
}

#[tokio::test]
async fn a_context_url_that_is_not_there_is_a_context_error() {
    let built = Build::new(
        Dockerfile::inline("FROM scratch\n"),
        Context::url("tar:///nonexistent/ctx.tar.gz"),
    )
    .run()
    .await;
    assert!(matches!(built, Err(BuildError::Context(_))), "{built:?}");
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn an_image_is_pushed_to_the_lab_registry() {
    let ctx = context_with_a();
    let reg = registry();
    let image = Build::new(
        Dockerfile::inline("FROM scratch\nCOPY a /a\n"),
        Context::dir(ctx.path()),
    )
    .layer_store(ctx.path().join("layer-store"))
    .insecure_registry(&reg)
    .run()
    .await
    .unwrap();
    let dest = format!("{reg}/api-push:{}", std::process::id());
    let digests = image.push(&[&dest]).await.unwrap();
    assert_eq!(digests, vec![image.digest().to_string()]);
    assert_eq!(skopeo_digest(&format!("docker://{dest}")), image.digest());
}

/// The pids of processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<String> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Cancels a build of `RUN sh -c 'sleep SECONDS; true'` (the sleep is a grandchild of the
/// sandbox's first process) once the sleep runs, and checks that the build ends with
/// `Cancelled` within 2 s, that no sleep is left and that the temporary directory and the
/// step directories in the layer store are gone.
async fn cancel_a_running_command(isolation: Isolation, seconds: &str) {
    let reg = registry();
    let ctx = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let token = CancelToken::new();
    let (started, mut run_started) = tokio::sync::watch::channel(false);
    let dockerfile = format!("FROM {reg}/busybox:latest\nRUN sh -c 'sleep {seconds}; true'\n");
    let build = Build::new(Dockerfile::inline(dockerfile), Context::dir(ctx.path()))
        .insecure_registry(&reg)
        .isolation(isolation)
        .temp_dir_in(temp.path())
        .layer_store(store.path())
        .events(move |event| {
            if let BuildEvent::Step { instruction, .. } = event {
                if instruction.starts_with("RUN") {
                    let _ = started.send(true);
                }
            }
        })
        .cancel_on(token.clone());
    let running = tokio::spawn(build.run());

    run_started.wait_for(|s| *s).await.unwrap();
    let sleep = ["sleep", seconds];
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_running(&sleep).is_empty() {
        assert!(Instant::now() < deadline, "the RUN command never started");
        if running.is_finished() {
            panic!("the build ended early: {:?}", running.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled_at = Instant::now();
    token.cancel();
    let result = running.await.unwrap();
    let took = cancelled_at.elapsed();

    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    assert_eq!(processes_running(&sleep), Vec::<String>::new());
    assert!(
        is_empty_dir(temp.path()),
        "the temporary directory was left behind"
    );
    assert!(
        is_empty_dir(&store.path().join("steps")),
        "the step directories were left behind"
    );
}

// Unusual durations, so that no other test's `sleep` is mistaken for these.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn cancelling_kills_the_running_command_in_namespaces_and_removes_the_temporary_directory() {
    cancel_a_running_command(Isolation::Namespaces, "3017").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn cancelling_kills_the_running_command_and_its_children_in_chroot_mode() {
    cancel_a_running_command(Isolation::Chroot, "3018").await;
}

/// COPY and the exports hand their blocking file work to `block_in_place` on a
/// multi-threaded runtime (and run inline on the current-thread runtimes above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_runs_on_a_multi_threaded_runtime_from_a_spawned_task() {
    let ctx = context_with_a();
    let context = Context::dir(ctx.path());
    let image = tokio::spawn(build_copy_a(context)).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let tarball = out.path().join("image.tar");
    image.write_docker_archive(&tarball, &[]).await.unwrap();
    image
        .write_oci_layout(out.path().join("layout"), None)
        .await
        .unwrap();
    assert!(tarball.is_file());
}
