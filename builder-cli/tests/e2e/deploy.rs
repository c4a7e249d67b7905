//! The deployable executor images and the files that deploy them (`deploy/`), end to end:
//!
//! - the static binary (`scripts/build-static.sh`) is put into the executor images by
//!   ocibuild itself (`deploy/prepare-context.sh`, `deploy/Dockerfile`,
//!   `deploy/Dockerfile.debug`), pushed to the lab registry and checked with skopeo and
//!   umoci; then the pushed executor image's own root filesystem runs its own
//!   `/kaniko/executor` like a pod (no shared libraries, no NSS, a registry named
//!   `localhost` resolved from `/etc/hosts`, credentials from the image's `DOCKER_CONFIG`);
//! - every executor command of the Kubernetes manifests, the Jenkinsfile and the GitLab CI
//!   file is run by the real binary (with `--dryrun`, or for real for `executor login`).
//!
//! Needs the lab (`scripts/lab.sh up`).

use crate::common::*;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test lab with `eval \"$(scripts/lab.sh env)\"`")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn deploy_file(name: &str) -> PathBuf {
    repo_root().join("deploy").join(name)
}

/// The static `ocibuild` built by `scripts/build-static.sh`, once; unoptimised
/// (`OCIBUILD_STATIC_PROFILE=dev`) to keep the suite fast — the images are the same but for
/// the binary's speed.
fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/build-static.sh"))
            .env("OCIBUILD_STATIC_PROFILE", "dev")
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/build-static.sh");
        assert_ok(&out, "scripts/build-static.sh");
        let path = PathBuf::from(text(&out.stdout).trim());
        assert!(path.is_file(), "build-static.sh printed {path:?}");
        let file = run("file", &["-b", path.to_str().unwrap()]);
        assert!(
            file.contains("statically linked") || file.contains("static-pie linked"),
            "{file}"
        );
        path
    })
}

/// The environment list (`KEY=VALUE`) of an image config.
fn config_env(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap_or_else(|| panic!("no Env in {config}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|e| e.strip_prefix(&format!("{key}=")))
}

/// The checks both executor images pass: entrypoint, kaniko's environment, labels, and
/// the files (with modes) umoci unpacks.
fn assert_executor_image(reference: &str, path_dirs: &[&str]) -> (Unpacked, Value) {
    let config = skopeo_config(reference);
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/kaniko/executor"]),
        "{config}"
    );
    assert_eq!(c["WorkingDir"], "/workspace", "{config}");
    let env = config_env(&config);
    assert_eq!(
        env_value(&env, "DOCKER_CONFIG"),
        Some("/kaniko/.docker"),
        "{env:?}"
    );
    assert_eq!(
        env_value(&env, "SSL_CERT_DIR"),
        Some("/kaniko/ssl/certs"),
        "{env:?}"
    );
    assert_eq!(
        env_value(&env, "SSL_CERT_FILE"),
        Some("/kaniko/ssl/certs/ca-certificates.crt"),
        "{env:?}"
    );
    let path: Vec<&str> = env_value(&env, "PATH").unwrap().split(':').collect();
    for dir in path_dirs {
        assert!(path.contains(dir), "PATH {path:?} lacks {dir}");
    }
    let labels = &c["Labels"];
    for key in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.source",
        "org.opencontainers.image.version",
    ] {
        assert!(labels[key].is_string(), "label {key} missing: {labels}");
    }
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    let img = unpack(&format!("docker://{reference}"));
    let r = &img.rootfs;
    assert_eq!(
        fs::read_link(r.join("kaniko/warmer")).unwrap(),
        Path::new("executor"),
        "/kaniko/warmer is the executor under the warmer's name"
    );
    let exe = fs::symlink_metadata(r.join("kaniko/executor")).unwrap();
    assert!(exe.is_file(), "/kaniko/executor is a regular file");
    assert_eq!(
        exe.permissions().mode() & 0o7777,
        0o755,
        "/kaniko/executor mode"
    );
    assert_eq!(
        fs::read(r.join("kaniko/executor")).unwrap(),
        fs::read(static_binary()).unwrap(),
        "/kaniko/executor is the static binary"
    );
    let certs = fs::read_to_string(r.join("kaniko/ssl/certs/ca-certificates.crt")).unwrap();
    assert_eq!(
        certs,
        fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap(),
        "the CA bundle is the host's"
    );
    let certs_mode = fs::metadata(r.join("kaniko/ssl/certs/ca-certificates.crt")).unwrap();
    assert_eq!(certs_mode.permissions().mode() & 0o7777, 0o644);
    let docker = r.join("kaniko/.docker");
    assert!(docker.is_dir(), "/kaniko/.docker exists");
    assert_eq!(
        fs::read_dir(&docker).unwrap().count(),
        0,
        "/kaniko/.docker is empty"
    );
    assert!(r.join("workspace").is_dir(), "WORKDIR /workspace exists");
    (img, config)
}

