//! Dockerfile front end: turns a Dockerfile's text into a list of [`Instruction`]s.
//!
//! This is ocibuild's own parser, modelled on BuildKit's rules as documented in the
//! Dockerfile reference (it is not derived from BuildKit's code, and it does not use the
//! `dockerfile-parser` crate, which fails on heredocs and `# escape`, folds `RUN` flags
//! into the command and misreads `COPY --link`). In short:
//!
//! * Parser directives (`# syntax=...`, `# escape=\` or `` # escape=` ``, and `# check=...`,
//!   which is accepted and ignored) are only recognised at the very top of the file,
//!   before any instruction, comment or blank line. An unknown directive is a comment and
//!   ends the directive section; a repeated directive is an error.
//! * Keywords are case-insensitive. Lines whose first non-blank character is `#` are
//!   comments, also in the middle of a continued instruction; so are blank lines there.
//!   The escape character at the end of a line (trailing whitespace allowed) continues the
//!   instruction on the next line; the escape character is removed and the lines are
//!   joined as they are.
//! * `FROM`, `COPY`, `ADD`, `RUN` and `HEALTHCHECK` take leading `--name[=value]` flags;
//!   an unknown flag is an error. Flag values are kept raw (quotes and `$` included).
//! * `RUN`, `CMD`, `ENTRYPOINT`, `COPY`, `ADD`, `VOLUME` (and `HEALTHCHECK CMD`) accept
//!   a JSON array of strings (exec form); anything that is not a valid JSON string array
//!   is shell form. `SHELL` only accepts the JSON form.
//! * `RUN`, `COPY` and `ADD` accept heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`),
//!   whose bodies follow the instruction line.
//! * Arguments are kept raw: word expansion (see [`crate::expand`]) is done later, by the
//!   planner, with the build arguments and environment in scope.
//!
//! [`parse`] never panics; every problem is reported as a [`ParseError`] carrying the
//! file, line and text.

mod instructions;
mod lines;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The file the text came from (used in error messages).
    pub file: PathBuf,
    /// The escape character: `\` unless changed by a `# escape=` directive.
    pub escape: char,
    /// The value of the `# syntax=` directive, if any.
    pub syntax: Option<String>,
    /// The instructions in file order (comments, blank lines and directives removed).
    pub instructions: Vec<Instruction>,
}

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// 1-based line where the instruction ends (after continuations and heredoc bodies).
    pub end_line: usize,
    /// The instruction as written, continuation lines joined with the escape+newline
    /// removed and surrounding whitespace trimmed (for history, logs and errors).
    /// Heredoc bodies are not included.
    pub original: String,
    /// What the instruction is, with its raw arguments.
    pub kind: InstructionKind,
}

/// An instruction and its arguments. Arguments are raw: quotes, escapes and `$`
/// references are still in them, to be handled by [`crate::expand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `FROM [--platform=...] image [AS name]`.
    From {
        /// The image reference (or stage name), raw.
        image: String,
        /// The stage name given with `AS`, raw.
        alias: Option<String>,
        /// The `--platform` flag value, raw.
        platform: Option<String>,
    },
    /// `ARG name[=default] ...`.
    Arg(Vec<ArgDecl>),
    /// `ENV key=value ...` or the legacy `ENV key value`: (key, raw value) pairs.
    Env(Vec<(String, String)>),
    /// `LABEL key=value ...`: (raw key, raw value) pairs.
    Label(Vec<(String, String)>),
    /// `WORKDIR path`, raw.
    Workdir(String),
    /// `COPY [flags] src... dest`.
    Copy(CopyArgs),
    /// `ADD [flags] src... dest`.
    Add(CopyArgs),
    /// `RUN [flags] command`.
    Run(RunArgs),
    /// `CMD command`.
    Cmd(Command),
    /// `ENTRYPOINT command`.
    Entrypoint(Command),
    /// `SHELL ["executable", "params"...]` (JSON form only).
    Shell(Vec<String>),
    /// `USER user[:group]`, raw.
    User(String),
    /// `EXPOSE port[/proto] ...`: raw words.
    Expose(Vec<String>),
    /// `VOLUME ["/a", "/b"]` or `VOLUME /a /b`: the paths (raw words in shell form).
    Volume(Vec<String>),
    /// `STOPSIGNAL signal`, raw.
    StopSignal(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`: the trigger, parsed (it has the same line numbers).
    Onbuild(Box<Instruction>),
    /// `MAINTAINER name` (deprecated), raw.
    Maintainer(String),
}

/// One declaration of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: String,
    /// The default value, raw (unexpanded, quotes kept); `None` for `ARG NAME`.
    pub default: Option<String>,
}

/// Arguments of `COPY` and `ADD`. Flag values are raw; flags that do not apply to the
/// instruction stay `None`/`false`/empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// The sources, raw. In shell form they are split on whitespace only (quotes stay in
    /// the words). A source starting with `<<` names a heredoc: the n-th such source is
    /// `heredocs[n]`.
    pub sources: Vec<String>,
    /// The destination, raw.
    pub dest: String,
    /// `--from=stage|image` (COPY only).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link` (or `--link=true`).
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude=pattern`, in order (repeatable).
    pub exclude: Vec<String>,
    /// `--checksum=digest` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir[=bool]` (ADD only).
    pub keep_git_dir: Option<bool>,
    /// `--unpack[=bool]` (ADD only).
    pub unpack: Option<bool>,
    /// Heredocs used as sources, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// Whether the arguments were given as a JSON array.
    pub json_form: bool,
}

