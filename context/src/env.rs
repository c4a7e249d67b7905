//! The environment variables the context fetchers read, captured once so that a build (or a
//! test) can also give them explicitly.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The environment [`crate::prepare_context`] reads: `GIT_PULL_METHOD`, the AWS, Google
/// Cloud and Azure variables and `HOME` (for `~/.aws` and `~/.config/gcloud`).
///
/// `Debug` prints the variable names only, never their values (many are secrets).
#[derive(Default, Clone)]
pub struct ContextEnv {
    vars: BTreeMap<String, String>,
}

impl ContextEnv {
    /// The variables of the process environment (those with UTF-8 names and values).
    pub fn from_env() -> ContextEnv {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// This environment with `name` set to `value`.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> ContextEnv {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// This environment without `name`.
    pub fn without(mut self, name: &str) -> ContextEnv {
        self.vars.remove(name);
        self
    }

    /// The value of `name`; an empty value counts as unset.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of the first of `names` that is set, with its name.
    pub(crate) fn first<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names
            .iter()
            .find_map(|name| self.var(name).map(|value| (*name, value)))
    }

    /// True when `name` is set to a true value (`true`, `1`, ... in any case).
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.var(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "t" | "true"))
    }

    /// `$HOME/rel`, when `HOME` is set.
    pub(crate) fn home_path(&self, rel: &str) -> Option<PathBuf> {
        self.var("HOME").map(|home| PathBuf::from(home).join(rel))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ContextEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> ContextEnv {
        ContextEnv {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl fmt::Debug for ContextEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextEnv")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_unset_and_debug_hides_values() {
        let env = ContextEnv::default()
            .with("AWS_SECRET_ACCESS_KEY", "s3cret")
            .with("EMPTY", "")
            .with("FLAG", "True");
        assert_eq!(env.var("AWS_SECRET_ACCESS_KEY"), Some("s3cret"));
        assert_eq!(env.var("EMPTY"), None);
        assert_eq!(env.first(&["EMPTY", "FLAG"]), Some(("FLAG", "True")));
        assert!(env.flag("FLAG") && !env.flag("EMPTY"));
        let shown = format!("{env:?}");
        assert!(
            shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(env.without("FLAG").var("FLAG"), None);
    }
}
