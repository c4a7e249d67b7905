//! Path patterns as `.dockerignore` and COPY/ADD sources use them: `*`, `?`, `[a-z]`,
//! `[^a]`, `\` escapes within one path component, and `**` for any number of components.
//! `.dockerignore` files use these patterns with `!` exceptions, the last match winning, and
//! a pattern that matches a directory also matches everything below it.

use std::path::{Component, Path};

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    parts: Vec<String>,
}

impl PathPattern {
    /// Compiles `pattern`: cleaned like a path (`a//b/./c` is `a/b/c`), with a leading `/`
    /// dropped because patterns are always relative to the context root.
    pub fn new(pattern: &str) -> PathPattern {
        let mut parts: Vec<String> = Vec::new();
        for part in pattern.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p.to_string()),
            }
        }
        PathPattern { parts }
    }

    /// True when the pattern is a plain path, with no wildcard character.
    pub fn is_literal(&self) -> bool {
        self.parts
            .iter()
            .all(|p| !p.contains(['*', '?', '[', '\\']))
    }

    /// True when `path` (relative, `/`-separated components) matches the whole pattern.
    pub fn matches(&self, path: &Path) -> bool {
        let names = components(path);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match_parts(&self.parts, &names)
    }

    /// True when the pattern matches nothing (it was empty, `.` or `/`).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// True when `path` or one of its parent directories matches.
    pub fn matches_or_parent(&self, path: &Path) -> bool {
        let names = components(path);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        (1..=names.len()).any(|n| match_parts(&self.parts, &names[..n]))
    }
}

/// True when one path component contains a wildcard (`*`, `?`, `[`) or an escape (`\\`).
pub fn has_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '[', '\\'])
}

/// The normal components of a relative path, as strings (lossy for non-UTF-8 names).
pub fn components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Matches path components against pattern parts, `**` standing for any number of
/// components. Greedy with one backtracking point, so the time is at most the product of
/// the two lengths (never exponential) and nothing recurses.
fn match_parts(pattern: &[String], names: &[&str]) -> bool {
    let tokens: Vec<Option<&str>> = pattern
        .iter()
        .map(|p| (p != "**").then_some(p.as_str()))
        .collect();
    wildcard_match(&tokens, names, match_component)
}

/// Matches `items` against `tokens`, where `None` is a star (any run of items, maybe
/// empty) and `Some(t)` matches one item when `one(t, item)` says so.
fn wildcard_match<T: Copy, I: Copy>(
    tokens: &[Option<T>],
    items: &[I],
    one: impl Fn(T, I) -> bool,
) -> bool {
    let (mut t, mut i) = (0, 0);
    // The last star seen and the first item it does not cover yet.
    let mut star: Option<(usize, usize)> = None;
    while i < items.len() {
        match tokens.get(t) {
            Some(None) => {
                star = Some((t, i));
                t += 1;
                continue;
            }
            Some(Some(tok)) if one(*tok, items[i]) => {
                t += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, si)) => {
                star = Some((st, si + 1));
                t = st + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(Option::is_none)
}

/// Matches one path component against a glob (`*`, `?`, classes, `\` escapes).
pub fn match_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let tokens = glob_tokens(&p);
    let n: Vec<char> = name.chars().collect();
    let refs: Vec<Option<&Token>> = tokens.iter().map(|t| t.as_ref()).collect();
    wildcard_match(&refs, &n, |tok, c| tok.matches(c))
}

/// One character's worth of a component glob.
enum Token {
    /// `?`: any character.
    Any,
    /// A character class: the set and whether it is negated.
    Class(CharSet, bool),
    /// A literal character (maybe escaped).
    Literal(char),
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Any => true,
            Token::Class(set, negated) => set.contains(&c) != *negated,
            Token::Literal(l) => *l == c,
        }
    }
}

/// The tokens of a component glob; `None` is a `*`. A `[` that does not start a valid
/// class and a trailing `\` are literal.
fn glob_tokens(p: &[char]) -> Vec<Option<Token>> {
    let mut tokens = Vec::new();
    // A class needs a `]` after its first character: without one, `[` is literal (and
    // a long run of `[` costs no quadratic search).
    let last_close = p.iter().rposition(|&c| c == ']');
    let mut i = 0;
    while i < p.len() {
        let closable = last_close.is_some_and(|l| l >= i + 2);
        let (token, used) = match p[i] {
            '*' => (None, 1),
            '?' => (Some(Token::Any), 1),
            '[' if !closable => (Some(Token::Literal('[')), 1),
            '[' => match class(&p[i + 1..]) {
                Some((set, negated, used)) => (Some(Token::Class(set, negated)), 1 + used),
                None => (Some(Token::Literal('[')), 1),
            },
            '\\' if i + 1 < p.len() => (Some(Token::Literal(p[i + 1])), 2),
            c => (Some(Token::Literal(c)), 1),
        };
        tokens.push(token);
        i += used;
    }
    tokens
}

/// Parses a character class after `[`; returns the set of chars it matches (ranges expanded
/// lazily into a small checker), whether it is negated and how many pattern chars it used.
fn class(p: &[char]) -> Option<(CharSet, bool, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('^') | Some('!'));
    if negated {
        i += 1;
    }
    let mut set = CharSet(Vec::new());
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == ']' && !first {
            return Some((set, negated, i + 1));
        }
        first = false;
        let lo = if c == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            c
        };
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            set.0.push((lo, p[i + 2]));
            i += 3;
        } else {
            set.0.push((lo, lo));
            i += 1;
        }
    }
    None
}

