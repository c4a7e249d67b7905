//! The build log on standard error: plain text, text with colour, or one JSON object per
//! line (`--log-format`), optionally timestamped.

use crate::flags::logging::{LogFormat, Verbosity};
use ocibuild_core::BuildEvent;
use std::io::Write;
use std::time::Duration;

/// Prints build events as a step-by-step log on stderr.
pub struct Log {
    verbosity: Verbosity,
    format: LogFormat,
    timestamps: bool,
}

impl Log {
    /// A log that prints what `verbosity` lets through, in `format`.
    pub fn new(verbosity: Verbosity, format: LogFormat, timestamps: bool) -> Log {
        Log {
            verbosity,
            format,
            timestamps,
        }
    }

    /// Prints one event (build output is passed through as it is, but in JSON).
    pub fn event(&mut self, event: BuildEvent) {
        if let BuildEvent::Output(bytes) = &event {
            if self.format != LogFormat::Json && self.verbosity >= Verbosity::Info {
                let _ = std::io::stderr().write_all(bytes);
                return;
            }
        }
        if let Some((level, text)) = self.line(event) {
            self.print(level, &text);
        }
    }

    /// The level and text of the line that `event` gives at this verbosity, if any.
    fn line(&self, event: BuildEvent) -> Option<(&'static str, String)> {
        if let BuildEvent::Warning(text) = event {
            return (self.verbosity >= Verbosity::Warn)
                .then(|| ("warning", format!("warning: {text}")));
        }
        if self.verbosity < Verbosity::Info {
            return None;
        }
        let text = match event {
            BuildEvent::Step {
                number,
                total,
                stage,
                instruction,
            } => {
                let first_line = instruction.lines().next().unwrap_or_default();
                format!("[{number}/{total}] (stage {stage}) {first_line}")
            }
            BuildEvent::Output(bytes) => String::from_utf8_lossy(&bytes)
                .trim_end_matches('\n')
                .to_string(),
            BuildEvent::StepDone { elapsed, layer, .. } => step_done(elapsed, layer),
            BuildEvent::Cache { key, hit } => {
                format!("      CACHE {} {key}", if hit { "HIT" } else { "MISS" })
            }
            BuildEvent::Pulled { reference, digest } => format!("      base {reference}@{digest}"),
            BuildEvent::Pushed {
                destination,
                digest,
            } => format!("pushed {destination}@{digest}"),
            _ => return None,
        };
        Some(("info", text))
    }

    /// Prints one line at `level`.
    fn print(&self, level: &str, text: &str) {
        let time = ocibuild_core::time::now_rfc3339();
        match self.format {
            LogFormat::Json => {
                let line =
                    serde_json::json!({"level": level, "msg": text.trim_start(), "time": time});
                eprintln!("{line}");
            }
            LogFormat::Color | LogFormat::Text => {
                let stamp = if self.timestamps {
                    format!("{time} ")
                } else {
                    String::new()
                };
                let colour = self.format == LogFormat::Color
                    && std::io::IsTerminal::is_terminal(&std::io::stderr());
                if colour && level == "warning" {
                    eprintln!("{stamp}\x1b[33m{text}\x1b[0m");
                } else {
                    eprintln!("{stamp}{text}");
                }
            }
        }
    }
}

/// The line of a finished step: its layer (short digest and size) and time.
fn step_done(elapsed: Duration, layer: Option<(String, u64)>) -> String {
    match layer {
        Some((digest, size)) => format!(
            "      -> layer {} ({}), {:.2}s",
            short(&digest),
            human_size(size),
            elapsed.as_secs_f64()
        ),
        None => format!("      -> no layer, {:.2}s", elapsed.as_secs_f64()),
    }
}

/// The algorithm and first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    let end = digest.len().min("sha256:".len() + 12);
    &digest[..end]
}

/// A byte count in B, KiB, MiB or GiB.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
