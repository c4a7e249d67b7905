//! Parser tests, written as a specification of the accepted syntax.

use std::path::Path;

use super::*;

fn ok(text: &str) -> Dockerfile {
    match parse(text, Path::new("Dockerfile")) {
        Ok(d) => d,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(text: &str) -> ParseError {
    match parse(text, Path::new("Dockerfile")) {
        Ok(d) => panic!("expected an error, got {d:?}"),
        Err(e) => e,
    }
}

/// The instructions after a leading `FROM scratch`.
fn after_from(body: &str) -> Vec<Instruction> {
    let mut d = ok(&format!("FROM scratch\n{body}"));
    d.instructions.remove(0);
    d.instructions
}

/// The kind of the single instruction after `FROM scratch`.
fn one(body: &str) -> InstructionKind {
    let mut v = after_from(body);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0).kind
}

/// The error message for a body after `FROM scratch`.
fn msg(body: &str) -> String {
    err(&format!("FROM scratch\n{body}")).message
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn copy(body: &str) -> CopyArgs {
    match one(body) {
        InstructionKind::Copy(c) | InstructionKind::Add(c) => c,
        k => panic!("not COPY/ADD: {k:?}"),
    }
}

fn run(body: &str) -> RunArgs {
    match one(body) {
        InstructionKind::Run(r) => r,
        k => panic!("not RUN: {k:?}"),
    }
}

fn shell(text: &str) -> Command {
    Command::Shell(text.to_string())
}

fn exec(v: &[&str]) -> Command {
    Command::Exec(s(v))
}

// ---------------------------------------------------------------- the example file

#[test]
fn parses_the_demo_dockerfile() {
    let text = r#"FROM 127.0.0.1:5000/busybox:latest
ARG GREETING=hello
ENV APP_HOME=/app PATH=/app/bin:$PATH
WORKDIR $APP_HOME
COPY bin/ ./bin/
COPY config.txt /etc/app/
RUN mkdir -p /var/lib/app && echo "$GREETING" > /var/lib/app/greeting && rm /etc/app/config.txt
USER nobody
EXPOSE 8080
LABEL org.opencontainers.image.title=demo
ENTRYPOINT ["/app/bin/start"]
CMD ["--port", "8080"]
"#;
    let d = ok(text);
    assert_eq!(d.file, Path::new("Dockerfile"));
    assert_eq!(d.escape, '\\');
    assert_eq!(d.syntax, None);
    let lines: Vec<(usize, usize)> = d
        .instructions
        .iter()
        .map(|i| (i.line, i.end_line))
        .collect();
    assert_eq!(lines, (1..=12).map(|n| (n, n)).collect::<Vec<_>>());
    let k: Vec<&InstructionKind> = d.instructions.iter().map(|i| &i.kind).collect();
    assert_eq!(
        *k[0],
        InstructionKind::From {
            image: "127.0.0.1:5000/busybox:latest".into(),
            alias: None,
            platform: None
        }
    );
    assert_eq!(
        *k[1],
        InstructionKind::Arg(vec![ArgDecl {
            name: "GREETING".into(),
            default: Some("hello".into())
        }])
    );
    assert_eq!(
        *k[2],
        InstructionKind::Env(pairs(&[("APP_HOME", "/app"), ("PATH", "/app/bin:$PATH")]))
    );
    assert_eq!(*k[3], InstructionKind::Workdir("$APP_HOME".into()));
    match k[4] {
        InstructionKind::Copy(c) => {
            assert_eq!(c.sources, s(&["bin/"]));
            assert_eq!(c.dest, "./bin/");
            assert!(!c.json_form);
        }
        other => panic!("{other:?}"),
    }
    match k[5] {
        InstructionKind::Copy(c) => {
            assert_eq!(c.sources, s(&["config.txt"]));
            assert_eq!(c.dest, "/etc/app/");
        }
        other => panic!("{other:?}"),
    }
    match k[6] {
        InstructionKind::Run(r) => {
            assert_eq!(
                r.command,
                shell(
                    r#"mkdir -p /var/lib/app && echo "$GREETING" > /var/lib/app/greeting && rm /etc/app/config.txt"#
                )
            );
            assert!(r.mounts.is_empty() && r.heredocs.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*k[7], InstructionKind::User("nobody".into()));
    assert_eq!(*k[8], InstructionKind::Expose(s(&["8080"])));
    assert_eq!(
        *k[9],
        InstructionKind::Label(pairs(&[("org.opencontainers.image.title", "demo")]))
    );
    assert_eq!(
        *k[10],
        InstructionKind::Entrypoint(exec(&["/app/bin/start"]))
    );
    assert_eq!(*k[11], InstructionKind::Cmd(exec(&["--port", "8080"])));
    assert_eq!(d.instructions[6].original, text.lines().nth(6).unwrap());
}

// ---------------------------------------------------------------- parser directives

#[test]
fn syntax_directive_at_top_is_recorded() {
    let d = ok("# syntax=docker/dockerfile:1\nFROM scratch\n");
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.instructions.len(), 1);
}

#[test]
fn directive_key_is_case_insensitive_and_spaces_around_equals_are_allowed() {
    let d = ok("#SYNTAX = docker/dockerfile:1.7\n#  Escape =  `\nFROM scratch\n");
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(d.escape, '`');
}

#[test]
fn escape_directive_accepts_backslash_and_backtick_only() {
    assert_eq!(ok("# escape=\\\nFROM scratch").escape, '\\');
    assert_eq!(ok("# escape=`\nFROM scratch").escape, '`');
    let e = err("# escape=x\nFROM scratch");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("invalid escape token"), "{}", e.message);
}

#[test]
fn repeated_directive_is_an_error() {
    let e = err("# escape=`\n# escape=\\\nFROM scratch");
    assert_eq!(e.line, 2);
    assert_eq!(e.message, "only one escape parser directive can be used");
    let e = err("# syntax=a\n# SYNTAX=b\nFROM scratch");
    assert_eq!(e.message, "only one syntax parser directive can be used");
}

#[test]
fn directive_after_a_blank_line_is_a_comment() {
    let d = ok("\n# escape=`\nFROM scratch");
    assert_eq!(d.escape, '\\');
}

#[test]
fn directive_after_a_plain_comment_is_a_comment() {
    let d = ok("# my image\n# syntax=docker/dockerfile:1\nFROM scratch");
    assert_eq!(d.syntax, None);
}

#[test]
fn directive_after_an_instruction_is_a_comment() {
    let d = ok("FROM scratch\n# escape=`\n# escape=`\nRUN a \\\n  b");
    assert_eq!(d.escape, '\\');
    assert_eq!(
        d.instructions[1].kind,
        InstructionKind::Run(RunArgs {
            command: shell("a   b"),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
}

#[test]
fn unknown_directive_is_a_comment_and_ends_directives() {
    let d = ok("# foo=bar\n# escape=`\nFROM scratch");
    assert_eq!(d.escape, '\\');
}

#[test]
fn check_directive_is_accepted_and_ignored() {
    let d = ok("# check=skip=all\n# syntax=x\nFROM scratch");
    assert_eq!(d.syntax.as_deref(), Some("x"));
}

// ---------------------------------------------------------------- lines, comments, continuations

#[test]
fn keywords_are_case_insensitive() {
    let d = ok("from scratch\nrUn echo hi\nWorkDir /x");
    assert_eq!(d.instructions.len(), 3);
    assert_eq!(
        d.instructions[2].kind,
        InstructionKind::Workdir("/x".into())
    );
}

#[test]
fn comments_and_blank_lines_are_skipped() {
    let d = ok("# comment\n\n   # indented comment\nFROM scratch\n\n\t\nRUN true\n");
    assert_eq!(d.instructions.len(), 2);
    assert_eq!(d.instructions[0].line, 4);
    assert_eq!(d.instructions[1].line, 7);
}

#[test]
fn hash_not_at_line_start_is_literal() {
    assert_eq!(
        run("RUN echo hi # not a comment").command,
        shell("echo hi # not a comment")
    );
}

#[test]
fn leading_whitespace_before_keyword_is_allowed() {
    assert_eq!(one("   USER app"), InstructionKind::User("app".into()));
}

#[test]
fn continuation_joins_lines_removing_escape_and_newline() {
    let v = after_from("RUN apt-get update && \\\n    apt-get install -y curl\nUSER x");
    assert_eq!(v[0].line, 2);
    assert_eq!(v[0].end_line, 3);
    assert_eq!(
        v[0].original,
        "RUN apt-get update &&     apt-get install -y curl"
    );
    assert_eq!(v[1].line, 4);
}

#[test]
fn trailing_whitespace_after_escape_still_continues() {
    let v = after_from("RUN a \\   \n b");
    assert_eq!(v[0].original, "RUN a  b");
    assert_eq!(v[0].end_line, 3);
}

#[test]
fn comment_lines_inside_a_continuation_are_dropped() {
    let v = after_from("RUN a \\\n# a comment\n   # another\n b \\\n c");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].original, "RUN a  b  c");
    assert_eq!((v[0].line, v[0].end_line), (2, 6));
}

#[test]
fn empty_lines_inside_a_continuation_are_skipped() {
    let v = after_from("RUN a \\\n\n   \n b\nUSER u");
    assert_eq!(v[0].original, "RUN a  b");
    assert_eq!(v[0].end_line, 5);
    assert_eq!(v[1].line, 6);
}

#[test]
fn continuation_at_end_of_file_is_accepted() {
    let v = after_from("RUN a \\\n");
    assert_eq!(v[0].original, "RUN a");
}

#[test]
fn backtick_escape_continues_lines_and_leaves_backslashes_alone() {
    let d =
        ok("# escape=`\nFROM mcr.microsoft.com/windows\nCOPY testfile.txt c:\\\nRUN dir `\n  c:\\");
    assert_eq!(d.escape, '`');
    match &d.instructions[1].kind {
        InstructionKind::Copy(c) => assert_eq!(c.dest, "c:\\"),
        k => panic!("{k:?}"),
    }
    assert_eq!(d.instructions[2].original, "RUN dir   c:\\");
    assert_eq!(d.instructions[2].end_line, 5);
}

#[test]
fn crlf_line_endings_are_accepted() {
    let d = ok("FROM scratch\r\nRUN a \\\r\n  b\r\nENV A=1\r\n");
    assert_eq!(d.instructions[1].original, "RUN a   b");
    assert_eq!(
        d.instructions[2].kind,
        InstructionKind::Env(pairs(&[("A", "1")]))
    );
    assert_eq!(d.instructions[2].line, 4);
}

#[test]
fn utf8_bom_is_accepted() {
    let d = ok("\u{feff}# syntax=x\nFROM scratch");
    assert_eq!(d.syntax.as_deref(), Some("x"));
    let d = ok("\u{feff}FROM scratch");
    assert_eq!(d.instructions.len(), 1);
}

// ---------------------------------------------------------------- errors

#[test]
fn unknown_instruction_suggests_a_close_keyword() {
    let e = err("FORM scratch");
    assert_eq!(e.message, "unknown instruction: FORM (did you mean FROM?)");
    assert_eq!(e.line, 1);
    assert_eq!(e.text, "FORM scratch");
    assert_eq!(
        msg("rnu echo"),
        "unknown instruction: rnu (did you mean RUN?)"
    );
    assert_eq!(
        msg("COPYY a b"),
        "unknown instruction: COPYY (did you mean COPY?)"
    );
    assert_eq!(msg("FROBNICATE x"), "unknown instruction: FROBNICATE");
}

#[test]
fn error_display_has_file_line_message_and_text() {
    let e = parse("FROM scratch\n\nWORKDIR\n", Path::new("ctx/Dockerfile.dev")).unwrap_err();
    assert_eq!(e.file, Path::new("ctx/Dockerfile.dev"));
    assert_eq!(e.line, 3);
    assert_eq!(e.text, "WORKDIR");
    assert_eq!(
        e.to_string(),
        "ctx/Dockerfile.dev:3: WORKDIR requires at least one argument\n  | WORKDIR"
    );
}

#[test]
fn error_in_a_continued_instruction_reports_its_first_line_and_joined_text() {
    let e = err("FROM scratch\nCOPY \\\n  onlyone");
    assert_eq!(e.line, 2);
    assert_eq!(e.text, "COPY   onlyone");
}

#[test]
fn missing_arguments_are_errors() {
    for body in [
        "WORKDIR",
        "WORKDIR   ",
        "COPY onlyone",
        "ADD x",
        "COPY",
        "RUN",
        "RUN --network=none",
        "CMD",
        "ENTRYPOINT",
        "USER",
        "EXPOSE",
        "VOLUME",
        "STOPSIGNAL",
        "ENV",
        "LABEL",
        "ARG",
        "ONBUILD",
        "MAINTAINER",
        "HEALTHCHECK",
        "SHELL",
    ] {
        let e = err(&format!("FROM scratch\n{body}"));
        assert_eq!(e.line, 2, "{body}");
    }
    assert_eq!(
        msg("COPY onlyone"),
        "COPY requires at least two arguments (source and destination)"
    );
}

#[test]
fn instructions_before_the_first_from_other_than_arg_are_errors() {
    let d = ok("ARG VERSION=1\n# c\nARG OTHER\nFROM alpine:$VERSION");
    assert_eq!(d.instructions.len(), 3);
    let e = err("RUN true\nFROM scratch");
    assert_eq!(e.line, 1);
    assert_eq!(
        e.message,
        "RUN must come after FROM (only ARG may precede the first FROM)"
    );
    let e = err("ARG A\nenv B=1\nFROM scratch");
    assert_eq!(e.line, 2);
    assert!(e.message.starts_with("ENV must come after FROM"));
}

#[test]
fn no_from_is_an_error() {
    assert_eq!(err("").message, "no FROM instruction");
    assert_eq!(err("# just a comment\n\n").message, "no FROM instruction");
    assert_eq!(err("ARG A=1\n").message, "no FROM instruction");
    assert_eq!(err("\u{feff}").message, "no FROM instruction");
}

// ---------------------------------------------------------------- FROM

#[test]
fn from_with_alias_and_platform() {
    assert_eq!(
        ok("FROM --platform=$BUILDPLATFORM golang:1.22 AS build").instructions[0].kind,
        InstructionKind::From {
            image: "golang:1.22".into(),
            alias: Some("build".into()),
            platform: Some("$BUILDPLATFORM".into())
        }
    );
    assert_eq!(
        ok("FROM alpine as Base").instructions[0].kind,
        InstructionKind::From {
            image: "alpine".into(),
            alias: Some("Base".into()),
            platform: None
        }
    );
}

#[test]
fn from_with_wrong_arguments_is_an_error() {
    for text in [
        "FROM",
        "FROM a b",
        "FROM a AS",
        "FROM a IS b",
        "FROM a AS b c",
    ] {
        assert!(
            err(text)
                .message
                .starts_with("FROM requires either one argument, or three"),
            "{text}"
        );
    }
    assert_eq!(
        err("FROM --plat=x a").message,
        "unknown flag: --plat for FROM"
    );
    assert_eq!(
        err("FROM --platform a").message,
        "missing a value on flag: --platform for FROM"
    );
}

#[test]
fn several_stages() {
    let d = ok("FROM a AS one\nRUN x\nFROM one\nCOPY --from=one /a /b");
    assert_eq!(d.instructions.len(), 4);
}

// ---------------------------------------------------------------- ARG

#[test]
fn arg_forms() {
    assert_eq!(
        one("ARG A"),
        InstructionKind::Arg(vec![ArgDecl {
            name: "A".into(),
            default: None
        }])
    );
    assert_eq!(
        one("ARG A=1 B C=\"x y\" D="),
        InstructionKind::Arg(vec![
            ArgDecl {
                name: "A".into(),
                default: Some("1".into())
            },
            ArgDecl {
                name: "B".into(),
                default: None
            },
            ArgDecl {
                name: "C".into(),
                default: Some("\"x y\"".into())
            },
            ArgDecl {
                name: "D".into(),
                default: Some(String::new())
            },
        ])
    );
    assert_eq!(msg("ARG =x"), "ARG names can not be blank");
}

// ---------------------------------------------------------------- ENV and LABEL

#[test]
fn env_multiple_pairs_with_quotes_kept_raw() {
    assert_eq!(
        one(r#"ENV A=1 B="two words" C='single $x' D=a\ b E="""#),
        InstructionKind::Env(pairs(&[
            ("A", "1"),
            ("B", "\"two words\""),
            ("C", "'single $x'"),
            ("D", "a\\ b"),
            ("E", "\"\""),
        ]))
    );
}

#[test]
fn env_value_may_be_empty_and_contain_equals() {
    assert_eq!(
        one("ENV A= B=x=y"),
        InstructionKind::Env(pairs(&[("A", ""), ("B", "x=y")]))
    );
}

#[test]
fn env_legacy_form_takes_the_rest_of_the_line() {
    assert_eq!(
        one("ENV MY_NAME John Doe  \"Jr\""),
        InstructionKind::Env(pairs(&[("MY_NAME", "John Doe  \"Jr\"")]))
    );
}

#[test]
fn env_errors() {
    assert!(msg("ENV ONLYKEY").contains("has no value"));
    assert!(msg("ENV A=1 B").contains("can't find = in \"B\""));
    assert!(msg("ENV =1").contains("names can not be blank"));
}

#[test]
fn env_continuation_multi_pair() {
    assert_eq!(
        one("ENV A=1 \\\n    B=2"),
        InstructionKind::Env(pairs(&[("A", "1"), ("B", "2")]))
    );
}

#[test]
fn label_with_quotes_and_spaces() {
    assert_eq!(
        one(r#"LABEL "com.example.vendor"="ACME Inc" version="1.0" description='a b c'"#),
        InstructionKind::Label(pairs(&[
            ("\"com.example.vendor\"", "\"ACME Inc\""),
            ("version", "\"1.0\""),
            ("description", "'a b c'"),
        ]))
    );
}

#[test]
fn label_requires_equals() {
    assert!(msg("LABEL version 1.0").contains("requires KEY=VALUE pairs"));
}

// ---------------------------------------------------------------- flags

#[test]
fn copy_flags() {
    let c = copy("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ a b /dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, s(&["*.md", "tmp/"]));
    assert_eq!(c.sources, s(&["a", "b"]));
    assert_eq!(c.dest, "/dst/");
    assert_eq!((c.checksum, c.keep_git_dir, c.unpack), (None, None, None));
}

#[test]
fn copy_link_is_a_flag_not_a_source() {
    let c = copy("COPY --link src /dst");
    assert!(c.link);
    assert_eq!(c.sources, s(&["src"]));
    let c = copy("COPY --link=false src /dst");
    assert!(!c.link);
    assert!(msg("COPY --link=maybe a b").contains("invalid boolean value for flag --link"));
}

#[test]
fn add_flags() {
    let c = copy("ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false --chown=1:2 --link https://x/y.tar /d");
    assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(c.keep_git_dir, Some(true));
    assert_eq!(c.unpack, Some(false));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert!(c.link);
    assert_eq!(copy("ADD --unpack a b").unpack, Some(true));
    assert_eq!(copy("ADD a b").unpack, None);
}

#[test]
fn flag_values_are_raw_and_may_be_quoted() {
    let c = copy("COPY --chown=\"$USER:my group\" a b");
    assert_eq!(c.chown.as_deref(), Some("\"$USER:my group\""));
    assert_eq!(c.sources, s(&["a"]));
}

#[test]
fn unknown_flags_are_errors_naming_flag_and_instruction() {
    assert_eq!(msg("COPY --foo a b"), "unknown flag: --foo for COPY");
    assert_eq!(
        msg("COPY --checksum=x a b"),
        "unknown flag: --checksum for COPY"
    );
    assert_eq!(msg("ADD --from=x a b"), "unknown flag: --from for ADD");
    assert_eq!(msg("ADD --parents a b"), "unknown flag: --parents for ADD");
    assert_eq!(
        msg("RUN --privileged true"),
        "unknown flag: --privileged for RUN"
    );
    assert_eq!(
        msg("HEALTHCHECK --every=1s CMD true"),
        "unknown flag: --every for HEALTHCHECK"
    );
}

#[test]
fn value_flags_need_a_value_and_may_not_repeat() {
    assert_eq!(
        msg("COPY --from a b"),
        "missing a value on flag: --from for COPY"
    );
    assert_eq!(
        msg("COPY --from=a --from=b c d"),
        "duplicate flag specified: --from for COPY"
    );
    assert_eq!(
        msg("RUN --mount true"),
        "missing a value on flag: --mount for RUN"
    );
}

#[test]
fn double_dash_ends_flags() {
    assert_eq!(copy("COPY --link -- --weird /d").sources, s(&["--weird"]));
}

#[test]
fn run_flags_are_not_part_of_the_command() {
    let r = run("RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=none --security=insecure make all");
    assert_eq!(r.command, shell("make all"));
    assert_eq!(
        r.mounts,
        s(&["type=cache,target=/root/.cache", "type=secret,id=tok"])
    );
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
}

#[test]
fn flags_only_apply_to_instructions_that_take_them() {
    assert_eq!(
        one("CMD --port 8080"),
        InstructionKind::Cmd(shell("--port 8080"))
    );
    assert_eq!(one("USER --x"), InstructionKind::User("--x".into()));
}

// ---------------------------------------------------------------- JSON and shell forms

#[test]
fn run_cmd_entrypoint_json_and_shell_forms() {
    assert_eq!(
        run("RUN [\"echo\", \"a b\"]").command,
        exec(&["echo", "a b"])
    );
    assert_eq!(run("RUN   echo  \"a b\"  ").command, shell("echo  \"a b\""));
    assert_eq!(
        one("CMD [\"sh\", \"-c\", \"echo $HOME\"]"),
        InstructionKind::Cmd(exec(&["sh", "-c", "echo $HOME"]))
    );
    assert_eq!(one("CMD echo hi"), InstructionKind::Cmd(shell("echo hi")));
    assert_eq!(
        one("ENTRYPOINT [\"/bin/app\"]"),
        InstructionKind::Entrypoint(exec(&["/bin/app"]))
    );
    assert_eq!(
        one("ENTRYPOINT exec /bin/app"),
        InstructionKind::Entrypoint(shell("exec /bin/app"))
    );
    assert_eq!(one("CMD []"), InstructionKind::Cmd(exec(&[])));
}

#[test]
fn invalid_json_is_shell_form() {
    assert_eq!(
        one("CMD [\"a\", 1]"),
        InstructionKind::Cmd(shell("[\"a\", 1]"))
    );
    assert_eq!(
        one("CMD ['single']"),
        InstructionKind::Cmd(shell("['single']"))
    );
    assert_eq!(
        one("CMD [\"a\"] trailing"),
        InstructionKind::Cmd(shell("[\"a\"] trailing"))
    );
    assert_eq!(
        run("RUN [ -f /x ] && echo y").command,
        shell("[ -f /x ] && echo y")
    );
}

#[test]
fn json_form_handles_escapes() {
    assert_eq!(
        one(r#"CMD ["c:\\path", "quote\"d", "\u00e9"]"#),
        InstructionKind::Cmd(exec(&["c:\\path", "quote\"d", "é"]))
    );
}

#[test]
fn json_form_across_continuation_lines() {
    assert_eq!(
        one("CMD [\"a\", \\\n     \"b\"]"),
        InstructionKind::Cmd(exec(&["a", "b"]))
    );
}

#[test]
fn copy_json_and_shell_forms() {
    let c = copy("COPY [\"my file.txt\", \"other\", \"/dst dir/\"]");
    assert!(c.json_form);
    assert_eq!(c.sources, s(&["my file.txt", "other"]));
    assert_eq!(c.dest, "/dst dir/");
    let c = copy("COPY \"my file\" /d");
    assert!(!c.json_form);
    assert_eq!(c.sources, s(&["\"my", "file\""]));
    assert_eq!(c.dest, "/d");
    assert!(msg("COPY [\"only\"]").contains("at least two arguments"));
}

#[test]
fn volume_json_and_shell_forms() {
    assert_eq!(
        one("VOLUME [\"/data\", \"/var/log\"]"),
        InstructionKind::Volume(s(&["/data", "/var/log"]))
    );
    assert_eq!(
        one("VOLUME /data  $LOGS"),
        InstructionKind::Volume(s(&["/data", "$LOGS"]))
    );
    assert!(msg("VOLUME []").contains("at least one argument"));
    assert!(msg("VOLUME [\"\"]").contains("empty string"));
}

#[test]
fn shell_requires_json_form() {
    assert_eq!(
        one("SHELL [\"powershell\", \"-command\"]"),
        InstructionKind::Shell(s(&["powershell", "-command"]))
    );
    assert!(msg("SHELL /bin/bash -c").contains("JSON form"));
    assert!(msg("SHELL []").contains("at least one argument"));
}

// ---------------------------------------------------------------- simple instructions

#[test]
fn workdir_user_expose_stopsignal_maintainer() {
    assert_eq!(
        one("WORKDIR /my dir"),
        InstructionKind::Workdir("/my dir".into())
    );
    assert_eq!(
        one("USER app:staff"),
        InstructionKind::User("app:staff".into())
    );
    assert!(msg("USER a b").contains("exactly one argument"));
    assert_eq!(
        one("EXPOSE 80/tcp  443 ${PORT}"),
        InstructionKind::Expose(s(&["80/tcp", "443", "${PORT}"]))
    );
    assert_eq!(
        one("STOPSIGNAL SIGTERM"),
        InstructionKind::StopSignal("SIGTERM".into())
    );
    assert!(msg("STOPSIGNAL 1 2").contains("exactly one argument"));
    assert_eq!(
        one("MAINTAINER Jane <j@x.org>"),
        InstructionKind::Maintainer("Jane <j@x.org>".into())
    );
}

// ---------------------------------------------------------------- HEALTHCHECK

#[test]
fn healthcheck_none() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        one("healthcheck none"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    assert!(msg("HEALTHCHECK NONE x").contains("takes no arguments"));
    assert!(msg("HEALTHCHECK --interval=1s NONE").contains("takes no flags"));
}

#[test]
fn healthcheck_cmd_with_flags() {
    assert_eq!(
        one("HEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=2s --retries=3 CMD curl -f http://localhost/ || exit 1"),
        InstructionKind::Healthcheck(Healthcheck::Check {
            command: shell("curl -f http://localhost/ || exit 1"),
            interval: Some("5m".into()),
            timeout: Some("3s".into()),
            start_period: Some("1s".into()),
            start_interval: Some("2s".into()),
            retries: Some("3".into()),
        })
    );
    assert_eq!(
        one("HEALTHCHECK cmd [\"/bin/check\"]"),
        InstructionKind::Healthcheck(Healthcheck::Check {
            command: exec(&["/bin/check"]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        })
    );
}

#[test]
fn healthcheck_errors() {
    assert!(msg("HEALTHCHECK RUN true").contains("unknown type \"RUN\" in HEALTHCHECK"));
    assert!(msg("HEALTHCHECK CMD").contains("requires a command"));
}

// ---------------------------------------------------------------- ONBUILD

#[test]
fn onbuild_parses_its_trigger() {
    let v = after_from("ONBUILD RUN --network=none make");
    match &v[0].kind {
        InstructionKind::Onbuild(t) => {
            assert_eq!(t.line, 2);
            assert_eq!(t.original, "RUN --network=none make");
            match &t.kind {
                InstructionKind::Run(r) => {
                    assert_eq!(r.command, shell("make"));
                    assert_eq!(r.network.as_deref(), Some("none"));
                }
                k => panic!("{k:?}"),
            }
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn onbuild_rejects_onbuild_from_maintainer_triggers() {
    assert_eq!(
        msg("ONBUILD ONBUILD RUN x"),
        "ONBUILD isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        msg("ONBUILD from x"),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        msg("ONBUILD MAINTAINER me"),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        msg("ONBUILD FORM x"),
        "unknown instruction: FORM (did you mean FROM?)"
    );
    assert_eq!(
        msg("ONBUILD COPY x"),
        "COPY requires at least two arguments (source and destination)"
    );
}

// ---------------------------------------------------------------- heredocs

fn doc(name: &str, content: &str, expand: bool, chomp: bool) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand,
        chomp,
    }
}

#[test]
fn run_heredoc() {
    let v = after_from("RUN <<EOF\napt-get update\napt-get install -y vim\nEOF\nUSER x");
    assert_eq!((v[0].line, v[0].end_line), (2, 5));
    assert_eq!(v[0].original, "RUN <<EOF");
    match &v[0].kind {
        InstructionKind::Run(r) => {
            assert_eq!(r.command, shell("<<EOF"));
            assert_eq!(
                r.heredocs,
                vec![doc(
                    "EOF",
                    "apt-get update\napt-get install -y vim\n",
                    true,
                    false
                )]
            );
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(v[1].line, 6);
}

#[test]
fn run_heredoc_with_program_and_redirect() {
    let r = run("RUN python3 <<PY > /out\nprint('hi')\n\n# not a comment\nPY");
    assert_eq!(r.command, shell("python3 <<PY > /out"));
    assert_eq!(
        r.heredocs,
        vec![doc("PY", "print('hi')\n\n# not a comment\n", true, false)]
    );
}

#[test]
fn quoted_heredoc_delimiters_disable_expansion() {
    assert_eq!(
        run("RUN <<\"EOF\"\necho $HOME\nEOF").heredocs,
        vec![doc("EOF", "echo $HOME\n", false, false)]
    );
    assert_eq!(
        run("RUN <<'EOF'\necho $HOME\nEOF").heredocs,
        vec![doc("EOF", "echo $HOME\n", false, false)]
    );
}

#[test]
fn chomp_heredoc_strips_leading_tabs() {
    let r = run("RUN <<-EOF\n\techo a\n\t\t  echo b\n\tEOF");
    assert_eq!(
        r.heredocs,
        vec![doc("EOF", "echo a\n  echo b\n", true, true)]
    );
}

#[test]
fn heredoc_terminator_must_match_the_whole_line() {
    let r = run("RUN <<EOF\n EOF\nEOFX\nEOF");
    assert_eq!(r.heredocs[0].content, " EOF\nEOFX\n");
}

#[test]
fn multiple_heredocs_follow_each_other() {
    let v = after_from("RUN <<A <<-B\nfirst\nA\n\tsecond\n\tB\nCMD x");
    assert_eq!(v[0].end_line, 6);
    match &v[0].kind {
        InstructionKind::Run(r) => assert_eq!(
            r.heredocs,
            vec![
                doc("A", "first\n", true, false),
                doc("B", "second\n", true, true)
            ]
        ),
        k => panic!("{k:?}"),
    }
    assert_eq!(v[1].line, 7);
}

#[test]
fn copy_and_add_heredocs() {
    let c = copy("COPY <<EOF /etc/motd\nhello $USER\nEOF");
    assert_eq!(c.sources, s(&["<<EOF"]));
    assert_eq!(c.dest, "/etc/motd");
    assert_eq!(c.heredocs, vec![doc("EOF", "hello $USER\n", true, false)]);
    let c = copy("ADD --chmod=755 <<one <<'two' /dst/\n1\none\n2\ntwo");
    assert_eq!(c.sources, s(&["<<one", "<<'two'"]));
    assert_eq!(
        c.heredocs,
        vec![
            doc("one", "1\n", true, false),
            doc("two", "2\n", false, false)
        ]
    );
}

#[test]
fn empty_heredoc_body() {
    assert_eq!(
        run("RUN cat <<EOF\nEOF").heredocs,
        vec![doc("EOF", "", true, false)]
    );
}

#[test]
fn heredoc_with_crlf() {
    let d = ok("FROM scratch\r\nRUN <<EOF\r\necho hi\r\nEOF\r\n");
    match &d.instructions[1].kind {
        InstructionKind::Run(r) => assert_eq!(r.heredocs[0].content, "echo hi\n"),
        k => panic!("{k:?}"),
    }
}

#[test]
fn unterminated_heredoc_is_an_error_at_its_line() {
    let e = err("FROM scratch\nRUN <<EOF\necho hi\nEOFF");
    assert_eq!(e.line, 2);
    assert_eq!(e.text, "RUN <<EOF");
    assert!(
        e.message.starts_with("unterminated heredoc <<EOF"),
        "{}",
        e.message
    );
    let e = err("FROM scratch\nRUN <<A <<B\na\nA\nb\n");
    assert!(
        e.message.starts_with("unterminated heredoc <<B"),
        "{}",
        e.message
    );
}

#[test]
fn heredoc_markers_only_in_run_copy_add_shell_forms() {
    assert_eq!(run("RUN [\"cat\", \"<<EOF\"]").heredocs, vec![]);
    assert_eq!(run("RUN echo \"<<EOF\"").heredocs, vec![]);
    assert_eq!(run("RUN echo a<<EOF").heredocs, vec![]);
    assert_eq!(
        one("CMD cat <<EOF"),
        InstructionKind::Cmd(shell("cat <<EOF"))
    );
    assert_eq!(run("RUN echo $((1<<2))").heredocs, vec![]);
}

#[test]
fn heredoc_with_fd_and_trailing_operator() {
    let r = run("RUN cat 3<<EOF>/x\nbody\nEOF");
    assert_eq!(r.heredocs, vec![doc("EOF", "body\n", true, false)]);
}

#[test]
fn onbuild_run_heredoc() {
    let v = after_from("ONBUILD RUN <<EOF\ntrue\nEOF");
    assert_eq!(v[0].end_line, 4);
    match &v[0].kind {
        InstructionKind::Onbuild(t) => {
            assert_eq!(t.end_line, 4);
            match &t.kind {
                InstructionKind::Run(r) => {
                    assert_eq!(r.heredocs, vec![doc("EOF", "true\n", true, false)])
                }
                k => panic!("{k:?}"),
            }
        }
        k => panic!("{k:?}"),
    }
}

// ---------------------------------------------------------------- robustness

#[test]
fn never_panics_on_odd_input() {
    let inputs = [
        "",
        "\\",
        "FROM",
        "FROM \\",
        "\u{feff}\u{feff}",
        "# escape=`\n`",
        "FROM x\nRUN <<",
        "FROM x\nRUN <<-",
        "FROM x\nCOPY <<\"\" /d",
        "FROM x\nRUN --",
        "FROM x\nRUN --=",
        "FROM x\nCOPY --\"a b\" c d",
        "FROM x\nENV \"",
        "FROM x\nENV a=\"",
        "FROM x\nARG 'x",
        "FROM x\nHEALTHCHECK CMD [",
        "é\nFROM é",
        "FROM x\nRUN é \\\né",
        "FROM x\nONBUILD ONBUILD",
        "FROM x\nLABEL =",
        "FROM x\nCMD [\"\\u",
        "FROM x\n\r\n\r",
        "#\n#=\n# =x\n#a=\nFROM x",
    ];
    for text in inputs {
        let _ = parse(text, Path::new("Dockerfile"));
    }
}

/// Parses `text` and fails when that takes more than 3 seconds (a quadratic or worse step
/// shows up as many seconds on these sizes).
fn parse_quickly(text: &str) -> Result<Dockerfile, ParseError> {
    let start = std::time::Instant::now();
    let result = parse(text, Path::new("Dockerfile"));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "parsing {} bytes took {:?}",
        text.len(),
        start.elapsed()
    );
    result
}

#[test]
fn long_lines_and_many_continuations_parse_in_linear_time() {
    let long = format!("FROM x\nRUN echo {}\n", "a ".repeat(1_000_000));
    assert_eq!(parse_quickly(&long).unwrap().instructions.len(), 2);
    let continued = format!("FROM x\nRUN a \\\n{}b\n", "# c\n  x \\\n".repeat(200_000));
    assert_eq!(parse_quickly(&continued).unwrap().instructions.len(), 2);
    let flags = format!(
        "FROM x\nRUN {} true\n",
        "--mount=type=tmpfs,target=/t ".repeat(100_000)
    );
    assert_eq!(parse_quickly(&flags).unwrap().instructions.len(), 2);
    let heredocs = format!(
        "FROM x\nRUN {} true\n{}",
        "<<E ".repeat(50_000),
        "l\nE\n".repeat(50_000)
    );
    assert_eq!(parse_quickly(&heredocs).unwrap().instructions.len(), 2);
    let env = format!("FROM x\nENV {}\n", "k=v ".repeat(200_000));
    assert_eq!(parse_quickly(&env).unwrap().instructions.len(), 2);
}

#[test]
fn a_long_unknown_keyword_is_reported_quickly() {
    let text = format!("FROM x\n{} y\n", "Q".repeat(2_000_000));
    let e = parse_quickly(&text).unwrap_err();
    assert!(
        e.message.starts_with("unknown instruction"),
        "{}",
        e.message
    );
    assert_eq!(e.line, 2);
}

#[test]
fn deeply_nested_json_is_shell_form_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    match one(&format!("CMD {deep}")) {
        InstructionKind::Cmd(Command::Shell(s)) => assert_eq!(s, deep),
        other => panic!("{other:?}"),
    }
    assert!(msg(&format!("SHELL {deep}")).contains("JSON form"));
    let objects = format!("RUN [\"a\", {}", "{\"a\":".repeat(100_000));
    assert!(matches!(
        one(&objects),
        InstructionKind::Run(RunArgs {
            command: Command::Shell(_),
            ..
        })
    ));
}

#[test]
fn onbuild_cannot_nest() {
    let nested = format!("{}RUN x", "ONBUILD ".repeat(10_000));
    assert!(msg(&nested).contains("isn't allowed as an ONBUILD trigger"));
    assert!(msg("onbuild onBuild RUN x").contains("isn't allowed"));
}

#[test]
fn redacted_errors_show_nothing_of_the_file() {
    let secret = "{\"auths\":{\"r\":{\"auth\":\"c2VjcmV0\"}}}\n";
    let e = err(secret).redacted();
    let text = e.to_string();
    assert!(
        text.starts_with("Dockerfile:1: not a valid Dockerfile instruction"),
        "{text}"
    );
    assert!(!text.contains("c2VjcmV0") && !text.contains("auths") && !text.contains('|'));
    assert_eq!(err("").to_string(), "Dockerfile:1: no FROM instruction");
}
