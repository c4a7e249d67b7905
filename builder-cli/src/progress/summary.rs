//! What a build did, gathered from its events for the end of the log: a table of the
//! steps (time, cache hit or miss, layer digest and size) with the image and transfer
//! totals on a terminal, one `summary` object in JSON logs.

use super::short_digest;
use ocibuild_cache::format_size;
use ocibuild_core::{BuildEvent, BuildOutput};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The longest instruction shown in the table, in characters.
const INSTRUCTION_WIDTH: usize = 60;

/// One step of the build.
#[derive(Debug, Clone, PartialEq)]
struct StepRow {
    number: usize,
    total: usize,
    /// The instruction's first line.
    instruction: String,
    /// Whether its layer came from the cache (`None`: not looked up).
    cache: Option<bool>,
    elapsed: Option<Duration>,
    /// Digest and compressed size of the layer it made.
    layer: Option<(String, u64)>,
}

/// A count of blobs and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    blobs: usize,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, bytes: u64) {
        self.blobs += 1;
        self.bytes += bytes;
    }

    fn json(self) -> Value {
        json!({"blobs": self.blobs, "bytes": self.bytes})
    }
}

/// The steps and transfers of a build, as its events told them.
#[derive(Debug, Default)]
pub struct Summary {
    steps: Vec<StepRow>,
    pulled: Totals,
    pushed: Totals,
}

impl Summary {
    /// Takes in one event.
    pub fn record(&mut self, event: &BuildEvent) {
        match event {
            BuildEvent::Step {
                number,
                total,
                instruction,
                ..
            } => self.steps.push(StepRow {
                number: *number,
                total: *total,
                instruction: instruction.lines().next().unwrap_or_default().to_string(),
                cache: None,
                elapsed: None,
                layer: None,
            }),
            BuildEvent::Cache { hit, .. } => {
                if let Some(row) = self.steps.last_mut() {
                    row.cache = Some(*hit);
                }
            }
            BuildEvent::StepDone {
                number,
                elapsed,
                layer,
            } => {
                if let Some(row) = self.steps.iter_mut().rev().find(|r| r.number == *number) {
                    row.elapsed = Some(*elapsed);
                    row.layer = layer.clone();
                }
            }
            BuildEvent::BlobPulled { bytes, .. } => self.pulled.add(*bytes),
            BuildEvent::BlobPushed { bytes, .. } => self.pushed.add(*bytes),
            _ => {}
        }
    }

    /// The table of the steps and the totals of `out`, one line each.
    pub fn table(&self, out: &BuildOutput) -> Vec<String> {
        let mut lines = self.step_lines();
        let layers = out.layers();
        let image_bytes: u64 = layers.iter().map(|l| l.size).sum();
        lines.push(format!(
            "image: {} layers, {}; pulled {} blobs ({}), pushed {} blobs ({})",
            layers.len(),
            format_size(image_bytes),
            self.pulled.blobs,
            format_size(self.pulled.bytes),
            self.pushed.blobs,
            format_size(self.pushed.bytes),
        ));
        lines
    }

