//! One-line text of a [`BuildEvent`], for simple logs (`eprintln!("{event}")`).

use crate::events::BuildEvent;
use std::fmt;

impl fmt::Display for BuildEvent {
    /// `[3/7] (stage 0) RUN make`, `layer sha256:… (1234 bytes) in 0.52s`,
    /// `cache hit KEY`, `pulled REF@DIGEST`, `pushed REF@DIGEST`, `warning: …`; RUN output
    /// is shown as it is, without its line end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildEvent::Step {
                number,
                total,
                stage,
                instruction,
            } => {
                let first_line = instruction.lines().next().unwrap_or_default();
                write!(f, "[{number}/{total}] (stage {stage}) {first_line}")
            }
            BuildEvent::Output(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                f.write_str(text.trim_end_matches(['\n', '\r']))
            }
            BuildEvent::StepDone {
                number,
                elapsed,
                layer,
            } => {
                let secs = elapsed.as_secs_f64();
                match layer {
                    Some((digest, size)) => {
                        write!(
                            f,
                            "step {number}: layer {digest} ({size} bytes) in {secs:.2}s"
                        )
                    }
                    None => write!(f, "step {number}: no layer, {secs:.2}s"),
                }
            }
            BuildEvent::Cache { key, hit } => {
                let outcome = if *hit { "hit" } else { "miss" };
                write!(f, "cache {outcome} {key}")
            }
            BuildEvent::Pulled { reference, digest } => write!(f, "pulled {reference}@{digest}"),
            BuildEvent::Pushed {
                destination,
                digest,
            } => write!(f, "pushed {destination}@{digest}"),
            BuildEvent::Warning(text) => write!(f, "warning: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn events_read_as_one_line() {
        let step = BuildEvent::Step {
            number: 2,
            total: 3,
            stage: "build".into(),
            instruction: "RUN a \\\n  b".into(),
        };
        assert_eq!(step.to_string(), "[2/3] (stage build) RUN a \\");
        assert_eq!(BuildEvent::Output(b"hi\n".to_vec()).to_string(), "hi");
        let done = BuildEvent::StepDone {
            number: 2,
            elapsed: Duration::from_millis(1500),
            layer: Some(("sha256:ab".into(), 10)),
        };
        assert_eq!(
            done.to_string(),
            "step 2: layer sha256:ab (10 bytes) in 1.50s"
        );
    }
}
