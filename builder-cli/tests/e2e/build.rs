//! End-to-end behaviour of `ocibuild build` against the lab registry, checked with skopeo,
//! umoci and GNU tar — tools independent of ocibuild.

use crate::common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn demo_args<'a>(base: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--context",
        "../testdata/demo",
        "--dockerfile",
        "../testdata/demo/Dockerfile",
        "--build-arg",
        base,
        "--insecure",
    ];
    args.extend_from_slice(extra);
    args
}

fn env_of(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn demo_image_has_the_expected_config_files_and_whiteout() {
    let reg = registry();
    let base_arg = format!("BASE_REGISTRY={reg}");
    let dest = format!("{}:1", unique_repo("demo"));
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let digest_path = digest_file.path().to_str().unwrap();
    build_ok(&demo_args(
        &base_arg,
        &["--destination", &dest, "--digest-file", digest_path],
    ));

    // The digest file holds the pushed manifest's digest.
    let inspect = skopeo_inspect(&dest);
    assert_eq!(
        fs::read_to_string(digest_path).unwrap(),
        inspect["Digest"].as_str().unwrap()
    );

    // Config: every field the Dockerfile sets, on top of the base image's.
    let base = skopeo_config(&format!("{reg}/busybox:latest"));
    let base_path = env_of(&base)
        .into_iter()
        .find(|e| e.starts_with("PATH="))
        .unwrap();
    let config = skopeo_config(&dest);
    let c = &config["config"];
    assert_eq!(
        env_of(&config),
        vec![
            format!("PATH=/app/bin:{}", &base_path[5..]),
            "APP_HOME=/app".to_string()
        ]
    );
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "demo");
    assert_eq!(c["Entrypoint"], json!(["/app/bin/start"]));
    assert_eq!(c["Cmd"], json!(["--port", "8080"]));
    assert_eq!(config["os"], "linux");

    // History: the base's entries, then one per instruction after FROM; only WORKDIR (it
    // creates /app), the two COPYs and RUN made layers.
    let history = config["history"].as_array().unwrap();
    let base_history = base["history"].as_array().map_or(0, Vec::len);
    let ours: Vec<(String, bool)> = history[base_history..]
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let with_layers: Vec<&str> = ours
        .iter()
        .filter(|(_, e)| !e)
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(ours.len(), 11, "{ours:?}");
    assert_eq!(with_layers.len(), 4, "{ours:?}");
    assert!(with_layers[0].starts_with("WORKDIR"));
    assert!(with_layers[3].starts_with("RUN mkdir -p /var/lib/app"));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        diff_ids.len(),
        base["rootfs"]["diff_ids"].as_array().unwrap().len() + 4
    );

    // Files, modes and owners, read back with umoci.
    let img = unpack(&format!("docker://{dest}"));
    let root = &img.rootfs;
    let start = root.join("app/bin/start");
    assert_eq!(
        fs::read(&start).unwrap(),
        fs::read(testdata("demo/bin/start")).unwrap()
    );
    assert_eq!(mode(&start), 0o755);
    let meta = fs::metadata(&start).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert!(root.join("etc/app").is_dir());
    assert!(!root.join("etc/app/config.txt").exists(), "RUN deleted it");
    assert_eq!(
        fs::read_to_string(root.join("var/lib/app/greeting")).unwrap(),
        "hello\n"
    );
    assert!(
        root.join("bin/busybox").is_file(),
        "base image content is there"
    );

    // The RUN layer holds the whiteout and nothing of the isolation (proc, dev, resolv.conf).
    let layers = img.layer_files();
    let run_layer = tar_names(layers.last().unwrap());
    assert!(
        run_layer.contains(&"etc/app/.wh.config.txt".to_string()),
        "{run_layer:?}"
    );
    assert!(
        run_layer.contains(&"var/lib/app/greeting".to_string()),
        "{run_layer:?}"
    );
    for name in &run_layer {
        assert!(
            !name.starts_with("proc") && !name.starts_with("dev") && !name.starts_with("sys"),
            "{name} leaked into the RUN layer"
        );
        assert!(
            name != "etc/resolv.conf" && name != "etc/hosts",
            "{name} leaked"
        );
    }
    // The second COPY layer carries the file the RUN later deletes.
    let copy_layer = tar_names(&layers[layers.len() - 2]);
    assert!(
        copy_layer.contains(&"etc/app/config.txt".to_string()),
        "{copy_layer:?}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn build_args_change_the_result_and_several_destinations_get_the_same_image() {
    let reg = registry();
    let base_arg = format!("BASE_REGISTRY={reg}");
    let first = format!("{}:a", unique_repo("multi"));
    let second = format!("{}:b", unique_repo("multi"));
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("image.tar");
    build_ok(&demo_args(
        &base_arg,
        &[
            "--build-arg",
            "GREETING=bonjour",
            "--label",
            "team=ci",
            "--destination",
            &first,
            "--destination",
            &second,
            "--tar-path",
            tar.to_str().unwrap(),
        ],
    ));
    let a = skopeo_inspect(&first);
    let b = skopeo_inspect(&second);
    assert_eq!(a["Digest"], b["Digest"]);
    assert_eq!(a["Labels"]["team"], "ci");

    // The tarball is a docker-archive skopeo reads, with the same content.
    let img = unpack(&format!("docker-archive:{}", tar.display()));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("var/lib/app/greeting")).unwrap(),
        "bonjour\n"
    );
    let pushed = unpack(&format!("docker://{first}"));
    assert_eq!(
        fs::read_to_string(pushed.rootfs.join("var/lib/app/greeting")).unwrap(),
        "bonjour\n"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn scratch_image_round_trips_with_dockerignore_chmod_and_metadata() {
    let dest = format!("{}:1", unique_repo("scratch"));
    build_ok(&[
        "--context",
        "../testdata/scratch",
        "--destination",
        &dest,
        "--insecure",
    ]);
    let config = skopeo_config(&dest);
    let c = &config["config"];
    assert!(env_of(&config).contains(&"GREETING=hello world".to_string()));
    assert_eq!(c["WorkingDir"], "/usr/share/hello");
    assert_eq!(
        c["Labels"],
        json!({"version": "1", "description": "static files only"})
    );
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Volumes"], json!({"/data": {}}));
    assert_eq!(c["Cmd"], json!(["/hello"]));
    assert!(c.get("Entrypoint").is_none_or(Value::is_null));

    let img = unpack(&format!("docker://{dest}"));
    let root = &img.rootfs;
    assert_eq!(
        fs::read_to_string(root.join("usr/share/hello/message.txt")).unwrap(),
        "hello from scratch\n"
    );
    assert_eq!(mode(&root.join("usr/share/hello/secret.txt")), 0o600);
    assert!(root.join("etc/passwd").is_file());
    assert!(
        !root.join("usr/share/hello/draft.local").exists(),
        ".dockerignore excludes *.local"
    );
    // COPY rootfs/, then COPY secret.txt; WORKDIR found its directory and made no layer.
    assert_eq!(img.layer_files().len(), 2);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_failing_run_names_the_dockerfile_line_and_exit_code() {
    let reg = registry();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {reg}/busybox:latest\nRUN echo visible-output && exit 3\nRUN echo never\n"),
    )
    .unwrap();
    let out = ocibuild(&[
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--insecure-pull",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("exited with code 3"), "{stderr}");
    assert!(stderr.contains("visible-output"), "{stderr}");
    assert!(!stderr.contains("never\n"), "{stderr}");
}

#[test]
fn an_unknown_instruction_is_reported_with_file_and_line() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nFORM x\n").unwrap();
    let out = ocibuild(&[
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("unknown instruction"),
        "{stderr}"
    );
}

#[test]
fn a_missing_destination_is_explained() {
    let out = ocibuild(&["build", "--context", "../testdata/scratch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--destination"), "{stderr}");
    assert!(stderr.contains("--no-push"), "{stderr}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn no_push_with_tar_path_writes_an_archive_and_pushes_nothing() {
    let reg = registry();
    let base_arg = format!("BASE_REGISTRY={reg}");
    let dest = format!("{}:never", unique_repo("nopush"));
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("out.tar");
    build_ok(&demo_args(
        &base_arg,
        &[
            "--destination",
            &dest,
            "--no-push",
            "--tar-path",
            tar.to_str().unwrap(),
        ],
    ));
    let img = unpack(&format!("docker-archive:{}", tar.display()));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("var/lib/app/greeting")).unwrap(),
        "hello\n"
    );
    assert!(img.rootfs.join("bin/busybox").is_file());
    let inspect = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "--no-push must not push");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn run_steps_see_env_args_workdir_user_and_both_command_forms() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             ARG COLOR=blue\n\
             ENV FOO=bar\n\
             RUN [\"/bin/sh\", \"-c\", \"id -u > /tmp/exec-form-uid\"]\n\
             RUN echo \"$FOO $COLOR\" > /tmp/vars\n\
             USER nobody\n\
             WORKDIR /work/dir\n\
             RUN id -u > /tmp/user-uid && pwd > /tmp/pwd && echo $HOME > /tmp/home\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("runsem"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--insecure",
        "--build-arg",
        "COLOR=green",
    ]);
    let img = unpack(&format!("docker://{dest}"));
    let read = |p: &str| fs::read_to_string(img.rootfs.join(p)).unwrap();
    assert_eq!(read("tmp/exec-form-uid"), "0\n");
    assert_eq!(read("tmp/vars"), "bar green\n");
    assert_eq!(read("tmp/user-uid"), "65534\n");
    assert_eq!(read("tmp/pwd"), "/work/dir\n");
    assert_eq!(read("tmp/home"), "/nonexistent\n");
    // WORKDIR creates the directory owned by the current USER, as BuildKit does.
    let meta = fs::metadata(img.rootfs.join("work/dir")).unwrap();
    assert_eq!(meta.uid(), 65534);
    // ARG values reach RUN but never the image config.
    let config = skopeo_config(&dest);
    assert!(!env_of(&config).iter().any(|e| e.starts_with("COLOR=")));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn manifest_lists_resolve_to_the_build_platform() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox-multi:latest\nRUN busybox true && echo ok > /ok\n"),
        &[],
    );
    let dest = format!("{}:1", unique_repo("multi-arch"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--insecure",
    ]);
    let config = skopeo_config(&dest);
    assert_eq!(config["architecture"], "amd64");
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(fs::read_to_string(img.rootfs.join("ok")).unwrap(), "ok\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn registries_with_basic_auth_use_docker_config_credentials() {
    let AuthRegistry {
        registry: auth_reg,
        docker_config,
        user,
        password,
        ..
    } = auth_registry();
    let with_creds = [("DOCKER_CONFIG", docker_config.path().to_str().unwrap())];
    let empty_config = tempfile::tempdir().unwrap();
    let without_creds = [("DOCKER_CONFIG", empty_config.path().to_str().unwrap())];

    // Push a scratch image to the registry that needs credentials...
    let base = format!("{auth_reg}/auth-base:{}", std::process::id());
    let args = [
        "build",
        "--context",
        "../testdata/scratch",
        "--destination",
        &base,
        "--insecure",
    ];
    let denied = ocibuild_with_env(&args, &without_creds);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("401") || stderr.contains("credentials"),
        "{stderr}"
    );
    let pushed = ocibuild_with_env(&args, &with_creds);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // ...then build FROM it, pulling with the same credentials.
    let ctx = context_with(
        &format!("FROM {base}\nCOPY extra.txt /extra.txt\n"),
        &[("extra.txt", "x")],
    );
    let dest = format!("{auth_reg}/auth-derived:{}", std::process::id());
    let out = ocibuild_with_env(
        &[
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &dest,
            "--insecure",
        ],
        &with_creds,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{user}:{password}"),
            &format!("docker://{dest}"),
        ],
    );
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn docker_schema2_bases_are_pulled_and_the_result_keeps_their_format() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox-docker:latest\nRUN echo hi > /hi\n"),
        &[],
    );
    let dest = format!("{}:1", unique_repo("docker-format"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]);
    let manifest = skopeo_manifest(&dest);
    assert_media_types(
        &manifest,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(fs::read_to_string(img.rootfs.join("hi")).unwrap(), "hi\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn stages_copy_from_each_other_and_target_picks_one() {
    let reg = registry();
    let text = format!(
        "FROM {reg}/busybox:latest AS build\n\
         RUN mkdir /out && echo built > /out/app && chown 1000:1000 /out/app\n\
         FROM build AS test\n\
         RUN echo tested > /out/test-report\n\
         FROM scratch\n\
         COPY --from=build /out/app /app\n\
         CMD [\"/app\"]\n"
    );
    let ctx = context_with(&text, &[]);
    let dest = format!("{}:final", unique_repo("stages"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]);
    let img = unpack(&format!("docker://{dest}"));
    let app = img.rootfs.join("app");
    assert_eq!(fs::read_to_string(&app).unwrap(), "built\n");
    let meta = fs::metadata(&app).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "COPY --from keeps owners"
    );
    assert_eq!(img.layer_files().len(), 1, "only the COPY layer on scratch");
    assert!(!img.rootfs.join("bin").exists());

    let dest = format!("{}:test", unique_repo("stages"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--target",
        "test",
    ]);
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("out/test-report")).unwrap(),
        "tested\n"
    );
    assert!(img.rootfs.join("bin/busybox").is_file());
}

