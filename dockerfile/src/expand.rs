//! Word expansion: Docker's shell-word rules for the instructions it expands at build
//! time (`ADD`, `COPY`, `ENV`, `EXPOSE`, `FROM`, `LABEL`, `STOPSIGNAL`, `USER`, `VOLUME`,
//! `WORKDIR`, and their flags).
//!
//! The rules, as documented in the Dockerfile reference and modelled on BuildKit's
//! behaviour (this is an independent implementation):
//!
//! * `$NAME` and `${NAME}` are replaced by the variable's value; unset variables expand
//!   to the empty string. A name is `[A-Za-z_][A-Za-z0-9_]*`, or a run of digits.
//! * `${NAME:-word}` gives `word` when `NAME` is unset or empty, `${NAME-word}` only when
//!   unset; `${NAME:+word}` gives `word` when `NAME` is set and non-empty, `${NAME+word}`
//!   when set; `${NAME:?message}` / `${NAME?message}` fail with `NAME: message`. The
//!   `word` is itself expanded, and only when it is used.
//! * Single quotes make everything literal up to the closing quote; the quotes are
//!   removed.
//! * Double quotes are removed; expansion happens inside them, and the escape character
//!   only escapes `"`, `$` and itself (anything else keeps the escape character).
//! * Outside quotes, the escape character makes the next character literal and is
//!   removed. The escape character is `\` by default, or `` ` `` with `# escape=``
//!   (then a backslash is an ordinary character, as in Windows paths).
//! * A `$` not followed by a name or `{` is literal.

use std::collections::{BTreeMap, HashMap};

/// How deep `${NAME:-${...}}` substitutions may nest. Deeper text is refused with an
/// error instead of running out of stack.
pub const MAX_NESTING: usize = 64;
use std::hash::BuildHasher;

/// A source of variable values for [`expand_word`] and [`expand_words`].
///
/// Implemented for `BTreeMap<String, String>`, `HashMap<String, String>` and any closure
/// `Fn(&str) -> Option<String>`.
pub trait Vars {
    /// The value of variable `name`, or `None` when it is not set.
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<S: BuildHasher> Vars for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// An expansion failure: a malformed substitution, an unterminated quote, or a
/// `${NAME:?message}` whose variable is unset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// What went wrong, e.g. `VAR: must be set` or `missing '}' in substitution: ${VAR`.
    pub message: String,
}

impl ExpandError {
    fn new(message: impl Into<String>) -> Self {
        ExpandError {
            message: message.into(),
        }
    }
}

/// Expands one word: removes quotes, applies escapes and substitutes variables, without
/// splitting the result into several words.
///
/// `escape` is the Dockerfile's escape character (`\` or `` ` ``).
pub fn expand_word(word: &str, vars: &dyn Vars, escape: char) -> Result<String, ExpandError> {
    let mut ex = Expander::new(word, vars, escape);
    let mut out = Out::new(false);
    ex.unquoted(&mut out, None, true)?;
    Ok(out.cur)
}

/// Expands `text` like [`expand_word`], then splits it into words on unquoted whitespace
/// (whitespace coming from an unquoted variable's value splits too). Used for the shell
/// forms of `EXPOSE` and `VOLUME`. A quoted empty string (`""`) yields an empty word; an
/// unquoted empty expansion yields none.
pub fn expand_words(text: &str, vars: &dyn Vars, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut ex = Expander::new(text, vars, escape);
    let mut out = Out::new(true);
    ex.unquoted(&mut out, None, true)?;
    out.finish_word();
    Ok(out.words)
}

/// The expansion result being built.
struct Out {
    /// Finished words (split mode only).
    words: Vec<String>,
    /// The word being built.
    cur: String,
    /// Whether the current word exists even if empty (something, maybe `""`, was seen).
    started: bool,
    /// Whether unquoted whitespace separates words.
    split: bool,
}

impl Out {
    fn new(split: bool) -> Self {
        Out {
            words: Vec::new(),
            cur: String::new(),
            started: false,
            split,
        }
    }

    fn push(&mut self, c: char) {
        self.cur.push(c);
        self.started = true;
    }

    fn push_str(&mut self, s: &str) {
        self.cur.push_str(s);
        self.started = true;
    }

