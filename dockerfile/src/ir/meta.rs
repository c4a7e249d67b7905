//! The instructions that only edit the image config or the variables in scope.

use super::{LowerReason, Scope};
use crate::parser::{ArgDecl, Healthcheck, InstructionKind};

/// An edit of the image config (or, for ARG, of the variables in scope), with every value
/// expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEdit {
    /// `ARG`: each declared name and its value (None: declared without one).
    Arg(Vec<(String, Option<String>)>),
    /// `ENV`: (name, value) pairs, set in order.
    Env(Vec<(String, String)>),
    /// `LABEL`: (key, value) pairs.
    Label(Vec<(String, String)>),
    /// `USER`.
    User(String),
    /// `EXPOSE`: `port/proto` keys (`80/tcp`), ranges spelled out.
    Expose(Vec<String>),
    /// `VOLUME`: the paths.
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `ENTRYPOINT`: the argv (shell form through SHELL).
    Entrypoint(Vec<String>),
    /// `CMD`: the argv (shell form through SHELL).
    Cmd(Vec<String>),
    /// `SHELL`: the new shell, not empty.
    Shell(Vec<String>),
    /// `MAINTAINER`: the author, as written.
    Maintainer(String),
    /// `HEALTHCHECK`, as parsed (durations are checked when applied to the config).
    Healthcheck(Healthcheck),
    /// `ONBUILD`: the trigger instruction as written.
    Onbuild(String),
}

pub(super) fn lower_meta(
    kind: &InstructionKind,
    scope: &mut Scope,
) -> Result<ConfigEdit, LowerReason> {
    use InstructionKind as K;
    Ok(match kind {
        K::Arg(decls) => ConfigEdit::Arg(lower_args(decls, scope)?),
        K::Env(pairs) => {
            let pairs = expand_pairs(pairs, scope)?;
            for (k, v) in &pairs {
                scope.set_env(k, v);
            }
            ConfigEdit::Env(pairs)
        }
        K::Label(pairs) => ConfigEdit::Label(expand_pairs(pairs, scope)?),
        K::User(user) => {
            let user = scope.expand(user)?;
            scope.user = Some(user.clone());
            ConfigEdit::User(user)
        }
        K::Expose(ports) => {
            let mut keys = Vec::new();
            for port in scope.expand_all(ports)? {
                keys.extend(expose_ports(&port).map_err(LowerReason::Expose)?);
            }
            ConfigEdit::Expose(keys)
        }
        K::Volume(volumes) => {
            let volumes = scope.expand_all(volumes)?;
            if volumes.iter().any(|v| v.is_empty()) {
                return Err(LowerReason::EmptyVolume);
            }
            ConfigEdit::Volume(volumes)
        }
        K::StopSignal(sig) => ConfigEdit::StopSignal(scope.expand(sig)?),
        K::Entrypoint(cmd) => ConfigEdit::Entrypoint(scope.argv(cmd)),
        K::Cmd(cmd) => ConfigEdit::Cmd(scope.argv(cmd)),
        K::Shell(shell) => {
            if shell.is_empty() {
                return Err(LowerReason::EmptyShell);
            }
            scope.shell = Some(shell.clone());
            ConfigEdit::Shell(shell.clone())
        }
        K::Maintainer(name) => ConfigEdit::Maintainer(name.clone()),
        K::Healthcheck(check) => ConfigEdit::Healthcheck(check.clone()),
        K::Onbuild(trigger) => ConfigEdit::Onbuild(trigger.original.clone()),
        K::From { .. } | K::Run(_) | K::Copy(_) | K::Add(_) | K::Workdir(_) => {
            unreachable!("lower_kind handles steps")
        }
    })
}

/// Expands (key, value) pairs, all with the variables in scope before the instruction.
fn expand_pairs(
    pairs: &[(String, String)],
    scope: &Scope,
) -> Result<Vec<(String, String)>, LowerReason> {
    let mut expanded = Vec::new();
    for (k, v) in pairs {
        expanded.push((scope.expand(k)?, scope.expand(v)?));
    }
    Ok(expanded)
}

/// `ARG name[=default]`. Like BuildKit (`ArgCommand.Expand`), the name is expanded as
/// well as the default. The value is the `--build-arg`, else the expanded default, else
/// the global ARG's value, else the value the stage inherited from the stage it is built
/// on, else the automatic platform ARG's. Each declaration is in scope for the next.
fn lower_args(
    decls: &[ArgDecl],
    scope: &mut Scope,
) -> Result<Vec<(String, Option<String>)>, LowerReason> {
    let mut declared = Vec::new();
    for decl in decls {
        let name = scope.expand(&decl.name)?;
        let value = match scope.build_args.get(&name) {
            Some(Some(v)) => Some(v.clone()),
            _ => match &decl.default {
                Some(d) => Some(scope.expand(d)?),
                None => scope
                    .global_args
                    .get(&name)
                    .cloned()
                    .flatten()
                    .or_else(|| scope.args.get(&name).cloned().flatten())
                    .or_else(|| scope.auto_args.get(&name).cloned()),
            },
        };
        scope.args.insert(name.clone(), value.clone());
        declared.push((name, value));
    }
    Ok(declared)
}

/// EXPOSE values to `port/proto` keys: `80` → `80/tcp`, `53/UDP` → `53/udp`,
/// `8000-8002` → three ports.
pub fn expose_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {spec}: protocol must be tcp, udp or sctp"));
    }
    let bad = || format!("EXPOSE {spec}: invalid port (expected N, N/proto or N-M)");
    let parse = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (lo, hi) = match ports.split_once('-') {
        Some((lo, hi)) => (parse(lo)?, parse(hi)?),
        None => (parse(ports)?, parse(ports)?),
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}
