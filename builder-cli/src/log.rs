//! The build log on standard error: plain lines (`--log-format text` or `color`), the live
//! view on a terminal (`--progress`, [`crate::progress`]), or one JSON object per line
//! (`--log-format json`); optionally timestamped. It shows the engine's [`BuildEvent`]s,
//! the libraries' `tracing` diagnostics at the `-v` level ([`crate::progress::layer`]),
//! the summary at the end ([`Log::built`]) and the final error ([`print_error`]).

use crate::flags::logging::{LogFormat, LoggingFlags, ProgressMode, Verbosity};
use crate::progress::fields::event_fields;
use crate::progress::summary::Summary;
use crate::progress::{LiveView, Transfers};
use ocibuild_core::{BuildEvent, BuildOutput};
use serde_json::{json, Map, Value};
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

/// The level of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Printed at every verbosity.
    Error,
    /// From `warn`.
    Warning,
    /// From `info`.
    Info,
    /// From `debug`.
    Debug,
    /// From `trace`.
    Trace,
}

impl Level {
    /// Its name in JSON lines (`warning`, as kaniko's logrus).
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The least verbosity that prints it.
    pub fn least(self) -> Verbosity {
        match self {
            Level::Error => Verbosity::Panic,
            Level::Warning => Verbosity::Warn,
            Level::Info => Verbosity::Info,
            Level::Debug => Verbosity::Debug,
            Level::Trace => Verbosity::Trace,
        }
    }
}

/// How a text line is coloured (when colour is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// As it is.
    Plain,
    /// A step header: bold cyan.
    Header,
    /// A cache hit: green.
    Hit,
    /// A warning: yellow.
    Warning,
    /// An error: bold red.
    Error,
    /// A diagnostic (`debug`, `trace`): dim.
    Dim,
}

impl Paint {
    /// The SGR codes that start it.
    fn codes(self) -> Option<&'static str> {
        match self {
            Paint::Plain => None,
            Paint::Header => Some("1;36"),
            Paint::Hit => Some("32"),
            Paint::Warning => Some("33"),
            Paint::Error => Some("1;31"),
            Paint::Dim => Some("2"),
        }
    }

    /// `text` in this paint.
    pub fn apply(self, text: &str) -> String {
        match self.codes() {
            Some(codes) => format!("\x1b[{codes}m{text}\x1b[0m"),
            None => text.to_string(),
        }
    }
}

/// How lines look: format, timestamps, colour. The final error is printed in the style of
/// the last log made from flags ([`print_error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Text or JSON (`color` is text with `colour` decided by the terminal).
    pub format: LogFormat,
    /// Timestamp prefix on text lines.
    pub timestamps: bool,
    /// Whether text lines are coloured.
    pub colour: bool,
}

impl Style {
    /// The style `flags` ask for here: colour only with `--log-format color` on a terminal
    /// and without `NO_COLOR` (any non-empty value) or `TERM=dumb`.
    pub fn of(flags: &LoggingFlags) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colour = flags.log_format == LogFormat::Color
            && std::io::stderr().is_terminal()
            && !no_color
            && !dumb_terminal();
        Style {
            format: flags.log_format,
            timestamps: flags.log_timestamp,
            colour,
        }
    }
}

/// Whether `TERM` is `dumb`.
fn dumb_terminal() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// The style of the final error, set by [`Log::from_flags`].
static ERROR_STYLE: OnceLock<Style> = OnceLock::new();

/// Where lines go: standard error, above the live view's bars when there is one.
#[derive(Clone)]
pub struct Printer {
    style: Style,
    view: Option<indicatif::MultiProgress>,
}

impl Printer {
    /// Lines in `style`, printed above the bars of `view`.
    pub fn new(style: Style, view: Option<indicatif::MultiProgress>) -> Printer {
        Printer { style, view }
    }

    /// Whether lines are JSON.
    pub fn json(&self) -> bool {
        self.style.format == LogFormat::Json
    }

