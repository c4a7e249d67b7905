//! `RUN` to [`RunOp`].

use super::{check_heredoc_name, is_predefined_arg, KeyValue, LowerReason, Scope};
use crate::mount::{parse_mount, MountSpec};
use crate::parser::{Command, RunArgs};
use std::collections::BTreeSet;

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// `default` or `host` (or no flag): the host's network.
    #[default]
    Host,
    /// `none`: no network.
    None,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Security {
    /// `sandbox` (or no flag).
    #[default]
    Sandbox,
    /// `insecure`: allowed only when the build permits it (the engine checks).
    Insecure,
}

/// A RUN whose command is a single heredoc: the body runs as a script file mounted at
/// [`RunScript::target`] (so `#!` lines work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunScript {
    /// The heredoc name, a valid file name.
    pub name: String,
    /// The script.
    pub content: String,
}

impl RunScript {
    /// Where the script is mounted in the container: `/dev/pipes/NAME`.
    pub fn target(&self) -> String {
        format!("/dev/pipes/{}", self.name)
    }
}

/// `RUN`, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOp {
    /// The command: exec form as is, shell form through SHELL, heredocs applied.
    pub argv: Vec<String>,
    /// The environment: ENV, then the ARGs in scope and proxy build args not set by ENV.
    pub env: Vec<(String, String)>,
    /// Names in `env` left out of the cache key: proxy settings not declared as ARGs
    /// (as in BuildKit: they do not change what the step builds, and differ between CI
    /// agents).
    pub unkeyed_env: BTreeSet<String>,
    /// USER (None: root).
    pub user: Option<String>,
    /// The working directory.
    pub workdir: String,
    /// The `--mount`s, parsed.
    pub mounts: Vec<MountSpec>,
    /// The `--mount` values after expansion, as written (a cache-key input).
    pub mount_texts: Vec<String>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// The heredoc bodies, in order (a cache-key input).
    pub heredocs: Vec<String>,
    /// The script to mount when the command is a single heredoc.
    pub script: Option<RunScript>,
}

impl RunOp {
    /// The cache-key fields, in order. `mount_inputs` are what the engine found for each
    /// mount (e.g. a digest of a bind mount's context files); they are not known here.
    pub fn key_fields(&self, mount_inputs: &[String]) -> Vec<(&'static str, KeyValue)> {
        let env = self
            .env
            .iter()
            .filter(|(k, _)| !self.unkeyed_env.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut fields = vec![
            ("mounts", KeyValue::List(self.mount_texts.clone())),
            ("mount-inputs", KeyValue::List(mount_inputs.to_vec())),
            ("argv", KeyValue::List(self.argv.clone())),
            ("env", KeyValue::List(env)),
            ("heredocs", KeyValue::List(self.heredocs.clone())),
            (
                "user",
                KeyValue::Text(self.user.clone().unwrap_or_default()),
            ),
            ("cwd", KeyValue::Text(self.workdir.clone())),
            ("network", KeyValue::Text(format!("{:?}", self.network))),
        ];
        // Only an insecure step adds a field, so the keys of ordinary steps stay as they were.
        if self.security == Security::Insecure {
            fields.push(("security", KeyValue::Text("insecure".into())));
        }
        fields
    }
}

pub(super) fn lower_run(args: &RunArgs, scope: &Scope) -> Result<RunOp, LowerReason> {
    let mut mounts = Vec::new();
    let mut mount_texts = Vec::new();
    for text in &args.mounts {
        let text = scope.expand(text)?;
        let spec = parse_mount(&text).map_err(|error| LowerReason::Mount {
            text: text.clone(),
            error: Box::new(error),
        })?;
        mounts.push(spec);
        mount_texts.push(text);
    }
    let network = match args.network.as_deref() {
        None | Some("default") | Some("host") => Network::Host,
        Some("none") => Network::None,
        Some(other) => return Err(LowerReason::Network(other.to_string())),
    };
    let security = match args.security.as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => return Err(LowerReason::Security(other.to_string())),
    };
    let (argv, script) = run_argv(args, scope)?;
    let (env, unkeyed_env) = run_env(scope);
    Ok(RunOp {
        argv,
        env,
        unkeyed_env,
        user: scope.user.clone(),
        workdir: scope.cwd(),
        mounts,
        mount_texts,
        network,
        security,
        heredocs: args.heredocs.iter().map(|d| d.content.clone()).collect(),
        script,
    })
}

/// The environment of a RUN and the names left out of its key.
fn run_env(scope: &Scope) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut env = scope.env.clone();
    let proxies = scope
        .build_args
        .iter()
        .filter(|(k, _)| is_predefined_arg(k));
    for (k, v) in scope.args.iter().chain(proxies) {
        if let Some(v) = v {
            if !env.iter().any(|(ek, _)| ek == k) {
                env.push((k.clone(), v.clone()));
            }
        }
    }
    let unkeyed = env
        .iter()
        .filter(|(k, _)| is_predefined_arg(k) && !scope.args.contains_key(k))
        .map(|(k, _)| k.clone())
        .collect();
    (env, unkeyed)
}

/// The argv of a RUN with heredocs (BuildKit's rules): a command that is a single heredoc
/// runs as a script file; otherwise the command line and the heredoc bodies go to the
/// shell together, which reads the heredocs itself.
fn run_argv(
    args: &RunArgs,
    scope: &Scope,
) -> Result<(Vec<String>, Option<RunScript>), LowerReason> {
    if args.heredocs.is_empty() {
        return Ok((scope.argv(&args.command), None));
    }
    let Command::Shell(text) = &args.command else {
        return Err(LowerReason::HeredocNeedsShell);
    };
    let single = args.heredocs.len() == 1 && text.split_whitespace().count() == 1;
    if !single {
        let mut script = text.clone();
        for doc in &args.heredocs {
            script.push('\n');
            script.push_str(&doc.content);
            script.push_str(&doc.name);
        }
        script.push('\n');
        return Ok((scope.argv(&Command::Shell(script)), None));
    }
    let doc = &args.heredocs[0];
    check_heredoc_name(&doc.name)?;
    let script = RunScript {
        name: doc.name.clone(),
        content: doc.content.clone(),
    };
    Ok((scope.argv(&Command::Shell(script.target())), Some(script)))
}