/// The `layered` fixture is made by umoci: a layer with a hard link, a setuid file owned by
/// 1234:2345, a symlink and an old mtime, then a layer whose whiteouts delete a directory
/// and a file. RUN sees the rootfs exactly as those layers describe it.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn base_layers_unpack_with_whiteouts_hardlinks_owners_modes_and_mtimes() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/layered:latest\n\
             RUN {{ test ! -e /data/dir && echo dir-gone; test ! -e /data/keep/y && echo y-gone; \
             stat -c '%u:%g %a %h' /data/a; \
             [ $(stat -c %i /data/a) = $(stat -c %i /data/b) ] && echo same-inode; \
             readlink /data/link; stat -c %Y /data/keep/z; }} > /report\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("layered"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]);
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("report")).unwrap(),
        "dir-gone\ny-gone\n1234:2345 4750 2\nsame-inode\n../data/a\n1000000000\n"
    );
}

/// Serves `body` at any path on a loopback port for `requests` requests; returns the port.
fn serve_once(body: &'static [u8], requests: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn add_downloads_urls_and_verifies_their_checksum() {
    let body: &'static [u8] = b"downloaded content\n";
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
    );
    let port = serve_once(body, 2);
    let ctx = context_with(
        &format!(
            "FROM scratch\nADD --checksum={digest} http://127.0.0.1:{port}/files/data.txt /downloads/\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("add-url"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]);
    let img = unpack(&format!("docker://{dest}"));
    let file = img.rootfs.join("downloads/data.txt");
    assert_eq!(fs::read(&file).unwrap(), body);
    assert_eq!(mode(&file), 0o600, "ADD from a URL gives mode 0600");

    let bad = context_with(
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} http://127.0.0.1:{port}/files/data.txt /d/\n",
            "0".repeat(64)
        ),
        &[],
    );
    let out = ocibuild(&[
        "build",
        "--context",
        bad.path().to_str().unwrap(),
        "--no-push",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.contains(&digest),
        "the error names the actual digest: {stderr}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn from_platform_and_custom_platform_pick_the_matching_manifest() {
    let reg = registry();
    // The fixture's arm64/v8 entry reuses the amd64 layer, so RUN still works on this host.
    let ctx = context_with(
        &format!(
            "FROM --platform=linux/arm64 {reg}/busybox-multi:latest\n\
             ARG TARGETARCH\nRUN echo \"target=$TARGETARCH\" > /arch\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("platform"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]);
    assert_eq!(skopeo_config(&dest)["architecture"], "arm64");

    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox-multi:latest\nARG TARGETARCH\nRUN echo \"$TARGETARCH\" > /arch\n"
        ),
        &[],
    );
    let dest = format!("{}:2", unique_repo("platform"));
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--custom-platform",
        "linux/arm64/v8",
    ]);
    assert_eq!(skopeo_config(&dest)["architecture"], "arm64");
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("arch")).unwrap(),
        "arm64\n"
    );
}

