//! One-line text of a [`BuildEvent`], for simple logs (`eprintln!("{event}")`).

use crate::events::BuildEvent;
use ocibuild_cache::format_size as human_size;
use std::fmt;

impl fmt::Display for BuildEvent {
    /// The line of the `ocibuild` build log: `[3/7] (stage 0) RUN make`,
    /// `      -> layer sha256:0123456789ab (1.2 MiB), 0.52s`, `      CACHE HIT KEY`,
    /// `      base REF@DIGEST`, `      pulled sha256:… (3.4 MiB) from REF`,
    /// `      pushed sha256:… (3.4 MiB) to REF`, `pushed REF@DIGEST`, `warning: …`,
    /// `snapshotter: overlay (layer store DIR)`, `      extracted sha256:… (N entries,
    /// 3.4 MiB) into the layer store`, `      rootfs of stage S: overlay of N layers`; RUN
    /// output is shown as it is, without its line end.
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
            BuildEvent::StepDone { elapsed, layer, .. } => {
                let secs = elapsed.as_secs_f64();
                match layer {
                    Some((digest, size)) => {
                        let (digest, size) = (short(digest), human_size(*size));
                        write!(f, "      -> layer {digest} ({size}), {secs:.2}s")
                    }
                    None => write!(f, "      -> no layer, {secs:.2}s"),
                }
            }
            BuildEvent::Cache { key, hit } => {
                let outcome = if *hit { "HIT" } else { "MISS" };
                write!(f, "      CACHE {outcome} {key}")
            }
            BuildEvent::Pulled { reference, digest } => {
                write!(f, "      base {reference}@{digest}")
            }
            BuildEvent::BlobPulled {
                reference,
                digest,
                bytes,
            } => {
                let (digest, size) = (short(digest), human_size(*bytes));
                write!(f, "      pulled {digest} ({size}) from {reference}")
            }
            BuildEvent::BlobPushed {
                destination,
                digest,
                bytes,
            } => {
                let (digest, size) = (short(digest), human_size(*bytes));
                write!(f, "      pushed {digest} ({size}) to {destination}")
            }
            BuildEvent::Pushed {
                destination,
                digest,
            } => write!(f, "pushed {destination}@{digest}"),
            BuildEvent::Warning(text) => write!(f, "warning: {text}"),
            BuildEvent::Snapshotter { name, reason } => {
                write!(f, "snapshotter: {name} ({reason})")
            }
            BuildEvent::Extracted {
                diff_id,
                entries,
                bytes,
            } => {
                let (diff_id, size) = (short(diff_id), human_size(*bytes));
                write!(
                    f,
                    "      extracted {diff_id} ({entries} entries, {size}) into the layer store"
                )
            }
            BuildEvent::Rootfs {
                stage,
                snapshotter,
                layers,
            } => write!(
                f,
                "      rootfs of stage {stage}: {snapshotter} of {layers} layers"
            ),
        }
    }
}

/// The algorithm and first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    let end = digest.len().min("sha256:".len() + 12);
    digest.get(..end).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn events_read_as_the_lines_of_the_build_log() {
        let step = BuildEvent::Step {
            number: 2,
            total: 3,
            stage: "build".into(),
            instruction: "RUN a \\\n  b".into(),
        };
        assert_eq!(step.to_string(), "[2/3] (stage build) RUN a \\");
        assert_eq!(BuildEvent::Output(b"hi\r\n".to_vec()).to_string(), "hi");
        let done = BuildEvent::StepDone {
            number: 2,
            elapsed: Duration::from_millis(1500),
            layer: Some((D.into(), 3 << 20)),
        };
        assert_eq!(
            done.to_string(),
            "      -> layer sha256:0123456789ab (3.0 MiB), 1.50s"
        );
        let hit = BuildEvent::Cache {
            key: "k".into(),
            hit: true,
        };
        assert_eq!(hit.to_string(), "      CACHE HIT k");
        let pulled = BuildEvent::BlobPulled {
            reference: "r.io/base:1".into(),
            digest: D.into(),
            bytes: 1536,
        };
        assert_eq!(
            pulled.to_string(),
            "      pulled sha256:0123456789ab (1.5 KiB) from r.io/base:1"
        );
        let pushed = BuildEvent::BlobPushed {
            destination: "r.io/app:1".into(),
            digest: D.into(),
            bytes: 10,
        };
        assert_eq!(
            pushed.to_string(),
            "      pushed sha256:0123456789ab (10 B) to r.io/app:1"
        );
        assert_eq!(short("sha256:ab"), "sha256:ab");
    }
}