    /// Text from an unquoted expansion: split into words in split mode.
    fn push_field(&mut self, s: &str) {
        if !self.split {
            self.cur.push_str(s);
            return;
        }
        for c in s.chars() {
            if c.is_whitespace() {
                self.finish_word();
            } else {
                self.push(c);
            }
        }
    }

    fn finish_word(&mut self) {
        if self.started {
            self.words.push(std::mem::take(&mut self.cur));
            self.started = false;
        }
    }
}

struct Expander<'a> {
    chars: Vec<char>,
    pos: usize,
    /// How many `${...}` enclose the current position.
    depth: usize,
    vars: &'a dyn Vars,
    escape: char,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Expander<'a> {
    fn new(text: &str, vars: &'a dyn Vars, escape: char) -> Self {
        Expander {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
            vars,
            escape,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn lookup(&self, name: &str, eval: bool) -> Option<String> {
        if eval {
            self.vars.get(name)
        } else {
            None
        }
    }

    /// Processes unquoted text up to `stop` (an unquoted `}` closing a `${...}` word) or
    /// the end. With `eval` false the text is only scanned (for words that are not used).
    fn unquoted(
        &mut self,
        out: &mut Out,
        stop: Option<char>,
        eval: bool,
    ) -> Result<(), ExpandError> {
        loop {
            let Some(c) = self.next() else {
                return match stop {
                    Some(_) => Err(ExpandError::new("missing '}' in substitution")),
                    None => Ok(()),
                };
            };
            if Some(c) == stop {
                return Ok(());
            }
            if c == self.escape {
                // Escape: the next character is literal; a trailing escape is dropped.
                if let Some(n) = self.next() {
                    out.push(n);
                }
            } else if c == '\'' {
                let start = self.pos;
                loop {
                    match self.next() {
                        Some('\'') => break,
                        Some(_) => {}
                        None => {
                            return Err(ExpandError::new(
                                "unexpected end of text while looking for matching single-quote",
                            ))
                        }
                    }
                }
                let s: String = self.chars[start..self.pos - 1].iter().collect();
                out.push_str(&s);
            } else if c == '"' {
                let mut s = String::new();
                self.double_quoted(&mut s, '"', eval)?;
                out.push_str(&s);
            } else if c == '$' {
                match self.dollar(false, eval)? {
                    Some(v) => out.push_field(&v),
                    None => out.push('$'),
                }
            } else if c.is_whitespace() && out.split {
                out.finish_word();
            } else {
                out.push(c);
            }
        }
    }

    /// Processes double-quoted text (the opening quote consumed) up to `term`: `"` for a
    /// quoted string, `}` for a `${...}` word inside double quotes.
    fn double_quoted(
        &mut self,
        out: &mut String,
        term: char,
        eval: bool,
    ) -> Result<(), ExpandError> {
        loop {
            let Some(c) = self.next() else {
                return Err(if term == '"' {
                    ExpandError::new(
                        "unexpected end of text while looking for matching double-quote",
                    )
                } else {
                    ExpandError::new("missing '}' in substitution")
                });
            };
            if c == term {
                return Ok(());
            }
            if c == self.escape {
                match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                }
            } else if c == '$' {
                match self.dollar(true, eval)? {
                    Some(v) => out.push_str(&v),
                    None => out.push('$'),
                }
            } else {
                out.push(c);
            }
        }
    }

    /// Reads a variable name at the current position: `[A-Za-z_][A-Za-z0-9_]*` or digits.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if is_name_start(c) => {
                while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
                    name.push(c);
                    self.pos += 1;
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while let Some(c) = self.peek().filter(|c| c.is_ascii_digit()) {
                    name.push(c);
                    self.pos += 1;
                }
            }
            _ => {}
        }
        name
    }

    /// Handles the text after a `$`. `None` means the `$` is literal.
    fn dollar(&mut self, quoted: bool, eval: bool) -> Result<Option<String>, ExpandError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                if self.depth >= MAX_NESTING {
                    return Err(ExpandError::new(format!(
                        "substitutions nested more than {MAX_NESTING} deep"
                    )));
                }
                self.depth += 1;
                let value = self.braced(quoted, eval);
                self.depth -= 1;
                value.map(Some)
            }
            Some(c) if is_name_start(c) || c.is_ascii_digit() => {
                let name = self.name();
                Ok(Some(self.lookup(&name, eval).unwrap_or_default()))
            }
            _ => Ok(None),
        }
    }

    /// Handles `${...}` after the `{`.
    fn braced(&mut self, quoted: bool, eval: bool) -> Result<String, ExpandError> {
        let start = self.pos;
        let name = self.name();
        if name.is_empty() {
            self.next();
            return Err(self.bad_substitution(start));
        }
        let value = self.lookup(&name, eval);
        let (colon, op) = match self.next() {
            Some('}') => return Ok(value.unwrap_or_default()),
            Some(':') => match self.next() {
                Some(op @ ('-' | '+' | '?')) => (true, op),
                Some(_) => return Err(self.bad_substitution(start)),
                None => return Err(self.missing_brace(start)),
            },
            Some(op @ ('-' | '+' | '?')) => (false, op),
            Some(_) => return Err(self.bad_substitution(start)),
            None => return Err(self.missing_brace(start)),
        };
        let set = value.is_some();
        let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
        let use_word = match op {
            '+' => set && (!colon || non_empty),
            _ => !set || (colon && !non_empty),
        };
        let word = self.brace_word(quoted, eval && use_word).map_err(|e| {
            if e.message.starts_with("missing '}'") {
                self.missing_brace(start)
            } else {
                e
            }
        })?;
        if !eval {
            return Ok(String::new());
        }
        match op {
            '?' if use_word => {
                let message = if word.is_empty() {
                    "parameter not set or null"
                } else {
                    &word
                };
                Err(ExpandError::new(format!("{name}: {message}")))
            }
            '?' => Ok(value.unwrap_or_default()),
            _ if use_word => Ok(word),
            _ => Ok(value.unwrap_or_default()),
        }
    }

    /// Reads and (when `eval`) expands the word of `${NAME<op>word}` up to the closing `}`.
    fn brace_word(&mut self, quoted: bool, eval: bool) -> Result<String, ExpandError> {
        if quoted {
            let mut s = String::new();
            self.double_quoted(&mut s, '}', eval)?;
            Ok(s)
        } else {
            let mut out = Out::new(false);
            self.unquoted(&mut out, Some('}'), eval)?;
            Ok(out.cur)
        }
    }

    fn text_from(&self, start: usize) -> String {
        let end = self.pos.min(self.chars.len());
        self.chars[start..end].iter().collect()
    }

    fn bad_substitution(&self, start: usize) -> ExpandError {
        ExpandError::new(format!("bad substitution: ${{{}", self.text_from(start)))
    }

    fn missing_brace(&self, start: usize) -> ExpandError {
        ExpandError::new(format!(
            "missing '}}' in substitution: ${{{}",
            self.text_from(start)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [
            ("HOME", "/root"),
            ("EMPTY", ""),
            ("NAME", "world"),
            ("SPACED", "a b  c"),
            ("B", "bee"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn ex(word: &str) -> String {
        expand_word(word, &vars(), '\\').unwrap()
    }

    fn err(word: &str) -> String {
        expand_word(word, &vars(), '\\').unwrap_err().message
    }

    fn words(text: &str) -> Vec<String> {
        expand_words(text, &vars(), '\\').unwrap()
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(ex("/usr/local/bin"), "/usr/local/bin");
        assert_eq!(ex(""), "");
    }

    #[test]
    fn dollar_name_and_braced_name_expand() {
        assert_eq!(ex("$HOME/bin"), "/root/bin");
        assert_eq!(ex("${HOME}bin"), "/rootbin");
        assert_eq!(ex("$NAME.txt"), "world.txt");
        assert_eq!(ex("x${NAME}y$NAME"), "xworldyworld");
    }

    #[test]
    fn unset_variable_is_empty() {
        assert_eq!(ex("a${NOPE}b$NOPE"), "ab");
    }

    #[test]
    fn dollar_before_non_name_is_literal() {
        assert_eq!(ex("$"), "$");
        assert_eq!(ex("a$ b"), "a$ b");
        assert_eq!(ex("$-x"), "$-x");
        assert_eq!(ex("100$%"), "100$%");
    }

    #[test]
    fn digits_form_a_name() {
        assert_eq!(ex("$1x"), "x");
        let v: BTreeMap<String, String> = [("12".to_string(), "n".to_string())].into();
        assert_eq!(expand_word("$12-${12}", &v, '\\').unwrap(), "n-n");
    }

    #[test]
    fn colon_minus_default_when_unset_or_empty() {
        assert_eq!(ex("${NOPE:-def}"), "def");
        assert_eq!(ex("${EMPTY:-def}"), "def");
        assert_eq!(ex("${NAME:-def}"), "world");
    }

    #[test]
    fn minus_default_only_when_unset() {
        assert_eq!(ex("${NOPE-def}"), "def");
        assert_eq!(ex("${EMPTY-def}"), "");
        assert_eq!(ex("${NAME-def}"), "world");
    }

    #[test]
    fn colon_plus_alternative_when_set_and_non_empty() {
        assert_eq!(ex("${NAME:+alt}"), "alt");
        assert_eq!(ex("${EMPTY:+alt}"), "");
        assert_eq!(ex("${NOPE:+alt}"), "");
    }

    #[test]
    fn plus_alternative_when_set() {
        assert_eq!(ex("${NAME+alt}"), "alt");
        assert_eq!(ex("${EMPTY+alt}"), "alt");
        assert_eq!(ex("${NOPE+alt}"), "");
    }

    #[test]
    fn colon_question_fails_when_unset_or_empty() {
        assert_eq!(err("${NOPE:?must be set}"), "NOPE: must be set");
        assert_eq!(err("${EMPTY:?must be set}"), "EMPTY: must be set");
        assert_eq!(ex("${NAME:?must be set}"), "world");
        assert_eq!(err("${NOPE:?}"), "NOPE: parameter not set or null");
    }

    #[test]
    fn question_fails_only_when_unset() {
        assert_eq!(err("${NOPE?gone}"), "NOPE: gone");
        assert_eq!(ex("${EMPTY?gone}"), "");
        assert_eq!(ex("${NAME?gone}"), "world");
    }

    #[test]
    fn modifier_word_is_expanded() {
        assert_eq!(ex("${NOPE:-$HOME/x}"), "/root/x");
        assert_eq!(ex("${NOPE:-${B}}"), "bee");
        assert_eq!(ex("${NOPE:-${ALSO_NOPE:-deep}}"), "deep");
        assert_eq!(ex("${NAME:+<$NAME>}"), "<world>");
        assert_eq!(err("${NOPE:?$NAME is missing}"), "NOPE: world is missing");
    }

    #[test]
    fn unused_modifier_word_is_not_evaluated() {
        assert_eq!(ex("${NAME:-${X:?boom}}"), "world");
        assert_eq!(ex("${NOPE:+${X:?boom}}"), "");
    }

    #[test]
    fn modifier_word_handles_quotes_and_escaped_brace() {
        assert_eq!(ex("${NOPE:-'a}b'}"), "a}b");
        assert_eq!(ex("${NOPE:-a\\}b}"), "a}b");
        assert_eq!(ex("${NOPE:-\"x y\"}"), "x y");
    }

    #[test]
    fn single_quotes_are_literal_and_removed() {
        assert_eq!(ex("'$HOME'"), "$HOME");
        assert_eq!(ex("'a \\ b'"), "a \\ b");
        assert_eq!(ex("x'${NAME}'y"), "x${NAME}y");
    }

    #[test]
    fn double_quotes_expand_and_are_removed() {
        assert_eq!(ex("\"$HOME dir\""), "/root dir");
        assert_eq!(ex("\"it's\""), "it's");
        assert_eq!(ex("\"${NOPE:-a b}\""), "a b");
    }

    #[test]
    fn escape_inside_double_quotes_only_escapes_quote_dollar_escape() {
        assert_eq!(ex(r#""a\"b""#), "a\"b");
        assert_eq!(ex(r#""\$HOME""#), "$HOME");
        assert_eq!(ex(r#""a\\b""#), "a\\b");
        assert_eq!(ex(r#""a\nb""#), "a\\nb");
    }

    #[test]
    fn escape_outside_quotes_makes_next_char_literal() {
        assert_eq!(ex("\\$HOME"), "$HOME");
        assert_eq!(ex("a\\ b"), "a b");
        assert_eq!(ex("\\'x\\'"), "'x'");
        assert_eq!(ex("a\\\\b"), "a\\b");
        assert_eq!(ex("\\${NAME}"), "${NAME}");
    }

    #[test]
    fn trailing_escape_is_dropped() {
        assert_eq!(ex("abc\\"), "abc");
    }

    #[test]
    fn backtick_escape_keeps_backslashes_literal() {
        let v = vars();
        assert_eq!(
            expand_word(r"C:\Users\$NAME", &v, '`').unwrap(),
            r"C:\Users\world"
        );
        assert_eq!(expand_word("`$NAME", &v, '`').unwrap(), "$NAME");
        assert_eq!(expand_word("\"a`\"b\"", &v, '`').unwrap(), "a\"b");
        assert_eq!(expand_word(r"\$NAME", &v, '`').unwrap(), r"\world");
    }

    #[test]
    fn expand_word_does_not_split() {
        assert_eq!(ex("$SPACED x"), "a b  c x");
    }

    #[test]
    fn expand_words_splits_on_unquoted_whitespace() {
        assert_eq!(words("  80/tcp   443 "), vec!["80/tcp", "443"]);
        assert_eq!(words("\"a b\" 'c d' e\\ f"), vec!["a b", "c d", "e f"]);
        assert_eq!(words("$SPACED"), vec!["a", "b", "c"]);
        assert_eq!(words("\"$SPACED\""), vec!["a b  c"]);
    }

    #[test]
    fn expand_words_empty_values() {
        assert_eq!(words("$EMPTY x"), vec!["x"]);
        assert_eq!(words("\"\" x"), vec!["", "x"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn unterminated_brace_is_an_error() {
        assert_eq!(err("${HOME"), "missing '}' in substitution: ${HOME");
        assert!(err("${NOPE:-abc").starts_with("missing '}' in substitution"));
        assert!(err("${").starts_with("bad substitution"));
    }

    #[test]
    fn bad_substitution_is_an_error() {
        assert_eq!(err("${}"), "bad substitution: ${}");
        assert_eq!(err("${A B}"), "bad substitution: ${A ");
        assert!(err("${A:=x}").starts_with("bad substitution"));
        assert!(err("${-x}").starts_with("bad substitution"));
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert!(err("'abc").contains("single-quote"));
        assert!(err("\"abc").contains("double-quote"));
    }

    #[test]
    fn hash_map_and_closure_are_vars() {
        let mut h = HashMap::new();
        h.insert("X".to_string(), "1".to_string());
        assert_eq!(expand_word("$X", &h, '\\').unwrap(), "1");
        let f = |n: &str| (n == "Y").then(|| "2".to_string());
        assert_eq!(expand_word("$Y$X", &f, '\\').unwrap(), "2");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nested = |n: usize| format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
        assert_eq!(ex(&nested(MAX_NESTING)), "x");
        assert_eq!(
            err(&nested(MAX_NESTING + 1)),
            format!("substitutions nested more than {MAX_NESTING} deep")
        );
        let deep = nested(20_000);
        assert!(expand_word(&deep, &vars(), '\\').is_err());
        assert!(expand_words(&format!("\"{deep}\""), &vars(), '\\').is_err());
        let unused = format!("${{NAME:-{deep}}}");
        assert!(expand_word(&unused, &vars(), '\\').is_err());
    }

    #[test]
    fn long_words_expand_in_linear_time() {
        let word = "$NAME${NOPE:-'q'}\"$HOME\"".repeat(50_000);
        let value = ex(&word);
        assert_eq!(value.len(), 50_000 * "worldq/root".len());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "$",
            "${",
            "${:",
            "${A:",
            "${A:-",
            "\\",
            "\"\\",
            "'",
            "\"$",
            "${A-${",
            "é$é${é}",
        ] {
            let _ = expand_word(s, &vars(), '\\');
            let _ = expand_words(s, &vars(), '`');
        }
    }
}
