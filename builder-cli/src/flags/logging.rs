//! Logging flags.

use clap::{ArgAction, Args, ValueEnum};

/// How much is logged, and in which format.
#[derive(Args, Debug)]
#[command(next_help_heading = "Logging")]
pub struct LoggingFlags {
    /// Log level: panic, fatal, error, warn, info, debug or trace.
    #[arg(short = 'v', long, default_value = "info")]
    pub verbosity: Verbosity,
    /// Log format: text, color or json.
    #[arg(long, value_enum, default_value = "color")]
    pub log_format: LogFormat,
    /// Prefix log lines with a timestamp.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub log_timestamp: bool,
}

/// `--log-format`: `text`, `color` (warnings in colour on a terminal) or `json` (one
/// object per line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Color,
    Json,
}

/// `--verbosity`, from least to most verbose (kaniko's levels): below `warn` only errors
/// are printed, `warn` adds warnings, `info` and above add the steps.
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
