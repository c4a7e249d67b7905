//! Expands any word: the first byte picks the escape character (odd: backtick), the rest
//! is the word. Expansion must succeed or fail, never panic, overflow the stack or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocibuild_dockerfile::expand::{expand_word, expand_words};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(rest) else {
        return;
    };
    let escape = if first % 2 == 1 { '`' } else { '\\' };
    let vars: BTreeMap<String, String> = [("A", "a b"), ("EMPTY", ""), ("X", "${A}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = expand_word(word, &vars, escape);
    let _ = expand_words(word, &vars, escape);
});