    /// Prints one line at `level`: `text` in `paint` as text, or a JSON object of `text`
    /// (`msg`), the level, the time and `fields`.
    pub fn line(&self, level: Level, text: &str, paint: Paint, fields: Map<String, Value>) {
        let time = ocibuild_image::time::now_rfc3339();
        let line = if self.json() {
            let mut object = Map::new();
            object.insert("time".into(), json!(time));
            object.insert("level".into(), json!(level.name()));
            object.insert("msg".into(), json!(text.trim_start()));
            object.extend(fields);
            format!("{}\n", Value::Object(object))
        } else {
            let stamp = if self.style.timestamps {
                format!("{time} ")
            } else {
                String::new()
            };
            let text = if self.style.colour {
                paint.apply(text)
            } else {
                text.to_string()
            };
            format!("{stamp}{text}\n")
        };
        self.write(line.as_bytes());
    }

    /// Writes `bytes` as they are.
    pub fn write(&self, bytes: &[u8]) {
        crate::progress::write_above(self.view.as_ref(), bytes);
    }

    /// The live view's bars, if there is a live view.
    pub fn bars(&self) -> Option<&indicatif::MultiProgress> {
        self.view.as_ref()
    }
}

/// Prints build events as a step-by-step log on stderr.
pub struct Log {
    verbosity: Verbosity,
    out: Printer,
    view: Option<LiveView>,
    summary: Summary,
    transfers: Transfers,
    /// The current step, for JSON lines.
    step: Option<usize>,
}

impl Log {
    /// The build log the logging flags ask for: the live view or plain lines, and the
    /// libraries' diagnostics routed to it (a process-wide `tracing` subscriber, set once).
    pub fn from_flags(flags: &LoggingFlags) -> Log {
        let style = Style::of(flags);
        let _ = ERROR_STYLE.set(style);
        let live = flags.log_format != LogFormat::Json
            && flags.verbosity >= Verbosity::Info
            && match flags.progress {
                ProgressMode::Plain => false,
                ProgressMode::Tty => true,
                ProgressMode::Auto => std::io::stderr().is_terminal() && !dumb_terminal(),
            };
        let view = live.then(|| LiveView::new(style.colour));
        let out = Printer::new(style, view.as_ref().map(LiveView::bars));
        let transfers = Transfers::default();
        crate::progress::layer::install(flags.verbosity, out.clone(), transfers.clone());
        Log {
            verbosity: flags.verbosity,
            out,
            view,
            summary: Summary::default(),
            transfers,
            step: None,
        }
    }

    /// A plain log that prints what `verbosity` lets through, in `format`, without colour.
    #[cfg(test)]
    pub fn new(verbosity: Verbosity, format: LogFormat, timestamps: bool) -> Log {
        let style = Style {
            format,
            timestamps,
            colour: false,
        };
        Log {
            verbosity,
            out: Printer::new(style, None),
            view: None,
            summary: Summary::default(),
            transfers: Transfers::default(),
            step: None,
        }
    }

    /// Shows one event (build output is passed through as it is, but in JSON).
    pub fn event(&mut self, event: BuildEvent) {
        self.summary.record(&event);
        if let BuildEvent::Step { number, .. } = &event {
            self.step = Some(*number);
        }
        if let Some(view) = &mut self.view {
            view.event(&event);
        }
        if let BuildEvent::Output(bytes) = &event {
            if !self.out.json() && self.verbosity >= Verbosity::Info {
                if self.view.is_none() {
                    self.out.write(bytes);
                }
                return;
            }
        }
        if let Some((level, text, paint)) = self.line(&event) {
            let fields = event_fields(&event, self.step, &self.transfers);
            self.out.line(level, &text, paint, fields);
        }
    }

