//! Layer cache keys. Each step's key chains the previous step's key with a description of
//! everything that can change the step's result, so a key changes whenever an input
//! changes — and only then:
//!
//! - the stage's first key identifies its base: the base image's config and layer digests
//!   (a retagged base changes it), or the key of the stage it starts from, or scratch and
//!   the platform;
//! - metadata instructions (ENV, LABEL, USER, ...) add their text and the resulting image
//!   config, so a changed value changes every later key;
//! - RUN adds its argv (heredoc bodies included), the environment it sees (ENV and the ARG
//!   values in scope, so a build arg only matters from the first step that can see it),
//!   USER, WORKDIR and network mode;
//! - COPY/ADD add the expanded sources and destination, their flags, and a digest of every
//!   source file's name, type, mode, owner, size and content after `.dockerignore` (never
//!   mtimes); `--from` adds the source stage's key or the source image's identity;
//! - WORKDIR adds the path and USER.
//!
//! Because keys are chained, a change at step k changes the keys of k and every later step
//! of the stage (and of stages built from it); earlier steps keep their keys.

use sha2::{Digest, Sha256};

/// Builds one key from the previous key and named, length-prefixed fields.
///
/// With `debug` logging of this module on (a `tracing` subscriber that wants it), each
/// finished key is logged with its inputs: `cache key KEY of KIND: previous=…, kind=…,
/// name=value, …` (values cut to 100 characters; whole at `trace`).
#[derive(Debug, Clone)]
pub struct StepKey {
    hasher: Sha256,
    /// The fields as the log shows them, gathered only while it wants them.
    shown: Option<Vec<String>>,
}

impl StepKey {
    /// Starts the key of a step of `kind` that follows `previous` (empty for the first).
    pub fn after(previous: &str, kind: &str) -> StepKey {
        let mut key = StepKey {
            hasher: Sha256::new(),
            shown: tracing::enabled!(tracing::Level::DEBUG).then(Vec::new),
        };
        key.hasher.update(b"ocibuild-cache-v1\0");
        key = key.field("previous", previous.as_bytes());
        key.field("kind", kind.as_bytes())
    }

    /// Adds one named field.
    pub fn field(mut self, name: &str, value: impl AsRef<[u8]>) -> StepKey {
        let value = value.as_ref();
        self.show(name, &String::from_utf8_lossy(value));
        self.hash(name, value);
        self
    }

    /// Adds a list of strings as one field.
    pub fn list<S: AsRef<str>>(mut self, name: &str, items: &[S]) -> StepKey {
        let mut joined = Vec::new();
        for item in items {
            joined.extend_from_slice(&(item.as_ref().len() as u64).to_le_bytes());
            joined.extend_from_slice(item.as_ref().as_bytes());
        }
        if self.shown.is_some() {
            let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
            self.show(name, &format!("{items:?}"));
        }
        self.hash(name, &joined);
        self
    }

    /// The key: 64 lowercase hex characters (a valid registry tag).
    pub fn finish(self) -> String {
        let key = hex::encode(self.hasher.finalize());
        if let Some(shown) = self.shown {
            let kind = shown
                .get(1)
                .and_then(|k| k.strip_prefix("kind="))
                .unwrap_or_default();
            let inputs = shown.join(", ");
            tracing::debug!(key, "cache key {key} of {kind}: {inputs}");
        }
        key
    }

    /// Hashes one named field, its name and value length-prefixed.
    fn hash(&mut self, name: &str, value: &[u8]) {
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
    }

    /// Keeps `name=value` for the log, when it wants the inputs: the value cut to 100
    /// characters unless `trace` is on.
    fn show(&mut self, name: &str, value: &str) {
        let Some(shown) = &mut self.shown else {
            return;
        };
        const LONGEST: usize = 100;
        let whole = tracing::enabled!(tracing::Level::TRACE);
        let value = match value.char_indices().nth(LONGEST) {
            Some((end, _)) if !whole => format!("{}… ({} bytes)", &value[..end], value.len()),
            _ => value.to_string(),
        };
        shown.push(format!("{name}={value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_previous_kind_and_fields_without_ambiguity() {
        let k = |prev: &str, a: &str, b: &str| {
            StepKey::after(prev, "RUN")
                .field("a", a)
                .field("b", b)
                .finish()
        };
        assert_eq!(k("p", "x", "y"), k("p", "x", "y"));
        assert_ne!(k("p", "x", "y"), k("q", "x", "y"));
        assert_ne!(k("p", "xy", ""), k("p", "x", "y"));
        assert_ne!(
            StepKey::after("p", "RUN").finish(),
            StepKey::after("p", "COPY").finish()
        );
        assert_ne!(
            StepKey::after("", "X").list("l", &["a b", "c"]).finish(),
            StepKey::after("", "X").list("l", &["a", "b c"]).finish()
        );
        assert_eq!(k("p", "x", "y").len(), 64);
    }
}
