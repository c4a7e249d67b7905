//! The build log on standard error: plain text, text with colour, or one JSON object per
//! line (`--log-format`), optionally timestamped.

use crate::flags::logging::{LogFormat, Verbosity};
use ocibuild_core::BuildEvent;
use std::io::Write;

/// Prints build events as a step-by-step log on stderr.
pub struct Log {
    verbosity: Verbosity,
    format: LogFormat,
    timestamps: bool,
}

impl Log {
    /// The build log the logging flags ask for.
    pub fn from_flags(flags: &crate::flags::logging::LoggingFlags) -> Log {
        Log::new(flags.verbosity, flags.log_format, flags.log_timestamp)
    }

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

    /// The level and text of the line that `event` gives at this verbosity, if any: the
    /// event's own one-line text ([`BuildEvent`]'s `Display`); warnings from `warn` on,
    /// blob transfers (with their byte counts), layer extractions and the making of a
    /// stage's rootfs from `debug`, the rest (the snapshotter chosen too) from `info`.
    fn line(&self, event: BuildEvent) -> Option<(&'static str, String)> {
        let (level, least) = match &event {
            BuildEvent::Warning(_) => ("warning", Verbosity::Warn),
            BuildEvent::BlobPulled { .. }
            | BuildEvent::BlobPushed { .. }
            | BuildEvent::Extracted { .. }
            | BuildEvent::Rootfs { .. } => ("debug", Verbosity::Debug),
            _ => ("info", Verbosity::Info),
        };
        (self.verbosity >= least).then(|| (level, event.to_string()))
    }

    /// Prints one line at `level`.
    fn print(&self, level: &str, text: &str) {
        let time = ocibuild_image::time::now_rfc3339();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_events_own_text_at_their_level() {
        let hit = || BuildEvent::Cache {
            key: "k".into(),
            hit: true,
        };
        let pulled = || BuildEvent::BlobPulled {
            reference: "r.io/base:1".into(),
            digest: "sha256:0123456789abcdef".into(),
            bytes: 2048,
        };
        let warning = || BuildEvent::Warning("careful".into());
        let info = Log::new(Verbosity::Info, LogFormat::Text, false);
        assert_eq!(info.line(hit()), Some(("info", hit().to_string())));
        assert_eq!(info.line(pulled()), None);
        assert_eq!(
            info.line(warning()),
            Some(("warning", "warning: careful".into()))
        );
        let debug = Log::new(Verbosity::Debug, LogFormat::Json, false);
        assert_eq!(debug.line(pulled()), Some(("debug", pulled().to_string())));
        let quiet = Log::new(Verbosity::Warn, LogFormat::Text, false);
        assert_eq!(quiet.line(hit()), None);
        assert!(quiet.line(warning()).is_some());
    }
}
