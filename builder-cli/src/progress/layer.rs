//! The `tracing` subscriber of the command: the libraries' diagnostics (targets
//! `ocibuild*`) become log lines at the `-v` level — `debug: GET URL -> 200 OK in 3 ms`,
//! or JSON objects with their fields — and the registry client's `transfer` spans
//! ([`ocibuild_registry::trace`]) become bars in the live view, completion lines with
//! time and rate, and [`Transfers`] timings.

use super::{transfer_bar, Timing, Transfers};
use crate::flags::logging::Verbosity;
use crate::log::{Level, Paint, Printer};
use indicatif::ProgressBar;
use ocibuild_core::BuildEvent;
use ocibuild_registry::trace::TRANSFER_TARGET;
use serde_json::{json, Map, Value};
use std::fmt;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Makes the process's `tracing` subscriber print to `out` what `verbosity` lets through
/// and time transfers into `transfers`. Only the first call in a process counts.
pub fn install(verbosity: Verbosity, out: Printer, transfers: Transfers) {
    let layer = LogLayer {
        verbosity,
        out,
        transfers,
    };
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

/// The layer: log lines from events, bars and timings from transfer spans.
pub struct LogLayer {
    verbosity: Verbosity,
    out: Printer,
    transfers: Transfers,
}

/// A transfer in flight (kept in its span).
struct Transfer {
    direction: String,
    digest: String,
    repository: String,
    total: u64,
    done: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// The [`Level`] of a `tracing` level.
fn level_of(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        tracing::Level::DEBUG => Level::Debug,
        _ => Level::Trace,
    }
}

impl LogLayer {
    /// Whether a callsite is wanted: the transfer spans always, the libraries' events at
    /// the verbosity, nothing of other crates.
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            return meta.target() == TRANSFER_TARGET;
        }
        meta.target().starts_with("ocibuild") && self.verbosity >= level_of(meta.level()).least()
    }

    /// Ends `transfer`: removes its bar; a complete one is timed and, in the live view,
    /// printed as a line with its time and rate; one cut short is noted at `debug`.
    fn finish(&self, transfer: Transfer) {
        if let (Some(bar), Some(bars)) = (&transfer.bar, self.out.bars()) {
            bar.finish_and_clear();
            bars.remove(bar);
        }
        let timing = Timing {
            bytes: transfer.done,
            elapsed: transfer.started.elapsed(),
        };
        if transfer.total > 0 && transfer.done < transfer.total {
            if self.verbosity >= Verbosity::Debug {
                let text = format!(
                    "debug: {} of {} ({}) stopped after {} of {}",
                    transfer.direction,
                    transfer.digest,
                    transfer.repository,
                    ocibuild_cache::format_size(transfer.done),
                    ocibuild_cache::format_size(transfer.total)
                );
                self.out.line(Level::Debug, &text, Paint::Dim, Map::new());
            }
            return;
        }
        self.transfers.finished(&transfer.digest, timing);
        if self.out.bars().is_some() && self.verbosity >= Verbosity::Info {
            let event = completed(transfer);
            self.out.line(
                Level::Info,
                &format!("{event}, {timing}"),
                Paint::Plain,
                Map::new(),
            );
        }
    }
}

/// The event a completed transfer is reported as.
fn completed(transfer: Transfer) -> BuildEvent {
    if transfer.direction == "push" {
        BuildEvent::BlobPushed {
            destination: transfer.repository,
            digest: transfer.digest,
            bytes: transfer.done,
        }
    } else {
        BuildEvent::BlobPulled {
            reference: transfer.repository,
            digest: transfer.digest,
            bytes: transfer.done,
        }
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let text = |name: &str| fields.text(name).unwrap_or_default();
        let mut transfer = Transfer {
            direction: text("direction"),
            digest: text("digest"),
            repository: text("repository"),
            total: fields.number("total").unwrap_or(0),
            done: fields.number("done").unwrap_or(0),
            started: Instant::now(),
            bar: None,
        };
        if let Some(bars) = self.out.bars() {
            let bar = transfer_bar(bars, &transfer.direction, &transfer.digest, transfer.total);
            bar.set_position(transfer.done);
            transfer.bar = Some(bar);
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(transfer);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut done = Done(None);
        values.record(&mut done);
        let Some(done) = done.0 else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            if let Some(transfer) = span.extensions_mut().get_mut::<Transfer>() {
                transfer.done = done;
                if let Some(bar) = &transfer.bar {
                    bar.set_position(done);
                }
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let transfer = ctx
            .span(&id)
            .and_then(|span| span.extensions_mut().remove::<Transfer>());
        if let Some(transfer) = transfer {
            self.finish(transfer);
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = level_of(meta.level());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.message.take().unwrap_or_default();
        if self.out.json() {
            let mut object = fields.values;
            object.insert("event".into(), json!("diagnostic"));
            object.insert("target".into(), json!(meta.target()));
            self.out.line(level, &message, Paint::Plain, object);
        } else {
            let text = format!("{}: {message}", level.name());
            self.out.line(level, &text, Paint::Dim, Map::new());
        }
    }
}

/// The `done` field of a transfer's update (once per chunk: no allocation).
struct Done(Option<u64>);

impl Visit for Done {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "done" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// The fields of a span or event: its message apart, the rest as JSON values.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Map<String, Value>,
}

impl Fields {
    fn text(&self, name: &str) -> Option<String> {
        match self.values.get(name)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.values.get(name)?.as_u64()
    }

    fn put(&mut self, field: &Field, value: Value) {
        self.values.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, json!(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, json!(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, json!(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.put(field, json!(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, json!(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::logging::LogFormat;
    use crate::log::Style;

    fn layer(verbosity: Verbosity) -> LogLayer {
        let style = Style {
            format: LogFormat::Text,
            timestamps: false,
            colour: false,
        };
        LogLayer {
            verbosity,
            out: Printer::new(style, None),
            transfers: Transfers::default(),
        }
    }

    #[test]
    fn transfers_are_timed_and_events_follow_the_verbosity() {
        let info = layer(Verbosity::Info);
        let transfers = info.transfers.clone();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(info), || {
            assert!(!tracing::enabled!(target: "ocibuild_registry::http", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "hyper", tracing::Level::ERROR));
            let span = tracing::info_span!(target: TRANSFER_TARGET, "transfer",
                direction = "pull", digest = "sha256:ab", repository = "r.io/a",
                total = 4u64, done = 0u64);
            span.record("done", 4u64);
            drop(span);
        });
        let timing = transfers
            .timing("sha256:ab")
            .expect("the transfer was timed");
        assert_eq!(timing.bytes, 4);
        let debug = layer(Verbosity::Debug);
        let transfers = debug.transfers.clone();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(debug), || {
            assert!(tracing::enabled!(target: "ocibuild_registry::http", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "ocibuild_registry::http", tracing::Level::TRACE));
            let span = tracing::info_span!(target: TRANSFER_TARGET, "transfer",
                direction = "push", digest = "sha256:cd", repository = "r.io/a",
                total = 4u64, done = 0u64);
            span.record("done", 2u64);
        });
        assert_eq!(
            transfers.timing("sha256:cd"),
            None,
            "an interrupted transfer"
        );
    }
}
