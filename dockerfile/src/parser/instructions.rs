//! One logical instruction line to an [`InstructionKind`].

use super::{
    ArgDecl, Command, CopyArgs, Healthcheck, Heredoc, Instruction, InstructionKind, RunArgs,
};

/// Every instruction keyword.
const KEYWORDS: &[&str] = &[
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "WORKDIR",
    "COPY",
    "ADD",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "SHELL",
    "USER",
    "EXPOSE",
    "VOLUME",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "MAINTAINER",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name=value`, at most once.
    Value,
    /// `--name=value`, repeatable.
    Repeated,
    /// `--name`, `--name=true|false`, at most once.
    Bool,
}

use FlagKind::{Bool, Repeated, Value};

const FROM_FLAGS: &[(&str, FlagKind)] = &[("platform", Value)];
const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", Value),
    ("chown", Value),
    ("chmod", Value),
    ("link", Bool),
    ("parents", Bool),
    ("exclude", Repeated),
];
const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", Value),
    ("chmod", Value),
    ("link", Bool),
    ("checksum", Value),
    ("keep-git-dir", Bool),
    ("unpack", Bool),
    ("exclude", Repeated),
];
const RUN_FLAGS: &[(&str, FlagKind)] =
    &[("mount", Repeated), ("network", Value), ("security", Value)];
const HEALTHCHECK_FLAGS: &[(&str, FlagKind)] = &[
    ("interval", Value),
    ("timeout", Value),
    ("start-period", Value),
    ("start-interval", Value),
    ("retries", Value),
];

/// Parsed leading flags of one instruction.
struct Flags {
    keyword: &'static str,
    /// (name, value) in order; `None` value for a bare `--name`.
    given: Vec<(String, Option<String>)>,
}

impl Flags {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Option<String>> + 'a {
        self.given
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn value(&self, name: &str) -> Result<Option<String>, String> {
        match self.values(name).next() {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v.clone())),
            Some(None) => Err(format!(
                "missing a value on flag: --{name} for {}",
                self.keyword
            )),
        }
    }

    fn repeated(&self, name: &str) -> Result<Vec<String>, String> {
        self.values(name)
            .map(|v| {
                v.clone().ok_or_else(|| {
                    format!("missing a value on flag: --{name} for {}", self.keyword)
                })
            })
            .collect()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        match self.values(name).next() {
            None => Ok(None),
            Some(None) => Ok(Some(true)),
            Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(format!(
                    "invalid boolean value for flag --{name} of {}: {v}",
                    self.keyword
                )),
            },
        }
    }
}

/// Length in bytes of the word at the start of `text`: up to unquoted whitespace, quotes
/// and the escape character respected.
fn word_len(text: &str, escape: char) -> usize {
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('\'') => {}
            _ if c == escape => {
                chars.next();
            }
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => return i,
            None => {}
        }
    }
    text.len()
}

/// Splits `text` into words on unquoted, unescaped whitespace, keeping quotes and escapes
/// in the words.
fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let len = word_len(rest, escape);
        words.push(rest[..len].to_string());
        rest = rest[len..].trim_start();
    }
    words
}

/// Extracts the leading `--flag[=value]` words of `rest`, checking them against `allowed`.
fn take_flags<'a>(
    rest: &'a str,
    keyword: &'static str,
    allowed: &[(&str, FlagKind)],
    escape: char,
) -> Result<(Flags, &'a str), String> {
    let mut flags = Flags {
        keyword,
        given: Vec::new(),
    };
    let mut rest = rest.trim_start();
    while rest.starts_with("--") {
        let len = word_len(rest, escape);
        let word = &rest[..len];
        rest = rest[len..].trim_start();
        if word == "--" {
            break;
        }
        let body = &word[2..];
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag: --{name} for {keyword}"));
        };
        if *kind != Repeated && flags.given.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate flag specified: --{name} for {keyword}"));
        }
        flags.given.push((name.to_string(), value));
    }
    Ok((flags, rest))
}

/// The JSON (exec) form of `rest`, if it is a JSON array of strings.
fn json_array(rest: &str) -> Option<Vec<String>> {
    let rest = rest.trim();
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

fn command(rest: &str) -> Command {
    match json_array(rest) {
        Some(v) => Command::Exec(v),
        None => Command::Shell(rest.trim().to_string()),
    }
}

/// The heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`...) among the words of
/// `rest`, with empty bodies.
fn heredoc_markers(rest: &str, escape: char) -> Vec<Heredoc> {
    let mut docs = Vec::new();
    for word in split_words(rest, escape) {
        let Some(marker) = word
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .strip_prefix("<<")
        else {
            continue;
        };
        let (chomp, delim) = match marker.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, marker),
        };
        if delim.contains('<') {
            continue;
        }
        let mut name = String::new();
        let mut quoted = false;
        let mut quote: Option<char> = None;
        let mut chars = delim.chars();
        while let Some(c) = chars.next() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => name.push(c),
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    quoted = true;
                }
                None if c == escape => {
                    quoted = true;
                    if let Some(n) = chars.next() {
                        name.push(n);
                    }
                }
                // Shell operators end an unquoted delimiter (`<<EOF>file`).
                None if matches!(c, '>' | '|' | ';' | '&' | '(' | ')') => break,
                None => name.push(c),
            }
        }
        if name.is_empty() {
            continue;
        }
        docs.push(Heredoc {
            name,
            content: String::new(),
            expand: !quoted,
            chomp,
        });
    }
    docs
}

