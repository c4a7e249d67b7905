//! The structured fields of a [`BuildEvent`] in JSON logs: `event` (its kind) and what
//! it carries, under stable names (`step`, `instruction`, `duration_ms`, `layer`,
//! `digest`, `bytes`, `cache`, ...).

use super::Transfers;
use ocibuild_core::BuildEvent;
use serde_json::{json, Map, Value};

/// The fields of `event`, which happened during step `step` (if any); blob transfers get
/// their `duration_ms` from `transfers` once known.
pub fn event_fields(
    event: &BuildEvent,
    step: Option<usize>,
    transfers: &Transfers,
) -> Map<String, Value> {
    let transfer_ms = |digest: &str| {
        transfers
            .timing(digest)
            .map(|t| json!(t.elapsed.as_millis() as u64))
    };
    let fields = match event {
        BuildEvent::Step {
            number,
            total,
            stage,
            instruction,
        } => json!({"event": "step", "step": number, "total": total, "stage": stage,
            "instruction": instruction}),
        BuildEvent::Output(_) => json!({"event": "output", "step": step}),
        BuildEvent::StepDone {
            number,
            elapsed,
            layer,
        } => {
            let layer = layer
                .as_ref()
                .map(|(digest, size)| json!({"digest": digest, "size": size}));
            json!({"event": "step_done", "step": number,
                "duration_ms": elapsed.as_millis() as u64, "layer": layer})
        }
        BuildEvent::Cache { key, hit } => {
            let cache = if *hit { "hit" } else { "miss" };
            json!({"event": "cache", "step": step, "cache": cache, "key": key})
        }
        BuildEvent::Pulled { reference, digest } => {
            json!({"event": "base", "step": step, "reference": reference, "digest": digest})
        }
        BuildEvent::BlobPulled {
            reference,
            digest,
            bytes,
        } => json!({"event": "blob_pulled", "reference": reference, "digest": digest,
            "bytes": bytes, "duration_ms": transfer_ms(digest)}),
        BuildEvent::BlobPushed {
            destination,
            digest,
            bytes,
        } => json!({"event": "blob_pushed", "destination": destination, "digest": digest,
            "bytes": bytes, "duration_ms": transfer_ms(digest)}),
        BuildEvent::Pushed {
            destination,
            digest,
        } => json!({"event": "pushed", "destination": destination, "digest": digest}),
        BuildEvent::Warning(_) => json!({"event": "warning", "step": step}),
        _ => json!({"event": "other", "step": step}),
    };
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn events_carry_their_structured_fields() {
        let none = Transfers::default();
        let done = BuildEvent::StepDone {
            number: 2,
            elapsed: Duration::from_millis(1500),
            layer: Some(("sha256:ab".into(), 42)),
        };
        let fields = event_fields(&done, Some(2), &none);
        assert_eq!(fields["event"], "step_done");
        assert_eq!(fields["step"], 2);
        assert_eq!(fields["duration_ms"], 1500);
        assert_eq!(fields["layer"], json!({"digest": "sha256:ab", "size": 42}));
        let miss = BuildEvent::Cache {
            key: "k".into(),
            hit: false,
        };
        assert_eq!(event_fields(&miss, Some(3), &none)["cache"], "miss");
        assert_eq!(event_fields(&miss, Some(3), &none)["step"], 3);
        let pulled = BuildEvent::BlobPulled {
            reference: "r.io/a:1".into(),
            digest: "sha256:cd".into(),
            bytes: 7,
        };
        assert_eq!(
            event_fields(&pulled, None, &none)["duration_ms"],
            Value::Null
        );
        let timed = Transfers::default();
        timed.finished(
            "sha256:cd",
            super::super::Timing {
                bytes: 7,
                elapsed: Duration::from_millis(30),
            },
        );
        let fields = event_fields(&pulled, None, &timed);
        assert_eq!(fields["bytes"], 7);
        assert_eq!(fields["duration_ms"], 30);
    }
}