struct CharSet(Vec<(char, char)>);

impl CharSet {
    fn contains(&self, c: &char) -> bool {
        self.0.iter().any(|(lo, hi)| lo <= c && c <= hi)
    }
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<(PathPattern, bool)>,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text: one pattern per line, `#` comments, `!` exceptions.
    pub fn parse(text: &str) -> IgnoreRules {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let compiled = PathPattern::new(pattern);
                (!compiled.parts.is_empty()).then_some((compiled, exception))
            })
            .collect();
        IgnoreRules { rules }
    }

    /// Rules from separate patterns, each written like one `.dockerignore` line (a leading
    /// `!` makes an exception), as `COPY --exclude=PATTERN` gives them. Unlike file lines,
    /// nothing is a comment and only surrounding whitespace is trimmed.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> IgnoreRules {
        let rules = patterns
            .iter()
            .map(|p| p.as_ref().trim())
            .filter_map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let compiled = PathPattern::new(pattern);
                (!compiled.parts.is_empty()).then_some((compiled, exception))
            })
            .collect();
        IgnoreRules { rules }
    }

    /// True when there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when `path` (relative to the context root) is excluded from the context.
    pub fn is_excluded(&self, path: &Path) -> bool {
        let mut excluded = false;
        for (pattern, exception) in &self.rules {
            if pattern.matches_or_parent(path) {
                excluded = !exception;
            }
        }
        excluded
    }

    /// True when some `!` exception could re-include something below an excluded directory.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, exception)| *exception)
    }
}

/// `path` made absolute (relative to `/`) without `.`, `..` and repeated slashes:
/// `a/./b/../c/` → `/a/c`.
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(rules: &str, path: &str) -> bool {
        IgnoreRules::parse(rules).is_excluded(Path::new(path))
    }

    #[test]
    fn component_globs() {
        assert!(match_component("*.txt", "a.txt"));
        assert!(!match_component("*.txt", "a.txt.bak"));
        assert!(match_component("a?c", "abc"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[^a-c]x", "bx"));
        assert!(match_component("\\*", "*"));
        assert!(!match_component("\\*", "a"));
        assert!(match_component("[", "["));
    }

    #[test]
    fn double_star_spans_any_depth() {
        let p = PathPattern::new("**/*.go");
        assert!(p.matches(Path::new("a.go")));
        assert!(p.matches(Path::new("x/y/a.go")));
        assert!(!p.matches(Path::new("x/y/a.rs")));
        let p = PathPattern::new("src/**/test");
        assert!(p.matches(Path::new("src/test")));
        assert!(p.matches(Path::new("src/a/b/test")));
    }

    #[test]
    fn star_does_not_cross_directories() {
        assert!(!PathPattern::new("*.txt").matches(Path::new("dir/a.txt")));
        assert!(PathPattern::new("*/a.txt").matches(Path::new("dir/a.txt")));
    }

    #[test]
    fn dockerignore_excludes_directories_with_their_contents() {
        assert!(excluded("node_modules", "node_modules/x/y.js"));
        assert!(excluded("/build/", "build/out"));
        assert!(!excluded("node_modules", "src/node_modules"));
        assert!(excluded("**/node_modules", "src/node_modules/a"));
    }

    #[test]
    fn dockerignore_last_match_wins_and_exceptions_reinclude() {
        let rules = "# comment\n*.md\n!README.md\n";
        assert!(excluded(rules, "CHANGES.md"));
        assert!(!excluded(rules, "README.md"));
        assert!(!excluded(rules, "main.rs"));
        let rules = "!README.md\n*.md\n";
        assert!(excluded(rules, "README.md"));
    }

    #[test]
    fn exclude_flags_are_rules_without_comments() {
        let rules = IgnoreRules::from_patterns(&["*.txt", "#x", "!keep.txt", " "]);
        assert!(rules.is_excluded(Path::new("a.txt")));
        assert!(!rules.is_excluded(Path::new("keep.txt")));
        assert!(rules.is_excluded(Path::new("#x/y")));
        assert!(IgnoreRules::from_patterns::<&str>(&[]).is_empty());
        assert!(has_wildcard("a*") && has_wildcard("[ab]") && !has_wildcard("plain"));
    }

    #[test]
    fn many_stars_and_double_stars_match_in_polynomial_time() {
        let name = "a".repeat(5000);
        assert!(!match_component(
            &"*a".repeat(2000).replace("**", "*"),
            &(name.clone() + "b")
        ));
        assert!(match_component(&format!("{}*", "*a".repeat(100)), &name));
        let path: String = vec!["a"; 2000].join("/");
        let pattern = format!("{}/b", vec!["**"; 2000].join("/a/"));
        assert!(!PathPattern::new(&pattern).matches(Path::new(&path)));
        assert!(PathPattern::new(&"**/".repeat(3000)).matches(Path::new(&path)));
    }

    #[test]
    fn very_long_patterns_do_not_overflow_the_stack() {
        let long = "?".repeat(1_000_000);
        assert!(match_component(&long, &"x".repeat(1_000_000)));
        assert!(!match_component(&"[".repeat(200_000), "["));
        assert!(match_component(&format!("{}]", "[".repeat(100_000)), "["));
    }

    #[test]
    fn dockerignore_cleans_patterns() {
        assert!(excluded("./a//b/", "a/b/c"));
        assert!(excluded("a/../b", "b"));
        assert!(!excluded("\n   \n# x\n", "x"));
    }
}
