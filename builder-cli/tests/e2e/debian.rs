//! Real builds under the RUN sandbox: a Debian base (the lab's `debootstrap --variant=minbase`
//! image) with dpkg, apt-get from the Debian archive, users, `chown`, a setuid program run
//! by a non-root user, and `mknod` — the things a sandbox that is too tight would break.

use crate::common::*;

/// Builds `dockerfile` (with the `hello` package in the context) and pushes it to `image`.
fn build_debian(dockerfile: &str, image: &str, extra: &[&str]) -> String {
    let deb = std::env::var("OCIBUILD_TEST_HELLO_DEB")
        .expect("OCIBUILD_TEST_HELLO_DEB is unset: run eval \"$(scripts/lab.sh env)\"");
    let ctx = context_with(dockerfile, &[]);
    run(
        "cp",
        &[&deb, ctx.path().join("hello.deb").to_str().unwrap()],
    );
    let ctx_path = ctx.path().to_str().unwrap();
    let mut args = vec!["-c", ctx_path, "-d", image];
    args.extend_from_slice(extra);
    let out = build_ok(&args);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn dpkg_apt_users_chown_setuid_and_mknod_work_in_a_debian_base() {
    let reg = registry();
    let image = format!("{}:1", unique_repo("debian-real"));
    let log = build_debian(
        &format!(
            "FROM {reg}/debian:bookworm\n\
             COPY hello.deb /tmp/hello.deb\n\
             RUN dpkg -i /tmp/hello.deb && hello && rm /tmp/hello.deb\n\
             RUN apt-get update && apt-get install -y --no-install-recommends cpio \
                 && rm -rf /var/lib/apt/lists/*\n\
             RUN useradd --create-home builder && mkdir /srv/data \
                 && chown builder:builder /srv/data && mknod /srv/null c 1 3\n\
             USER builder\n\
             RUN passwd --status builder > /home/builder/status && touch /srv/data/mine\n"
        ),
        &image,
        &[],
    );
    assert!(
        log.contains("Hello, world!"),
        "dpkg-installed hello ran:\n{log}"
    );
    let unpacked = unpack(&format!("docker://{image}"));
    let root = &unpacked.rootfs;
    assert!(root.join("usr/bin/hello").is_file());
    assert!(
        root.join("usr/bin/cpio").is_file(),
        "apt-get installed cpio"
    );
    // passwd reads /etc/shadow: only possible when its setuid bit took effect for the
    // non-root user (no nosuid, no no_new_privs under the default sandbox, as in Docker).
    let status = std::fs::read_to_string(root.join("home/builder/status")).unwrap();
    assert!(status.starts_with("builder "), "{status}");
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(meta("srv/data").uid(), meta("home/builder").uid());
    assert_eq!(meta("srv/data/mine").uid(), meta("home/builder").uid());
    assert!(meta("srv/null").file_type().is_char_device());
    assert_eq!(
        meta("usr/bin/passwd").mode() & 0o4000,
        0o4000,
        "setuid kept"
    );
}