/// Runs `PROGRAM ARGS` (`/kaniko/executor`, `/kaniko/warmer`) of the root filesystem `root`
/// as a container runtime
/// would: new mount, pid and cgroup namespaces, `/proc` and `/dev` mounted, the host's
/// `/etc/hosts` and `/etc/resolv.conf` and the volumes `binds` (host directory, path in
/// the root) bind-mounted, chrooted, with exactly the image's
/// environment `env` (the runtime applies the image's ENV; chroot does not).
fn run_like_a_pod(
    root: &Path,
    env: &[String],
    binds: &[(&Path, &str)],
    program: &str,
    args: &[String],
) -> Output {
    let r = root.display();
    let quote = |s: &str| format!("'{}'", s.replace('\'', r#"'\''"#));
    let binds: Vec<String> = binds
        .iter()
        .map(|(host, inside)| {
            fs::create_dir_all(root.join(inside.trim_start_matches('/'))).unwrap();
            format!(
                "mount --bind {} {r}{inside}; ",
                quote(host.to_str().unwrap())
            )
        })
        .collect();
    let env_args: Vec<String> = env.iter().map(|e| quote(e)).collect();
    let exec_args: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let script = format!(
        "set -e; chroot_bin=\"$(command -v chroot)\"; \
         mount -t proc proc {r}/proc; mount --rbind /dev {r}/dev; \
         mount --bind /etc/hosts {r}/etc/hosts; mount --bind /etc/resolv.conf {r}/etc/resolv.conf; \
         {}exec env -i {} \"$chroot_bin\" {r} {program} {}",
        binds.concat(),
        env_args.join(" "),
        exec_args.join(" ")
    );
    Command::new("unshare")
        .args([
            "--mount", "--pid", "--cgroup", "--fork", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running unshare")
}

fn skopeo_with(args: &[&str]) -> Value {
    serde_json::from_str(&run("skopeo", args)).unwrap()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn executor_images_built_by_ocibuild_run_the_demo_like_a_pod() {
    let reg = registry();
    let auth_reg = env_var("OCIBUILD_TEST_AUTH_REGISTRY");
    let user = env_var("OCIBUILD_TEST_AUTH_USER");
    let password = env_var("OCIBUILD_TEST_AUTH_PASSWORD");
    let pid = std::process::id();

    // The build context of both images, made by the deploy script from the static binary.
    let bin = static_binary();
    let ctx_parent = tempfile::tempdir().unwrap();
    let ctx = ctx_parent.path().join("context");
    let out = Command::new(deploy_file("prepare-context.sh"))
        .args([bin.as_os_str(), ctx.as_os_str()])
        .output()
        .unwrap();
    assert_ok(&out, "deploy/prepare-context.sh");
    assert_eq!(PathBuf::from(text(&out.stdout).trim()), ctx);
    let ctx_s = ctx.to_str().unwrap();

    // ocibuild builds its own executor images.
    let executor_ref = format!("{reg}/ocibuild-executor:{pid}");
    let debug_ref = format!("{reg}/ocibuild-executor:{pid}-debug");
    build_ok(&[
        "--context",
        ctx_s,
        "--dockerfile",
        deploy_file("Dockerfile").to_str().unwrap(),
        "--destination",
        &executor_ref,
        "--build-arg",
        "VERSION=test",
    ]);
    build_ok(&[
        "--context",
        ctx_s,
        "--dockerfile",
        deploy_file("Dockerfile.debug").to_str().unwrap(),
        "--destination",
        &debug_ref,
        "--build-arg",
        &format!("BUSYBOX_IMAGE={reg}/busybox:latest"),
        "--build-arg",
        "VERSION=test",
    ]);

    let (executor_img, executor_config) =
        assert_executor_image(&executor_ref, &["/usr/local/bin", "/kaniko"]);
    assert_eq!(
        executor_config["config"]["Labels"]["org.opencontainers.image.version"],
        "test"
    );
    // FROM scratch: the executor, the certificates, /kaniko/.docker and /workspace only.
    let mut top: Vec<String> = fs::read_dir(&executor_img.rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["kaniko", "workspace"]);
    assert_eq!(
        executor_img.layer_files().len(),
        5,
        "one layer per COPY and WORKDIR"
    );

    let (debug_img, debug_config) =
        assert_executor_image(&debug_ref, &["/usr/local/bin", "/kaniko", "/busybox"]);
    assert_eq!(
        debug_config["config"]["Shell"],
        serde_json::json!(["/busybox/sh", "-c"])
    );
    let d = &debug_img.rootfs;
    assert!(
        d.join("busybox/sh").exists(),
        "/busybox/sh in the debug image"
    );
    assert!(
        d.join("busybox/sleep").exists(),
        "/busybox/sleep for `command: sleep`"
    );
    // The debug image's shell works on its own (a static busybox) and sees the executor.
    let out = Command::new("chroot")
        .args([
            d.to_str().unwrap(),
            "/busybox/sh",
            "-c",
            "PATH=/usr/local/bin:/kaniko:/busybox; ls -l /kaniko/executor && \
             executor --help | grep -q -- --destination && echo shell-ok",
        ])
        .output()
        .unwrap();
    assert_ok(&out, "/busybox/sh in the debug image");
    assert!(
        text(&out.stdout).contains("shell-ok"),
        "{}",
        text(&out.stdout)
    );

    // The pushed executor image's root filesystem is the pod: its own static executor,
    // nothing from the host but /proc, /dev, /etc/hosts and /etc/resolv.conf (mounts, as
    // a container runtime makes them), the build context in /workspace and registry
    // credentials where the Secret of deploy/k8s/pod.yaml puts them.
    let root = &executor_img.rootfs;
    for dir in ["proc", "dev", "etc"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in [".dockerenv", "etc/hosts", "etc/resolv.conf"] {
        fs::write(root.join(file), "").unwrap();
    }
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", testdata("demo").display()),
            root.join("workspace").to_str().unwrap(),
        ],
    );
    // The registries by name: resolved by the static binary's own resolver.
    let port = |addr: &str| addr.rsplit_once(':').unwrap().1.to_string();
    let plain_by_name = format!("localhost:{}", port(&reg));
    let auth_by_name = format!("localhost:{}", port(&auth_reg));
    let auth = base64(format!("{user}:{password}").as_bytes());
    fs::write(
        root.join("kaniko/.docker/config.json"),
        serde_json::json!({"auths": {auth_by_name.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();

    // A private CA, added to the image's bundle as a cluster would mount its own: the
    // executor trusts what SSL_CERT_FILE holds.
    let tls_reg = env_var("OCIBUILD_TEST_TLS_REGISTRY");
    let tls_by_name = format!("localhost:{}", port(&tls_reg));
    let mut bundle = fs::read(root.join("kaniko/ssl/certs/ca-certificates.crt")).unwrap();
    bundle.extend(fs::read(env_var("OCIBUILD_TEST_TLS_CA")).unwrap());
    fs::write(root.join("kaniko/ssl/certs/ca-certificates.crt"), bundle).unwrap();

    let demo_plain = format!("{plain_by_name}/ocibuild-deploy-demo:{pid}");
    let demo_tls = format!("{tls_by_name}/ocibuild-deploy-demo:{pid}");
    let demo_auth = format!("{auth_by_name}/ocibuild-deploy-demo:{pid}");
    let args: Vec<String> = [
        "--dockerfile=Dockerfile",
        &format!("--destination={demo_plain}"),
        &format!("--destination={demo_auth}"),
        &format!("--destination={demo_tls}"),
        &format!("--build-arg=BASE_REGISTRY={plain_by_name}"),
        "--build-arg=GREETING=hello from the executor image",
        "--cache=true",
        "--cache-dir=/cache",
        "--digest-file=/kaniko/digest",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cache = tempfile::tempdir().unwrap();
    let env = config_env(&executor_config);
    let binds = [(cache.path(), "/cache")];
    // kaniko's warmer fills the cache volume with the Dockerfile's base first.
    let warm_args: Vec<String> = [
        "--cache-dir=/cache",
        "--dockerfile=/workspace/Dockerfile",
        &format!("--build-arg=BASE_REGISTRY={plain_by_name}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_like_a_pod(root, &env, &binds, "/kaniko/warmer", &warm_args);
    assert_ok(&out, "the executor image's /kaniko/warmer in its own root");
    let busybox_layers = skopeo_inspect(&format!("{reg}/busybox:latest"))["Layers"].clone();
    for layer in busybox_layers.as_array().unwrap() {
        let hex = layer.as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            cache.path().join("blobs/sha256").join(hex).is_file(),
            "the warmer put base layer {hex} into /cache"
        );
    }
    let out = run_like_a_pod(root, &env, &binds, "/kaniko/executor", &args);
    assert_ok(
        &out,
        "the executor image's /kaniko/executor in its own root",
    );
    let log = text(&out.stderr);
    assert!(log.contains("RUN mkdir -p /var/lib/app"), "{log}");

    // The demo, as skopeo and umoci read it back from both registries.
    let digest = fs::read_to_string(root.join("kaniko/digest")).unwrap();
    let plain_ref = format!("{reg}/ocibuild-deploy-demo:{pid}");
    assert_eq!(skopeo_inspect(&plain_ref)["Digest"], digest.trim());
    let creds = format!("{user}:{password}");
    let auth_inspect = skopeo_with(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{auth_reg}/ocibuild-deploy-demo:{pid}"),
    ]);
    assert_eq!(
        auth_inspect["Digest"],
        digest.trim(),
        "pushed with the credentials"
    );
    let tls_inspect = skopeo_with(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{tls_reg}/ocibuild-deploy-demo:{pid}"),
    ]);
    assert_eq!(tls_inspect["Digest"], digest.trim(), "pushed over TLS");
    let config = skopeo_config(&plain_ref);
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/app/bin/start"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--port", "8080"]));
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "demo");
    let env = config_env(&config);
    assert_eq!(env_value(&env, "APP_HOME"), Some("/app"), "{env:?}");
    let demo = unpack(&format!("docker://{plain_ref}"));
    assert_eq!(
        fs::read_to_string(demo.rootfs.join("var/lib/app/greeting")).unwrap(),
        "hello from the executor image\n"
    );
    assert_eq!(
        fs::read(demo.rootfs.join("app/bin/start")).unwrap(),
        fs::read(testdata("demo/bin/start")).unwrap()
    );
    assert!(!demo.rootfs.join("etc/app/config.txt").exists());
    assert!(demo.rootfs.join("bin/busybox").is_file(), "the base image");
    // Nothing of the executor's own root got into the image.
    for path in [
        "kaniko",
        "cache",
        ".dockerenv",
        "workspace/Dockerfile",
        "etc/resolv.conf",
        "etc/hosts",
    ] {
        assert!(
            !demo.rootfs.join(path).exists(),
            "/{path} must not be in the demo image"
        );
    }
    // The cache directory of the pod (its PVC) holds the layers.
    assert!(
        fs::read_dir(cache.path()).unwrap().count() > 0,
        "--cache-dir=/cache filled the volume"
    );
}

/// Standard base64 with padding (the `auth` of a docker config.json).
fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

// ---------------------------------------------------------------------------------------
// The manifests and CI files: every executor command in them is run by the real binary.

/// A build context for the dry runs: the lab's busybox, a build arg, a RUN and a COPY.
fn dry_context() -> tempfile::TempDir {
    context_with(
        &format!(
            "ARG VERSION=dev\nFROM {}/busybox:latest\nARG VERSION\n\
             COPY app.txt /app.txt\nRUN echo \"$VERSION\" > /version\n",
            registry()
        ),
        &[("app.txt", "app\n")],
    )
}

/// Checks the output of a `--dryrun` of [`dry_context`].
fn assert_dry_plan(out: &Output, what: &str) {
    assert_ok(out, what);
    let plan = text(&out.stdout);
    assert!(plan.contains("target: stage 0"), "{what}: {plan}");
    assert!(
        plan.contains(&format!("FROM image {}/busybox:latest", registry())),
        "{what}: {plan}"
    );
    assert!(plan.contains("COPY app.txt /app.txt"), "{what}: {plan}");
}

fn yaml_str<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

fn yaml_seq<'a>(v: &'a Yaml, key: &str) -> Vec<&'a Yaml> {
    v.get(key)
        .and_then(Yaml::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// Fails when any `privileged` key anywhere in `v` is true.
fn assert_not_privileged(v: &Yaml, what: &str) {
    match v {
        Yaml::Mapping(m) => {
            for (k, val) in m {
                if k.as_str() == Some("privileged") {
                    assert_ne!(val.as_bool(), Some(true), "{what}: privileged: true");
                }
                assert_not_privileged(val, what);
            }
        }
        Yaml::Sequence(s) => s.iter().for_each(|x| assert_not_privileged(x, what)),
        _ => {}
    }
}

/// The executor container of a pod spec, checked the way every deploy file must be: the
/// registry Secret's `.dockerconfigjson` becomes `/kaniko/.docker/config.json`, `/cache`
/// is a PersistentVolumeClaim, nothing is privileged. Returns the container.
fn checked_executor_container<'a>(spec: &'a Yaml, what: &str) -> &'a Yaml {
    assert_not_privileged(spec, what);
    let containers = yaml_seq(spec, "containers");
    let container = containers
        .iter()
        .copied()
        .find(|c| yaml_str(c, "image").is_some_and(|i| i.contains("ocibuild-executor")))
        .unwrap_or_else(|| panic!("{what}: no container runs the ocibuild-executor image"));
    let volumes = yaml_seq(spec, "volumes");
    let volume = |name: &str| {
        volumes
            .iter()
            .copied()
            .find(|v| yaml_str(v, "name") == Some(name))
            .unwrap_or_else(|| panic!("{what}: volume {name} is not defined"))
    };
    let mut config_json = None;
    let mut cache = None;
    for mount in yaml_seq(container, "volumeMounts") {
        let name = yaml_str(mount, "name").unwrap();
        let path = yaml_str(mount, "mountPath").unwrap();
        let v = volume(name);
        if let Some(secret) = v.get("secret") {
            for item in yaml_seq(secret, "items") {
                if yaml_str(item, "key") == Some(".dockerconfigjson") {
                    let file = match yaml_str(mount, "subPath") {
                        Some(sub) if sub == yaml_str(item, "path").unwrap() => path.to_string(),
                        Some(_) => continue,
                        None => format!("{path}/{}", yaml_str(item, "path").unwrap()),
                    };
                    config_json = Some(file);
                }
            }
        }
        if v.get("persistentVolumeClaim").is_some() {
            cache = Some(path.to_string());
        }
    }
    assert_eq!(
        config_json.as_deref(),
        Some("/kaniko/.docker/config.json"),
        "{what}: the registry Secret's .dockerconfigjson must become /kaniko/.docker/config.json"
    );
    assert_eq!(
        cache.as_deref(),
        Some("/cache"),
        "{what}: the cache PVC at /cache"
    );
    container
}

/// A directory holding `executor`, a link to the ocibuild under test, so that commands
/// written for `/kaniko/executor` run it under kaniko's name.
fn executor_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("executor");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ocibuild"), &link).unwrap();
    (dir, link)
}

/// Runs a shell command line from a CI file with `/kaniko/executor` replaced by the
/// binary under test and `--cache-dir=/cache` by `cache`, in `env`.
fn run_ci_line(line: &str, link: &Path, cache: &Path, env: &[(&str, &str)]) -> Output {
    let line = line
        .replace("/kaniko/executor", link.to_str().unwrap())
        .replace(
            "--cache-dir=/cache",
            &format!("--cache-dir={}", cache.display()),
        );
    Command::new("sh")
        .args(["-e", "-c", &line])
        .env_remove("DOCKER_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running sh")
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn kubernetes_manifests_run_the_executor_with_flags_it_accepts() {
    let mut dir: Vec<PathBuf> = fs::read_dir(deploy_file("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    dir.sort();
    let mut pods = 0;
    let mut claims = Vec::new();
    let mut claimed = Vec::new();
    for file in &dir {
        let what = file.display().to_string();
        let doc: Yaml = serde_yaml::from_str(&fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let spec = match yaml_str(&doc, "kind") {
            Some("Pod") => &doc["spec"],
            Some("Job") => &doc["spec"]["template"]["spec"],
            Some("PersistentVolumeClaim") => {
                let modes = yaml_seq(&doc["spec"], "accessModes");
                assert!(
                    modes.iter().any(|m| m.as_str() == Some("ReadWriteMany")),
                    "{what}: shared by several build pods"
                );
                claims.push(yaml_str(&doc["metadata"], "name").unwrap().to_string());
                continue;
            }
            other => panic!("{what}: unexpected kind {other:?}"),
        };
        pods += 1;
        assert_eq!(yaml_str(spec, "restartPolicy"), Some("Never"), "{what}");
        let container = checked_executor_container(spec, &what);
        for v in yaml_seq(spec, "volumes") {
            if let Some(claim) = v.get("persistentVolumeClaim") {
                claimed.push(yaml_str(claim, "claimName").unwrap().to_string());
            }
        }
        // The image's entrypoint is the executor: args only.
        assert!(container.get("command").is_none(), "{what}: no command");
        let args: Vec<String> = yaml_seq(container, "args")
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        for expected in [
            "--context=dir:///workspace",
            "--dockerfile=Dockerfile",
            "--cache=true",
            "--cache-dir=/cache",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "{what}: {expected} in {args:?}"
            );
        }
        assert!(
            args.iter().any(|a| a.starts_with("--destination=")),
            "{what}"
        );
        // The context is the emptyDir mounted at /workspace.
        let workspace = yaml_seq(container, "volumeMounts")
            .into_iter()
            .find(|m| yaml_str(m, "mountPath") == Some("/workspace"))
            .unwrap_or_else(|| panic!("{what}: /workspace is not mounted"));
        let ws_volume = yaml_seq(spec, "volumes")
            .into_iter()
            .find(|v| yaml_str(v, "name") == yaml_str(workspace, "name"))
            .unwrap();
        assert!(
            ws_volume.get("emptyDir").is_some(),
            "{what}: workspace emptyDir"
        );

        // The real binary takes every arg; the pod's paths become local ones.
        let ctx = dry_context();
        let cache = tempfile::tempdir().unwrap();
        let kaniko = tempfile::tempdir().unwrap();
        let mut run_args = vec!["executor".to_string()];
        for a in &args {
            run_args.push(match a.as_str() {
                "--context=dir:///workspace" => format!("--context=dir://{}", ctx.path().display()),
                "--cache-dir=/cache" => format!("--cache-dir={}", cache.path().display()),
                _ => a.clone(),
            });
        }
        run_args.push("--dryrun".into());
        run_args.push(format!("--kaniko-dir={}", kaniko.path().display()));
        let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
        let out = ocibuild(&run_args);
        assert_dry_plan(&out, &what);
    }
    assert_eq!(pods, 2, "pod.yaml and job.yaml");
    assert!(!claims.is_empty(), "a PersistentVolumeClaim manifest");
    for claim in claimed {
        assert!(
            claims.contains(&claim),
            "claim {claim} is defined in deploy/k8s"
        );
    }
}

/// The text between `start` (after its first occurrence following `after`) and the next
/// `end`.
fn between<'a>(text: &'a str, after: &str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not found"));
    let rest = &text[from..];
    let s = rest
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"))
        + start.len();
    let e = rest[s..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found"))
        + s;
    &rest[s..e]
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn jenkinsfile_pod_template_and_executor_step_work() {
    let jenkinsfile = fs::read_to_string(deploy_file("jenkins/Jenkinsfile")).unwrap();
    // The agent pod: the debug image kept alive by its busybox `sleep`.
    let pod: Yaml = serde_yaml::from_str(between(&jenkinsfile, "kubernetes {", "yaml '''", "'''"))
        .expect("the podTemplate yaml");
    assert_eq!(yaml_str(&pod, "kind"), Some("Pod"));
    let container = checked_executor_container(&pod["spec"], "Jenkinsfile pod");
    assert!(
        yaml_str(container, "image").unwrap().ends_with(":debug"),
        "sleep needs the debug image's busybox"
    );
    assert_eq!(
        container["command"],
        serde_yaml::from_str::<Yaml>("[sleep]").unwrap()
    );
    let sleep_arg = container["args"][0].as_str().unwrap();
    assert!(["infinity", "99d"].contains(&sleep_arg), "{sleep_arg}");
    let name = yaml_str(container, "name").unwrap();
    assert!(
        jenkinsfile.contains(&format!("container('{name}')")),
        "the stage runs in the {name} container"
    );

    // The stage's shell step, run by sh with Jenkins' environment.
    let step = between(
        &jenkinsfile,
        &format!("container('{name}')"),
        "sh '''",
        "'''",
    );
    assert!(step.trim_start().starts_with("/kaniko/executor "), "{step}");
    let image = between(&jenkinsfile, "environment {", "IMAGE = '", "'");
    let ctx = dry_context();
    let cache = tempfile::tempdir().unwrap();
    let kaniko = tempfile::tempdir().unwrap();
    let (_link_dir, link) = executor_link();
    let line = format!(
        "{} --dryrun --kaniko-dir={}",
        step.trim(),
        kaniko.path().display()
    );
    let out = run_ci_line(
        &line,
        &link,
        cache.path(),
        &[
            ("WORKSPACE", ctx.path().to_str().unwrap()),
            ("BUILD_NUMBER", "42"),
            ("GIT_COMMIT", "0123456789abcdef"),
            ("IMAGE", image),
        ],
    );
    assert_dry_plan(&out, "the Jenkinsfile's executor step");
    assert_eq!(image, "registry.example.com/team/app");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn gitlab_ci_job_logs_in_and_runs_the_executor() {
    let ci: Yaml =
        serde_yaml::from_str(&fs::read_to_string(deploy_file("gitlab/.gitlab-ci.yml")).unwrap())
            .unwrap();
    let job = &ci["build-image"];
    let image = &job["image"];
    assert!(
        yaml_str(image, "name").unwrap().ends_with(":debug"),
        "a shell is needed"
    );
    assert_eq!(
        image["entrypoint"],
        serde_yaml::from_str::<Yaml>("['']").unwrap()
    );
    let script: Vec<&str> = yaml_seq(job, "script")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        script.iter().all(|l| l.contains("/kaniko/executor")),
        "{script:?}"
    );

    // GitLab's predefined variables, pointing at the lab's registry with authentication.
    let auth_reg = env_var("OCIBUILD_TEST_AUTH_REGISTRY");
    let user = env_var("OCIBUILD_TEST_AUTH_USER");
    let password = env_var("OCIBUILD_TEST_AUTH_PASSWORD");
    let ctx = dry_context();
    let docker = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let kaniko = tempfile::tempdir().unwrap();
    let (_link_dir, link) = executor_link();
    let registry_image = format!("{auth_reg}/group/project");
    let env = [
        ("CI_REGISTRY", auth_reg.as_str()),
        ("CI_REGISTRY_USER", user.as_str()),
        ("CI_REGISTRY_PASSWORD", password.as_str()),
        ("CI_REGISTRY_IMAGE", registry_image.as_str()),
        ("CI_PROJECT_DIR", ctx.path().to_str().unwrap()),
        ("CI_COMMIT_TAG", "v1.2.3"),
        // The image's ENV, as the job container gets it.
        ("DOCKER_CONFIG", docker.path().to_str().unwrap()),
    ];
    let mut logged_in = false;
    let mut built = false;
    for line in script {
        if line.contains("/kaniko/executor login") {
            let out = run_ci_line(line, &link, cache.path(), &env);
            assert_ok(&out, line);
            let config: Value =
                serde_json::from_slice(&fs::read(docker.path().join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(
                config["auths"][&auth_reg]["auth"],
                base64(format!("{user}:{password}").as_bytes()),
                "{config}"
            );
            logged_in = true;
        } else {
            assert!(logged_in, "the login comes before the build");
            let line = format!("{line} --dryrun --kaniko-dir={}", kaniko.path().display());
            let out = run_ci_line(&line, &link, cache.path(), &env);
            assert_dry_plan(&out, &line);
            built = true;
        }
    }
    assert!(logged_in && built, "a login line and an executor line");
}