/// Edit distance counting insertions, deletions, substitutions and transpositions of
/// adjacent characters (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 {
                j
            } else if j == 0 {
                i
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j - 1] + cost)
                    .min(d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// Words longer than this are too far from every keyword for a suggestion.
const MAX_SUGGESTION_LEN: usize = 16;

fn unknown_instruction(word: &str) -> String {
    if word.chars().count() > MAX_SUGGESTION_LEN {
        return format!("unknown instruction: {word}");
    }
    let upper = word.to_uppercase();
    let best = KEYWORDS
        .iter()
        .map(|k| (edit_distance(&upper, k), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 2 => format!("unknown instruction: {word} (did you mean {k}?)"),
        _ => format!("unknown instruction: {word}"),
    }
}

fn require(rest: &str, keyword: &str) -> Result<String, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        Err(format!("{keyword} requires at least one argument"))
    } else {
        Ok(rest.to_string())
    }
}

fn exactly_one(rest: &str, keyword: &str) -> Result<String, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [one] => Ok((*one).to_string()),
        _ => Err(format!("{keyword} requires exactly one argument")),
    }
}

/// `KEY=VALUE ...` pairs (and, when `legacy` is allowed, `KEY value with spaces`).
fn name_values(
    rest: &str,
    keyword: &str,
    legacy: bool,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let rest = rest.trim();
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        if !legacy {
            return Err(format!(
                "{keyword} requires KEY=VALUE pairs, found \"{first}\" without '='"
            ));
        }
        let key_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let key = &rest[..key_len];
        let value = rest[key_len..].trim();
        if value.is_empty() {
            return Err(format!(
                "{keyword} {key} has no value (use {keyword} {key}=VALUE)"
            ));
        }
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{keyword} names can not be blank: \"{w}\"")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!(
                "syntax error - can't find = in \"{w}\"; {keyword} must be of the form: name=value"
            )),
        })
        .collect()
}

fn copy_args(
    rest: &str,
    keyword: &'static str,
    add: bool,
    escape: char,
) -> Result<CopyArgs, String> {
    let (flags, rest) = take_flags(
        rest,
        keyword,
        if add { ADD_FLAGS } else { COPY_FLAGS },
        escape,
    )?;
    let (mut words, json_form, heredocs) = match json_array(rest) {
        Some(v) => (v, true, Vec::new()),
        None => (
            rest.split_whitespace().map(str::to_string).collect(),
            false,
            heredoc_markers(rest, escape),
        ),
    };
    if words.len() < 2 {
        return Err(format!(
            "{keyword} requires at least two arguments (source and destination)"
        ));
    }
    let dest = words.pop().unwrap_or_default();
    Ok(CopyArgs {
        sources: words,
        dest,
        from: flags.value("from")?,
        chown: flags.value("chown")?,
        chmod: flags.value("chmod")?,
        link: flags.boolean("link")?.unwrap_or(false),
        parents: flags.boolean("parents")?.unwrap_or(false),
        exclude: flags.repeated("exclude")?,
        checksum: flags.value("checksum")?,
        keep_git_dir: flags.boolean("keep-git-dir")?,
        unpack: flags.boolean("unpack")?,
        heredocs,
        json_form,
    })
}