/// As in a Kubernetes pod's default profile: without CAP_SYS_ADMIN, creating namespaces
/// and mounting are refused. The error says so and names the way out, which works.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn without_namespace_rights_the_error_names_the_isolation_to_use() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nRUN echo ran > /ran\n"),
        &[],
    );
    let build = |isolation: &str| {
        std::process::Command::new("setpriv")
            .args(["--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"])
            .arg(env!("CARGO_BIN_EXE_ocibuild"))
            .args([
                "build",
                "--context",
                ctx.path().to_str().unwrap(),
                "--no-push",
            ])
            .args(["--isolation", isolation])
            .output()
            .expect("running setpriv (util-linux)")
    };
    let out = build("namespaces");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("--isolation chroot"), "{stderr}");
    assert!(stderr.contains("--isolation none"), "{stderr}");
    let out = build("chroot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: with two ONBUILD triggers every trigger layer was written to one file, so
/// the first layer's recorded digest no longer matched its bytes (DIGEST_INVALID on push,
/// a corrupt `--tar-path` archive). Each trigger now gets its own complete layer.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_base_with_two_onbuild_triggers_gives_a_child_that_pushes_and_exports_intact() {
    let reg = registry();
    let base = format!("{}:1", unique_repo("onbuild-two-base"));
    let base_ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nONBUILD RUN echo a > /a\nONBUILD RUN echo b > /b\n"),
        &[],
    );
    let ctx_arg = base_ctx.path().to_str().unwrap();
    build_ok(&["--context", ctx_arg, "--insecure", "--destination", &base]);

    let child = format!("{}:1", unique_repo("onbuild-two-child"));
    let child_ctx = context_with(&format!("FROM {base}\nRUN echo c > /c\n"), &[]);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("child.tar");
    build_ok(&[
        "--context",
        child_ctx.path().to_str().unwrap(),
        "--insecure",
        "--destination",
        &child,
        "--tar-path",
        tar.to_str().unwrap(),
    ]);
    for source in [
        format!("docker://{child}"),
        format!("docker-archive:{}", tar.display()),
    ] {
        let img = unpack(&source);
        for (name, content) in [("a", "a\n"), ("b", "b\n"), ("c", "c\n")] {
            assert_eq!(
                fs::read_to_string(img.rootfs.join(name)).unwrap(),
                content,
                "/{name} in {source}"
            );
        }
    }
}