    /// The level, text and paint of the line that `event` gives at this verbosity, if
    /// any: the event's own one-line text ([`BuildEvent`]'s `Display`); warnings from
    /// `warn` on, blob transfers (with their byte counts; the live view shows them itself,
    /// with time and rate), layer extractions and the making of a stage's rootfs from
    /// `debug`, the rest (the snapshotter chosen too) from `info`.
    fn line(&self, event: &BuildEvent) -> Option<(Level, String, Paint)> {
        let (level, paint) = match event {
            BuildEvent::Warning(_) => (Level::Warning, Paint::Warning),
            BuildEvent::BlobPulled { .. } | BuildEvent::BlobPushed { .. } => {
                if self.view.is_some() {
                    return None;
                }
                (Level::Debug, Paint::Dim)
            }
            BuildEvent::Extracted { .. } | BuildEvent::Rootfs { .. } => (Level::Debug, Paint::Dim),
            BuildEvent::Step { .. } => (Level::Info, Paint::Header),
            BuildEvent::Cache { hit: true, .. } => (Level::Info, Paint::Hit),
            _ => (Level::Info, Paint::Plain),
        };
        if self.verbosity < level.least() {
            return None;
        }
        Some((level, event.to_string(), paint))
    }

    /// Ends a log that built no image (the warmer's): the live view is closed and `last`
    /// printed at `info`.
    pub fn finish(&mut self, last: &str) {
        if let Some(view) = self.view.take() {
            view.finish();
        }
        if self.verbosity >= Verbosity::Info {
            self.out.line(Level::Info, last, Paint::Plain, Map::new());
        }
    }

    /// Reports the build's end at `info`: the summary table (live view), the cache
    /// counts when `cache` is on, and `built DIGEST in TIME (N layers)`; in JSON one
    /// `summary` object with every step, layer and transfer count.
    pub fn built(&mut self, out: &BuildOutput, elapsed: Duration, cache: bool) {
        if let Some(view) = self.view.take() {
            view.finish();
        }
        if self.verbosity < Verbosity::Info {
            return;
        }
        let built = format!(
            "built {} in {:.2}s ({} layers)",
            out.manifest_digest,
            elapsed.as_secs_f64(),
            out.layers().len()
        );
        if self.out.json() {
            let fields = self.summary.json(out, elapsed);
            self.out.line(Level::Info, &built, Paint::Plain, fields);
            return;
        }
        if self.out.bars().is_some() {
            for line in self.summary.table(out) {
                self.out.line(Level::Info, &line, Paint::Plain, Map::new());
            }
        }
        if cache {
            let counts = format!(
                "cache: {} hits, {} misses",
                out.cache_hits, out.cache_misses
            );
            self.out
                .line(Level::Info, &counts, Paint::Plain, Map::new());
        }
        self.out.line(Level::Info, &built, Paint::Plain, Map::new());
    }
}

/// Prints the error a command ends with, `error: MESSAGE`, in the style of the build log
/// (a JSON object with level `error` in JSON logs; red in colour).
pub fn print_error(message: &str) {
    let style = ERROR_STYLE.get().copied().unwrap_or(Style {
        format: LogFormat::Text,
        timestamps: false,
        colour: false,
    });
    let fields = Map::from_iter([("event".to_string(), json!("error"))]);
    let text = if style.format == LogFormat::Json {
        message.to_string()
    } else {
        format!("error: {message}")
    };
    Printer::new(style, None).line(Level::Error, &text, Paint::Error, fields);
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
        assert_eq!(
            info.line(&hit()),
            Some((Level::Info, hit().to_string(), Paint::Hit))
        );
        assert_eq!(info.line(&pulled()), None);
        assert_eq!(
            info.line(&warning()),
            Some((Level::Warning, "warning: careful".into(), Paint::Warning))
        );
        let debug = Log::new(Verbosity::Debug, LogFormat::Json, false);
        assert_eq!(
            debug.line(&pulled()),
            Some((Level::Debug, pulled().to_string(), Paint::Dim))
        );
        let quiet = Log::new(Verbosity::Warn, LogFormat::Text, false);
        assert_eq!(quiet.line(&hit()), None);
        assert!(quiet.line(&warning()).is_some());
    }

    #[test]
    fn paint_wraps_the_text_in_its_colour_and_resets() {
        assert_eq!(Paint::Warning.apply("w"), "\x1b[33mw\x1b[0m");
        assert_eq!(Paint::Plain.apply("p"), "p");
    }
}
