//! The live view of a build on a terminal (`--progress tty`, or `auto` on a terminal):
//! below the log lines, the current step with its elapsed time (and `CACHED` on a cache
//! hit), and one bar per blob transfer in flight (bytes, size, rate), several at once
//! when several run; RUN output and every log line scroll above the bars. The bars of
//! transfers come from the registry client's `transfer` spans ([`layer`]).
//!
//! Also here: the times of finished transfers ([`Transfers`]), the JSON fields of events
//! ([`fields`]) and the summary of the build ([`summary`]).

pub mod fields;
pub mod layer;
pub mod summary;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use ocibuild_core::BuildEvent;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the bars are redrawn, per second.
const REDRAW_HZ: u8 = 10;

/// The bars below the log: the current step's spinner and the transfers' bars.
pub struct LiveView {
    bars: MultiProgress,
    step: Option<ProgressBar>,
    /// The current step's line, without `CACHED`.
    step_text: String,
    /// RUN output since its last line end, held back until the line is complete.
    partial: Vec<u8>,
    colour: bool,
}

impl LiveView {
    /// An empty view drawn on standard error (terminal or not: `auto` decides before),
    /// with the step in colour when `colour`.
    pub fn new(colour: bool) -> LiveView {
        let term = Box::new(console::Term::buffered_stderr());
        let target = ProgressDrawTarget::term_like_with_hz(term, REDRAW_HZ);
        LiveView {
            bars: MultiProgress::with_draw_target(target),
            step: None,
            step_text: String::new(),
            partial: Vec::new(),
            colour,
        }
    }

    /// The bars, to print above ([`write_above`]) and to add transfers to.
    pub fn bars(&self) -> MultiProgress {
        self.bars.clone()
    }

    /// Follows `event`: a new step replaces the spinner, a cache hit marks it, RUN output
    /// goes above the bars line by line, the step's end removes it.
    pub fn event(&mut self, event: &BuildEvent) {
        match event {
            BuildEvent::Step {
                number,
                total,
                instruction,
                ..
            } => {
                self.end_step();
                let first_line = instruction.lines().next().unwrap_or_default();
                self.step_text = format!("[{number}/{total}] {first_line}");
                self.start_step();
            }
            BuildEvent::Cache { hit: true, .. } => {
                if let Some(step) = &self.step {
                    let cached = self.paint(crate::log::Paint::Hit, "CACHED");
                    step.set_message(format!("{} {cached}", self.step_text));
                }
            }
            BuildEvent::Output(bytes) => self.output(bytes),
            BuildEvent::StepDone { .. } => self.end_step(),
            _ => {}
        }
    }

    /// Shows the spinner of the step in `step_text`, above the transfers.
    fn start_step(&mut self) {
        let style = ProgressStyle::with_template("{spinner} {msg} {secs}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("secs", |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
            })
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let step = self
            .bars
            .insert(0, ProgressBar::new_spinner().with_style(style));
        step.set_message(self.paint(crate::log::Paint::Header, &self.step_text));
        step.enable_steady_tick(Duration::from_millis(100));
        self.step = Some(step);
    }

    /// Removes the spinner, after the step's last output.
    fn end_step(&mut self) {
        self.flush_output();
        if let Some(step) = self.step.take() {
            step.finish_and_clear();
            self.bars.remove(&step);
        }
    }

    /// Prints the complete lines of RUN output above the bars, keeping the rest.
    fn output(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let lines: Vec<u8> = self.partial.drain(..=end).collect();
            write_above(Some(&self.bars), &lines);
        }
    }

    /// Prints RUN output held back, ending its line.
    fn flush_output(&mut self) {
        if !self.partial.is_empty() {
            let mut rest = std::mem::take(&mut self.partial);
            rest.push(b'\n');
            write_above(Some(&self.bars), &rest);
        }
    }

    /// `text` in `paint` when the view is in colour.
    fn paint(&self, paint: crate::log::Paint, text: &str) -> String {
        if self.colour {
            paint.apply(text)
        } else {
            text.to_string()
        }
    }

    /// Ends the view: output held back is printed, the bars are cleared.
    pub fn finish(self) {
        drop(self)
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        self.end_step();
        let _ = self.bars.clear();
    }
}

/// Writes `bytes` to standard error, above `bars` when there are bars.
pub fn write_above(bars: Option<&MultiProgress>, bytes: &[u8]) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    };
    match bars {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// A bar for a transfer of blob `digest` in `direction` (`pull`, `push`) of `total`
/// bytes (0: unknown), added below the others.
pub fn transfer_bar(
    bars: &MultiProgress,
    direction: &str,
    digest: &str,
    total: u64,
) -> ProgressBar {
    let arrow = if direction == "push" { "↑" } else { "↓" };
    let template = if total > 0 {
        "  {prefix} [{bar:24}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}"
    } else {
        "  {prefix} {spinner} {binary_bytes} {binary_bytes_per_sec}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = if total > 0 {
        ProgressBar::new(total)
    } else {
        ProgressBar::no_length()
    };
    let bar = bar
        .with_style(style)
        .with_prefix(format!("{arrow} {direction} {}", short_digest(digest)));
    bars.add(bar)
}

/// The algorithm and first 12 hex digits of a digest.
pub fn short_digest(digest: &str) -> &str {
    let end = digest.len().min("sha256:".len() + 12);
    digest.get(..end).unwrap_or(digest)
}

/// How long a finished transfer took, and so its rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// The bytes moved.
    pub bytes: u64,
    /// From its first request to its last byte.
    pub elapsed: Duration,
}

impl Timing {
    /// Bytes per second, when it took long enough (10 ms) for one to mean something.
    pub fn rate(&self) -> Option<u64> {
        let secs = self.elapsed.as_secs_f64();
        (secs >= 0.01).then(|| (self.bytes as f64 / secs) as u64)
    }
}

impl fmt::Display for Timing {
    /// `0.52s, 3.1 MiB/s` (without the rate for a transfer too short to measure one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}s", self.elapsed.as_secs_f64())?;
        match self.rate() {
            Some(rate) => write!(f, ", {}/s", ocibuild_cache::format_size(rate)),
            None => Ok(()),
        }
    }
}

/// The timings of the transfers finished so far, by blob digest (the last one of a
/// digest transferred twice); clones share them.
#[derive(Clone, Default, Debug)]
pub struct Transfers(Arc<Mutex<HashMap<String, Timing>>>);

impl Transfers {
    /// Records that blob `digest` finished moving, with `timing`.
    pub fn finished(&self, digest: &str, timing: Timing) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(digest.to_string(), timing);
    }

    /// The timing of blob `digest`'s last finished transfer.
    pub fn timing(&self, digest: &str) -> Option<Timing> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_read_as_time_and_rate() {
        let t = Timing {
            bytes: 3 << 20,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(t.to_string(), "1.50s, 2.0 MiB/s");
        let instant = Timing {
            bytes: 10,
            elapsed: Duration::ZERO,
        };
        assert_eq!(instant.rate(), None);
        assert_eq!(instant.to_string(), "0.00s");
        let transfers = Transfers::default();
        transfers.finished("sha256:a", t);
        assert_eq!(transfers.clone().timing("sha256:a"), Some(t));
        assert_eq!(transfers.timing("sha256:b"), None);
    }
}
