//! Matches paths against `.dockerignore` rules: the text before the first NUL byte is the
//! file, each line after it a path. Never a panic, a stack overflow or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocibuild_dockerfile::pathmatch::{IgnoreRules, PathPattern};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (rules_text, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    let rules = IgnoreRules::parse(rules_text);
    let lines: Vec<&str> = rules_text.lines().collect();
    let flags = IgnoreRules::from_patterns(&lines);
    for path in paths.lines().take(16) {
        let path = Path::new(path);
        let _ = rules.is_excluded(path);
        let _ = flags.is_excluded(path);
        for line in lines.iter().take(4) {
            let pattern = PathPattern::new(line);
            let _ = pattern.matches(path);
            let _ = pattern.matches_or_parent(path);
        }
    }
});