fn healthcheck(rest: &str, escape: char) -> Result<Healthcheck, String> {
    let (flags, rest) = take_flags(rest, "HEALTHCHECK", HEALTHCHECK_FLAGS, escape)?;
    let rest = rest.trim();
    let type_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (kind, args) = (&rest[..type_len], rest[type_len..].trim());
    if kind.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".to_string());
    }
    if kind.eq_ignore_ascii_case("NONE") {
        if !args.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".to_string());
        }
        if !flags.given.is_empty() {
            return Err("HEALTHCHECK NONE takes no flags".to_string());
        }
        return Ok(Healthcheck::None);
    }
    if !kind.eq_ignore_ascii_case("CMD") {
        return Err(format!("unknown type \"{kind}\" in HEALTHCHECK (try CMD)"));
    }
    if args.is_empty() {
        return Err("HEALTHCHECK CMD requires a command".to_string());
    }
    Ok(Healthcheck::Check {
        command: command(args),
        interval: flags.value("interval")?,
        timeout: flags.value("timeout")?,
        start_period: flags.value("start-period")?,
        start_interval: flags.value("start-interval")?,
        retries: flags.value("retries")?,
    })
}

/// Parses one logical instruction (continuations joined, trimmed). `line` is its first
/// line, used for an `ONBUILD` trigger. Errors are messages; the caller adds the location.
pub(super) fn parse_instruction(
    text: &str,
    escape: char,
    line: usize,
) -> Result<InstructionKind, String> {
    let text = text.trim();
    let kw_len = text.find(char::is_whitespace).unwrap_or(text.len());
    let (word, rest) = (&text[..kw_len], text[kw_len..].trim_start());
    let upper = word.to_ascii_uppercase();
    let Some(keyword) = KEYWORDS.iter().copied().find(|k| *k == upper) else {
        return Err(unknown_instruction(word));
    };
    Ok(match keyword {
        "FROM" => from(rest, escape)?,
        "ARG" => InstructionKind::Arg(arg_decls(rest, escape)?),
        "ENV" => InstructionKind::Env(name_values(rest, keyword, true, escape)?),
        "LABEL" => InstructionKind::Label(name_values(rest, keyword, false, escape)?),
        "WORKDIR" => InstructionKind::Workdir(require(rest, keyword)?),
        "COPY" => InstructionKind::Copy(copy_args(rest, keyword, false, escape)?),
        "ADD" => InstructionKind::Add(copy_args(rest, keyword, true, escape)?),
        "RUN" => InstructionKind::Run(run_args(rest, escape)?),
        "CMD" => InstructionKind::Cmd(required_command(rest, keyword)?),
        "ENTRYPOINT" => InstructionKind::Entrypoint(required_command(rest, keyword)?),
        "SHELL" => InstructionKind::Shell(shell(rest)?),
        "USER" => InstructionKind::User(exactly_one(rest, keyword)?),
        "EXPOSE" => InstructionKind::Expose(ports(rest)?),
        "VOLUME" => InstructionKind::Volume(volumes(rest)?),
        "STOPSIGNAL" => InstructionKind::StopSignal(exactly_one(rest, keyword)?),
        "HEALTHCHECK" => InstructionKind::Healthcheck(healthcheck(rest, escape)?),
        "ONBUILD" => InstructionKind::Onbuild(Box::new(onbuild(rest, escape, line)?)),
        "MAINTAINER" => InstructionKind::Maintainer(require(rest, keyword)?),
        _ => return Err(unknown_instruction(word)),
    })
}