/// Arguments of `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// The command. With heredocs, the shell text of the instruction line (for example
    /// `<<EOF` or `python3 <<EOF`); the bodies are in `heredocs`.
    pub command: Command,
    /// Raw `--mount=...` values, in order (parsed later).
    pub mounts: Vec<String>,
    /// `--network=...`, raw.
    pub network: Option<String>,
    /// `--security=...`, raw.
    pub security: Option<String>,
    /// Heredocs, in the order their markers appear on the instruction line.
    pub heredocs: Vec<Heredoc>,
}

/// A command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Exec (JSON) form: the argument vector.
    Exec(Vec<String>),
    /// Shell form: the text, to be run with the stage's `SHELL`.
    Shell(String),
}

/// A heredoc: `<<EOF` on the instruction line, its body on the following lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, without quotes (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The body: every line up to the delimiter line, each followed by `\n`.
    pub content: String,
    /// Whether `$` references in the body are expanded: false when the delimiter was
    /// quoted.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from the body lines and the delimiter line.
    pub chomp: bool,
}

/// `HEALTHCHECK` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any health check inherited from the base image.
    None,
    /// `HEALTHCHECK [flags] CMD command`. Durations and retries are raw.
    Check {
        /// The check command.
        command: Command,
        /// `--interval=`.
        interval: Option<String>,
        /// `--timeout=`.
        timeout: Option<String>,
        /// `--start-period=`.
        start_period: Option<String>,
        /// `--start-interval=`.
        start_interval: Option<String>,
        /// `--retries=`.
        retries: Option<String>,
    },
}

/// A Dockerfile syntax error.
///
/// Displays as `{file}:{line}: {message}` followed, when there is one, by the offending
/// text on a second line, indented with `  | `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}{}", file.display(), quoted(text))]
pub struct ParseError {
    /// The Dockerfile's path.
    pub file: PathBuf,
    /// The 1-based line of the offending instruction (or directive).
    pub line: usize,
    /// The offending line or instruction text.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// The error without anything taken from the file: no text and a generic message,
    /// only the file and line. For a file that may not be a Dockerfile at all (one
    /// outside the build context), whose contents must not reach the build log.
    pub fn redacted(self) -> ParseError {
        ParseError {
            text: String::new(),
            message: "not a valid Dockerfile instruction (the text is not shown because the \
                      file is outside the build context)"
                .to_string(),
            ..self
        }
    }
}

/// The second line of a [`ParseError`]: the offending text, if any.
fn quoted(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("\n  | {text}")
    }
}

/// Parses a Dockerfile's text. `file` is only used in the result and in errors.
///
/// Accepts `\n` and `\r\n` line endings and a leading UTF-8 byte-order mark.
pub fn parse(text: &str, file: &Path) -> Result<Dockerfile, ParseError> {
    lines::parse_file(text, file)
}
