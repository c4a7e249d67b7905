//! Tests of `ocibuild_dockerfile::mount`: `--mount` values to typed specs.

use ocibuild_dockerfile::mount::{parse_mount, MountSpec, MountSpecError, Sharing};

fn cache(target: &str, id: &str) -> MountSpec {
    MountSpec::Cache {
        target: target.into(),
        id: id.into(),
        sharing: Sharing::Shared,
        readonly: false,
        from: None,
        source: None,
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

fn err(spec: &str) -> String {
    match parse_mount(spec) {
        Ok(m) => panic!("{spec:?} parsed as {m:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cache_defaults_and_every_key() {
    assert_eq!(
        parse_mount("type=cache,target=/root/.cache").unwrap(),
        cache("/root/.cache", "/root/.cache")
    );
    assert_eq!(
        parse_mount(
            "type=cache,target=/root/.gradle,id=gradle,sharing=locked,ro,from=builder,\
             source=/seed,mode=0700,uid=1000,gid=100"
        )
        .unwrap(),
        MountSpec::Cache {
            target: "/root/.gradle".into(),
            id: "gradle".into(),
            sharing: Sharing::Locked,
            readonly: true,
            from: Some("builder".into()),
            source: Some("/seed".into()),
            mode: 0o700,
            uid: 1000,
            gid: 100,
        }
    );
    for (text, sharing) in [
        ("shared", Sharing::Shared),
        ("private", Sharing::Private),
        ("locked", Sharing::Locked),
        ("LOCKED", Sharing::Locked),
    ] {
        let m = parse_mount(&format!("type=cache,target=/c,sharing={text}")).unwrap();
        assert!(matches!(m, MountSpec::Cache { sharing: s, .. } if s == sharing));
    }
    // Keys in any order and case; type after target; empty id falls back to the target.
    assert_eq!(
        parse_mount("Target=/x,TYPE=Cache,id=").unwrap(),
        cache("/x", "/x")
    );
    // mode with 0o prefix, readonly=false, rw.
    let m = parse_mount("type=cache,dst=/x,mode=0o750,readonly=false").unwrap();
    assert!(matches!(
        m,
        MountSpec::Cache {
            mode: 0o750,
            readonly: false,
            ..
        }
    ));
    let m = parse_mount("type=cache,dst=/x,ro=true,rw").unwrap();
    assert!(matches!(
        m,
        MountSpec::Cache {
            readonly: false,
            ..
        }
    ));
}

#[test]
fn bind_is_the_default_type() {
    assert_eq!(
        parse_mount("target=/src").unwrap(),
        MountSpec::Bind {
            target: "/src".into(),
            from: None,
            source: "/".into(),
            readwrite: false
        }
    );
    assert_eq!(
        parse_mount("type=bind,from=build,src=/out/app,destination=/app,rw").unwrap(),
        MountSpec::Bind {
            target: "/app".into(),
            from: Some("build".into()),
            source: "/out/app".into(),
            readwrite: true
        }
    );
    for (flags, rw) in [
        ("readwrite=true", true),
        ("readwrite=false", false),
        ("rw=1", true),
        ("rw=0", false),
        ("ro", false),
        ("ro=false", true),
        ("readonly=TRUE", false),
        ("readonly=f", true),
    ] {
        let m = parse_mount(&format!("type=bind,target=/t,{flags}")).unwrap();
        assert!(
            matches!(m, MountSpec::Bind { readwrite, .. } if readwrite == rw),
            "{flags}"
        );
    }
}

#[test]
fn tmpfs_and_sizes() {
    assert_eq!(
        parse_mount("type=tmpfs,target=/tmp").unwrap(),
        MountSpec::Tmpfs {
            target: "/tmp".into(),
            size: None
        }
    );
    for (text, bytes) in [
        ("1024", 1024u64),
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("1g", 1 << 30),
        ("512k", 512 << 10),
        ("2GiB", 2 << 30),
    ] {
        assert_eq!(
            parse_mount(&format!("type=tmpfs,dst=/t,size={text}")).unwrap(),
            MountSpec::Tmpfs {
                target: "/t".into(),
                size: Some(bytes)
            },
            "{text}"
        );
    }
    let e = err("type=tmpfs,target=/t,size=lots");
    assert!(e.contains("size") && e.contains("lots"), "{e}");
}

#[test]
fn secret_defaults() {
    assert_eq!(
        parse_mount("type=secret,id=npmrc").unwrap(),
        MountSpec::Secret {
            id: "npmrc".into(),
            target: Some("/run/secrets/npmrc".into()),
            env: None,
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0
        }
    );
    // The id defaults to the target's file name.
    assert_eq!(
        parse_mount("type=secret,target=/root/.npmrc").unwrap(),
        MountSpec::Secret {
            id: ".npmrc".into(),
            target: Some("/root/.npmrc".into()),
            env: None,
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0
        }
    );
    // env only: no file unless a target is given.
    assert_eq!(
        parse_mount("type=secret,id=token,env=API_TOKEN,required").unwrap(),
        MountSpec::Secret {
            id: "token".into(),
            target: None,
            env: Some("API_TOKEN".into()),
            required: true,
            mode: 0o400,
            uid: 0,
            gid: 0
        }
    );
    assert_eq!(
        parse_mount(
            "type=secret,id=token,env=TOKEN,target=/t,required=false,mode=0440,uid=1,gid=2,ro"
        )
        .unwrap(),
        MountSpec::Secret {
            id: "token".into(),
            target: Some("/t".into()),
            env: Some("TOKEN".into()),
            required: false,
            mode: 0o440,
            uid: 1,
            gid: 2
        }
    );
    // source= names the secret, as in BuildKit.
    let m = parse_mount("type=secret,src=aws").unwrap();
    assert!(matches!(&m, MountSpec::Secret { id, .. } if id == "aws"));
    assert_eq!(m.target(), Some("/run/secrets/aws"));
    let m = parse_mount("type=secret,required=true,id=x").unwrap();
    assert!(matches!(m, MountSpec::Secret { required: true, .. }));
}

#[test]
fn quoting_and_relative_targets() {
    assert_eq!(
        parse_mount(r#"type=cache,"target=/a,b",id="x ""y"" z""#).unwrap(),
        cache("/a,b", r#"x "y" z"#)
    );
    assert_eq!(
        parse_mount(r#"type=cache,target="/with space""#).unwrap(),
        cache("/with space", "/with space")
    );
    assert_eq!(
        parse_mount("type=cache,target=root/.m2").unwrap(),
        cache("/root/.m2", "/root/.m2")
    );
    assert_eq!(
        parse_mount("type=cache,target=/a/../b/./c/").unwrap(),
        cache("/b/c", "/b/c")
    );
    let e = err(r#"type=cache,target="/open"#);
    assert!(e.contains("quote"), "{e}");
}

#[test]
fn mount_errors() {
    let e = err("type=cache,target=/x,colour=blue");
    assert!(e.contains("colour") && e.contains("expected"), "{e}");
    let e = err("type=volume,target=/x");
    assert!(e.contains("volume") && e.contains("tmpfs"), "{e}");
    let e = err("type=ssh");
    assert!(e.contains("not supported yet"), "{e}");
    assert!(matches!(
        parse_mount("type=ssh,target=/x"),
        Err(MountSpecError::SshNotSupported)
    ));
    for kind in ["cache", "bind", "tmpfs"] {
        let e = err(&format!("type={kind},id=x"));
        let e2 = err(&format!("type={kind}"));
        assert!(e2.contains("target") && e2.contains(kind), "{e2}");
        assert!(e.contains("target") || e.contains("does not apply"), "{e}");
    }
    let e = err("type=secret");
    assert!(e.contains("id="), "{e}");
    let e = err("type=cache,target=/x,mode=0999");
    assert!(e.contains("mode") && e.contains("octal"), "{e}");
    let e = err("type=cache,target=/x,mode=abc");
    assert!(e.contains("mode"), "{e}");
    let e = err("type=cache,target=/x,sharing=sometimes");
    assert!(e.contains("sometimes") && e.contains("locked"), "{e}");
    let e = err("type=cache,target=/x,uid=me");
    assert!(e.contains("uid"), "{e}");
    let e = err("type=cache,target=/x,ro=maybe");
    assert!(e.contains("maybe"), "{e}");
    let e = err("type=cache,target=/");
    assert!(e.contains("root"), "{e}");
    let e = err("type=cache,target");
    assert!(e.contains("key=value"), "{e}");
    let e = err("type");
    assert!(e.contains("key=value"), "{e}");
    // Keys that mean nothing for the type.
    for spec in [
        "type=bind,target=/x,sharing=locked",
        "type=bind,target=/x,id=a",
        "type=bind,target=/x,mode=0755",
        "type=cache,target=/x,size=1m",
        "type=cache,target=/x,required",
        "type=cache,target=/x,env=A",
        "type=tmpfs,target=/x,ro",
        "type=tmpfs,target=/x,from=a",
        "type=secret,id=a,from=b",
        "type=secret,id=a,sharing=locked",
    ] {
        let e = err(spec);
        assert!(e.contains("does not apply"), "{spec}: {e}");
    }
    let e = err("type=secret,id=a,rw");
    assert!(e.contains("read-only"), "{e}");
    let e = err("type=secret,id=a,source=b");
    assert!(e.contains("id=") && e.contains("source="), "{e}");
    let e = err("type=secret,id=a,env=A=B");
    assert!(e.contains("env"), "{e}");
}