    /// The table's heading and one line per step.
    fn step_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<7} {:>8}  {:<5}  {:<19} {:>10}  INSTRUCTION",
            "STEP", "TIME", "CACHE", "LAYER", "SIZE"
        )];
        for row in &self.steps {
            let time = row
                .elapsed
                .map_or("-".to_string(), |e| format!("{:.2}s", e.as_secs_f64()));
            let cache = match row.cache {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "-",
            };
            let (layer, size) = match &row.layer {
                Some((digest, size)) => (short_digest(digest), format_size(*size)),
                None => ("-", "-".to_string()),
            };
            let step = format!("{}/{}", row.number, row.total);
            let instruction = shortened(&row.instruction, INSTRUCTION_WIDTH);
            lines.push(format!(
                "{step:<7} {time:>8}  {cache:<5}  {layer:<19} {size:>10}  {instruction}"
            ));
        }
        lines
    }

    /// The fields of the `summary` JSON line: the image, every step, the layers, the
    /// cache counts, the transfer totals and the destinations pushed to.
    pub fn json(&self, out: &BuildOutput, elapsed: Duration) -> Map<String, Value> {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|row| {
                let cache = row.cache.map(|hit| if hit { "hit" } else { "miss" });
                let layer = row
                    .layer
                    .as_ref()
                    .map(|(digest, size)| json!({"digest": digest, "size": size}));
                json!({"step": row.number, "instruction": row.instruction,
                    "duration_ms": row.elapsed.map(|e| e.as_millis() as u64),
                    "cache": cache, "layer": layer})
            })
            .collect();
        let layers: Vec<Value> = out
            .layers()
            .iter()
            .map(|l| json!({"digest": l.digest, "size": l.size}))
            .collect();
        let fields = json!({
            "event": "summary",
            "manifest_digest": out.manifest_digest,
            "config_digest": out.config_digest,
            "duration_ms": elapsed.as_millis() as u64,
            "steps": steps,
            "layers": layers,
            "cache_hits": out.cache_hits,
            "cache_misses": out.cache_misses,
            "pulled": self.pulled.json(),
            "pushed": self.pushed.json(),
            "destinations": out.pushed,
        });
        match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// `text` cut to `width` characters, ending in `…` when cut.
fn shortened(text: &str, width: usize) -> String {
    match text.char_indices().nth(width.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > width => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<BuildEvent> {
        vec![
            BuildEvent::Step {
                number: 1,
                total: 2,
                stage: "0".into(),
                instruction: "FROM alpine".into(),
            },
            BuildEvent::BlobPulled {
                reference: "r.io/alpine".into(),
                digest: "sha256:00".into(),
                bytes: 2048,
            },
            BuildEvent::StepDone {
                number: 1,
                elapsed: Duration::from_millis(250),
                layer: None,
            },
            BuildEvent::Step {
                number: 2,
                total: 2,
                stage: "0".into(),
                instruction: "RUN make \\\n  all".into(),
            },
            BuildEvent::Cache {
                key: "k".into(),
                hit: true,
            },
            BuildEvent::StepDone {
                number: 2,
                elapsed: Duration::from_millis(1500),
                layer: Some(("sha256:0123456789abcdef0123456789abcdef".into(), 3 << 20)),
            },
        ]
    }

    #[test]
    fn steps_gather_their_cache_outcome_time_and_layer() {
        let mut summary = Summary::default();
        for event in events() {
            summary.record(&event);
        }
        assert_eq!(summary.steps.len(), 2);
        let run = &summary.steps[1];
        assert_eq!(run.instruction, "RUN make \\");
        assert_eq!(run.cache, Some(true));
        assert_eq!(run.elapsed, Some(Duration::from_millis(1500)));
        assert_eq!(run.layer.as_ref().map(|l| l.1), Some(3 << 20));
        assert_eq!(summary.steps[0].cache, None);
        assert_eq!(
            summary.pulled,
            Totals {
                blobs: 1,
                bytes: 2048
            }
        );
    }

    #[test]
    fn the_table_has_a_line_per_step_with_time_cache_and_layer() {
        let mut summary = Summary::default();
        for event in events() {
            summary.record(&event);
        }
        let lines = summary.step_lines();
        assert_eq!(
            lines,
            [
                "STEP        TIME  CACHE  LAYER                     SIZE  INSTRUCTION",
                "1/2        0.25s  -      -                            -  FROM alpine",
                "2/2        1.50s  hit    sha256:0123456789ab    3.0 MiB  RUN make \\",
            ]
        );
    }

    #[test]
    fn long_instructions_are_cut() {
        assert_eq!(shortened("RUN abc", 10), "RUN abc");
        assert_eq!(shortened("RUN abcdefgh", 8), "RUN abc…");
        assert_eq!(shortened("RUN abcd", 8), "RUN abcd");
    }
}
