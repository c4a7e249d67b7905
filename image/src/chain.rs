//! An error's message with its sources, for one-line reports. The registry client, the
//! build contexts and the build errors all use it.

/// The error and its sources, joined with `: `, leaving out a source whose text the
/// message already contains.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn sources_are_joined_and_repeats_left_out() {
        let inner = Layer("connection refused", None);
        let middle = Layer("connecting: connection refused", Some(Box::new(inner)));
        let outer = Layer("sending request", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&outer),
            "sending request: connecting: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
