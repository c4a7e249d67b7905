//! Logging flags.

use clap::{ArgAction, Args, ValueEnum};

/// How much is logged, and in which format.
#[derive(Args, Debug)]
#[command(next_help_heading = "Logging")]
pub struct LoggingFlags {
    /// Log level: panic, fatal, error, warn, info, debug (adds registry requests, token
    /// scopes, cache key inputs, snapshot statistics, blob transfers) or trace (adds
    /// response headers, whole key inputs, every changed path).
    #[arg(short = 'v', long, default_value = "info")]
    pub verbosity: Verbosity,
    /// Log format: text, color (step headers, cache hits, warnings and errors in colour on
    /// a terminal, unless NO_COLOR is set) or json (every line a JSON object).
    #[arg(long, value_enum, default_value = "color")]
    pub log_format: LogFormat,
    /// Prefix log lines with a timestamp.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub log_timestamp: bool,
    /// Progress display: auto (the live view when standard error is a terminal), tty (the
    /// live view: current step, transfers with bytes and rate, a summary table) or plain
    /// (one line per event). JSON logs are always plain.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: ProgressMode,
}

/// `--log-format`: `text`, `color` (in colour on a terminal) or `json` (one object per
/// line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Color,
    Json,
}

/// `--progress`: the live view on a terminal, forced, or plain lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// The live view when standard error is a terminal (and `TERM` is not `dumb`).
    Auto,
    /// The live view, terminal or not.
    Tty,
    /// One line per event.
    Plain,
}

/// `--verbosity`, from least to most verbose (kaniko's levels): below `warn` only errors
/// are printed, `warn` adds warnings, `info` the steps, `debug` and `trace` the libraries'
/// diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Verbosity {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}
