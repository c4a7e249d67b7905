//! An error's message with its sources, for one-line reports. A leaf module: the build
//! errors and the context errors both use it.

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