/// `FROM [--platform=…] <image> [AS <name>]`.
fn from(rest: &str, escape: char) -> Result<InstructionKind, String> {
    let (flags, rest) = take_flags(rest, "FROM", FROM_FLAGS, escape)?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (image, alias) = match words.as_slice() {
        [image] => (*image, None),
        [image, as_, alias] if as_.eq_ignore_ascii_case("AS") => (*image, Some(alias.to_string())),
        _ => {
            return Err(
                "FROM requires either one argument, or three: FROM <image> [AS <name>]".to_string(),
            )
        }
    };
    Ok(InstructionKind::From {
        image: image.to_string(),
        alias,
        platform: flags.value("platform")?,
    })
}

/// `ARG <name>[=<default>] …`.
fn arg_decls(rest: &str, escape: char) -> Result<Vec<ArgDecl>, String> {
    let words = split_words(rest, escape);
    if words.is_empty() {
        return Err("ARG requires at least one argument".to_string());
    }
    words.into_iter().map(arg_decl).collect()
}

/// One `<name>[=<default>]` of an ARG.
fn arg_decl(word: String) -> Result<ArgDecl, String> {
    let (name, default) = match word.split_once('=') {
        Some((n, d)) => (n.to_string(), Some(d.to_string())),
        None => (word, None),
    };
    if name.is_empty() {
        Err("ARG names can not be blank".to_string())
    } else {
        Ok(ArgDecl { name, default })
    }
}

/// `RUN [--mount=…] [--network=…] [--security=…] <command>`, with its heredoc markers.
fn run_args(rest: &str, escape: char) -> Result<RunArgs, String> {
    let (flags, rest) = take_flags(rest, "RUN", RUN_FLAGS, escape)?;
    let cmd = command(rest);
    let heredocs = match &cmd {
        Command::Exec(v) if v.is_empty() => {
            return Err("RUN requires at least one argument".to_string())
        }
        Command::Shell(s) if s.is_empty() => {
            return Err("RUN requires at least one argument".to_string())
        }
        Command::Exec(_) => Vec::new(),
        Command::Shell(s) => heredoc_markers(s, escape),
    };
    Ok(RunArgs {
        command: cmd,
        mounts: flags.repeated("mount")?,
        network: flags.value("network")?,
        security: flags.value("security")?,
        heredocs,
    })
}

/// The command of CMD or ENTRYPOINT, which must not be empty.
fn required_command(rest: &str, keyword: &str) -> Result<Command, String> {
    let cmd = command(rest);
    if cmd == Command::Shell(String::new()) {
        return Err(format!("{keyword} requires at least one argument"));
    }
    Ok(cmd)
}

/// `SHELL ["executable", "parameters"]`.
fn shell(rest: &str) -> Result<Vec<String>, String> {
    match json_array(rest) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err("SHELL requires at least one argument".to_string()),
        None => Err(
            "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                .to_string(),
        ),
    }
}

/// `EXPOSE <port>[/<protocol>] …`.
fn ports(rest: &str) -> Result<Vec<String>, String> {
    let ports: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    if ports.is_empty() {
        return Err("EXPOSE requires at least one argument".to_string());
    }
    Ok(ports)
}

/// `VOLUME ["/path", …]` or `VOLUME /path …`.
fn volumes(rest: &str) -> Result<Vec<String>, String> {
    let paths = match json_array(rest) {
        Some(v) => v,
        None => rest.split_whitespace().map(str::to_string).collect(),
    };
    if paths.is_empty() {
        return Err("VOLUME requires at least one argument".to_string());
    }
    if paths.iter().any(|p| p.trim().is_empty()) {
        return Err("VOLUME specified can not be an empty string".to_string());
    }
    Ok(paths)
}

/// `ONBUILD <instruction>`: the trigger, parsed, at the ONBUILD's `line`.
fn onbuild(rest: &str, escape: char, line: usize) -> Result<Instruction, String> {
    let trigger = require(rest, "ONBUILD")?;
    let trigger_word = trigger
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if matches!(trigger_word.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
        return Err(format!(
            "{trigger_word} isn't allowed as an ONBUILD trigger"
        ));
    }
    let kind = parse_instruction(&trigger, escape, line)?;
    Ok(Instruction {
        line,
        end_line: line,
        original: trigger,
        kind,
    })
}
