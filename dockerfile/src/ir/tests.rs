use super::*;
use crate::mount::MountSpec;
use std::path::Path;

/// The instructions of `text` after its FROM line.
fn instructions(text: &str) -> Vec<Instruction> {
    let parsed = crate::parse(&format!("FROM scratch\n{text}"), Path::new("Dockerfile")).unwrap();
    parsed.instructions.into_iter().skip(1).collect()
}

/// Lowers every instruction of `text` in one scope.
fn lower_all(text: &str, scope: &mut Scope) -> Vec<Result<Op, LowerError>> {
    instructions(text).iter().map(|i| lower(i, scope)).collect()
}

fn run_op(op: &Op) -> &RunOp {
    match op {
        Op::Run(run) => run,
        other => panic!("not a RUN: {other:?}"),
    }
}

#[test]
fn run_mounts_and_flags_are_expanded_and_parsed_once() {
    let mut scope = Scope::default();
    let ops = lower_all(
        "ARG DIR=/cache\nENV MODE=locked\n\
         RUN --mount=type=cache,target=$DIR,sharing=$MODE --network=none make\n",
        &mut scope,
    );
    let run = run_op(ops[2].as_ref().unwrap());
    assert_eq!(run.argv, ["/bin/sh", "-c", "make"]);
    assert_eq!(run.mount_texts, ["type=cache,target=/cache,sharing=locked"]);
    assert!(matches!(&run.mounts[0], MountSpec::Cache { target, .. } if target == "/cache"));
    assert_eq!(run.network, Network::None);
    assert_eq!(run.security, Security::Sandbox);
    assert_eq!(
        run.env,
        [
            ("MODE".into(), "locked".into()),
            ("DIR".into(), "/cache".into())
        ]
    );
}

#[test]
fn flag_errors_name_the_line() {
    let mut scope = Scope::default();
    let ops = lower_all(
        "RUN --network=bridge true\nRUN --security=root true\nRUN --mount=type=nope true\n\
         COPY --chmod=rwx a b\nEXPOSE http\nENV A=${B:?unset}\n",
        &mut scope,
    );
    let errors: Vec<LowerError> = ops.into_iter().map(|o| o.unwrap_err()).collect();
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        errors[0].to_string(),
        "line 2: RUN --network=bridge true: --network=bridge: expected default, none or host"
    );
    assert!(matches!(errors[1].reason, LowerReason::Security(_)));
    assert!(errors[2]
        .reason
        .to_string()
        .starts_with("--mount=type=nope: "));
    assert_eq!(errors[3].reason, LowerReason::Chmod("rwx".into()));
    assert!(matches!(errors[4].reason, LowerReason::Expose(_)));
    assert!(errors[5].reason.to_string().contains("unset"));
}

#[test]
fn run_key_fields_are_stable() {
    let mut scope = Scope {
        build_args: [("HTTP_PROXY".to_string(), Some("http://p".to_string()))].into(),
        ..Scope::default()
    };
    let ops = lower_all(
        "ARG V=1\nUSER app\nWORKDIR /src\nRUN --security=insecure echo $V\n",
        &mut scope,
    );
    let run = run_op(ops[3].as_ref().unwrap());
    // The proxy is in the environment but not in the key.
    assert!(run.env.contains(&("HTTP_PROXY".into(), "http://p".into())));
    let text = |s: &str| KeyValue::Text(s.into());
    let list = |l: &[&str]| KeyValue::List(l.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        run.key_fields(&[]),
        vec![
            ("mounts", list(&[])),
            ("mount-inputs", list(&[])),
            ("argv", list(&["/bin/sh", "-c", "echo $V"])),
            ("env", list(&["V=1"])),
            ("heredocs", list(&[])),
            ("user", text("app")),
            ("cwd", text("/src")),
            ("network", text("Host")),
            ("security", text("insecure")),
        ]
    );
}

#[test]
fn single_heredoc_runs_as_a_script() {
    let mut scope = Scope::default();
    let ops = lower_all("RUN <<EOF\n#!/bin/sh\necho hi\nEOF\n", &mut scope);
    let run = run_op(ops[0].as_ref().unwrap());
    assert_eq!(run.argv, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(run.script.as_ref().unwrap().content, "#!/bin/sh\necho hi\n");
    assert_eq!(run.heredocs, ["#!/bin/sh\necho hi\n"]);
}

#[test]
fn scope_follows_arg_env_user_workdir_and_shell() {
    let mut scope = Scope {
        build_args: [("B".to_string(), Some("cli".to_string()))].into(),
        ..Scope::default()
    };
    let ops = lower_all(
        "ARG A=1 B=2 C=$A\nENV A=env\nUSER u:$A\nWORKDIR app/../x\nWORKDIR y\n\
         SHELL [\"/bin/bash\", \"-c\"]\nCMD run\n",
        &mut scope,
    );
    let ops: Vec<Op> = ops.into_iter().map(|o| o.unwrap()).collect();
    assert_eq!(
        ops[0],
        Op::Meta(ConfigEdit::Arg(vec![
            ("A".into(), Some("1".into())),
            ("B".into(), Some("cli".into())),
            ("C".into(), Some("1".into())),
        ]))
    );
    assert_eq!(ops[2], Op::Meta(ConfigEdit::User("u:env".into())));
    assert_eq!(
        ops[4],
        Op::Workdir(WorkdirOp {
            path: "/x/y".into(),
            user: Some("u:env".into())
        })
    );
    assert_eq!(
        ops[6],
        Op::Meta(ConfigEdit::Cmd(vec![
            "/bin/bash".into(),
            "-c".into(),
            "run".into()
        ]))
    );
    assert_eq!(scope.workdir.as_deref(), Some("/x/y"));
}

#[test]
fn workdir_paths_are_cleaned() {
    assert_eq!(clean_path("//app/./x/../bin/"), "/app/bin");
    assert_eq!(clean_path("app"), "/app");
    assert_eq!(clean_path("/../.."), "/");
}

#[test]
fn copy_paths_and_flags_are_expanded() {
    let mut scope = Scope::default();
    let ops = lower_all(
        "ARG D=dst\nWORKDIR /w\nCOPY --chmod=644 --chown=$D --exclude=*.$D src/$D $D/\n",
        &mut scope,
    );
    let Ok(Op::Copy(copy)) = &ops[2] else {
        panic!("{:?}", ops[2])
    };
    assert_eq!(copy.sources, ["src/dst"]);
    assert_eq!(copy.dest_abs, "/w/dst/");
    assert_eq!(copy.chown.as_deref(), Some("dst"));
    assert_eq!(copy.chmod.as_ref().map(|c| c.bits), Some(0o644));
    assert_eq!(copy.exclude, ["*.dst"]);
}

#[test]
fn expose_accepts_protocols_and_ranges() {
    assert_eq!(expose_ports("8080").unwrap(), ["8080/tcp"]);
    assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
    assert_eq!(
        expose_ports("8000-8002/tcp").unwrap(),
        ["8000/tcp", "8001/tcp", "8002/tcp"]
    );
    assert!(expose_ports("http").is_err());
    assert!(expose_ports("80/icmp").is_err());
}
