//! The "a similar argument exists" tip of a misspelt flag. clap ranks flags by Jaro
//! similarity, under which two swapped letters of a short flag (`--tga`) look more like
//! `--target` than like `--tag`. Here the tip names the flag at the smallest edit distance
//! (a swap of neighbouring letters being one edit) when that is closer than clap's pick.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Command;
use std::ffi::OsString;

/// The most edits a misspelling may be from the flag it is taken for.
const MAX_EDITS: usize = 2;

/// `err` with a closer suggestion, when it is an unknown flag of `command` (parsed from
/// `argv`) and a flag is closer to it than the one clap suggests.
pub fn closer_flag(mut err: clap::Error, mut command: Command, argv: &[OsString]) -> clap::Error {
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(given)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(given) = given.strip_prefix("--").map(str::to_string) else {
        return err;
    };
    command.build();
    let command = subcommand_of(&mut command, argv);
    let Some((best, edits)) = closest_flag(&given, command) else {
        return err;
    };
    let clap_edits = match err.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(flag)) => distance(&given, flag.trim_start_matches("--")),
        _ => usize::MAX,
    };
    if edits < clap_edits {
        err.insert(
            ContextKind::SuggestedArg,
            ContextValue::String(format!("--{best}")),
        );
        err.insert(
            ContextKind::Usage,
            ContextValue::StyledStr(command.render_usage()),
        );
    }
    err
}

/// The (sub)command the leading subcommand names of `argv` (after the program) lead to.
fn subcommand_of<'a>(command: &'a mut Command, argv: &[OsString]) -> &'a mut Command {
    let mut current = command;
    for arg in argv.iter().skip(1) {
        let Some(name) = arg.to_str() else { break };
        if current.find_subcommand(name).is_none() {
            break;
        }
        current = current
            .find_subcommand_mut(name)
            .expect("the subcommand was just found");
    }
    current
}

/// The long flag (or visible alias) of `command` fewest edits from `given`, with its
/// distance, if one is at most [`MAX_EDITS`] away (and not all of `given` replaced).
fn closest_flag(given: &str, command: &Command) -> Option<(String, usize)> {
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .flat_map(|a| a.get_long_and_visible_aliases().unwrap_or_default())
        .map(|flag| (flag.to_string(), distance(given, flag)))
        .filter(|(_, edits)| *edits <= MAX_EDITS && *edits < given.chars().count())
        .min_by_key(|(_, edits)| *edits)
}

/// The optimal string alignment distance of `a` and `b`: insertions, deletions,
/// substitutions and swaps of neighbouring characters, one edit each.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_of_neighbouring_letters_is_one_edit() {
        assert_eq!(distance("tga", "tag"), 1);
        assert_eq!(distance("tga", "target"), 4);
        assert_eq!(distance("tg", "tag"), 1);
        assert_eq!(distance("targe", "target"), 1);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("same", "same"), 0);
    }

    /// The tip clap's error for `argv` gives after [`closer_flag`].
    fn tip(argv: &[&str]) -> Option<String> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let err = crate::command().try_get_matches_from(&argv).unwrap_err();
        match closer_flag(err, crate::command(), &argv).get(ContextKind::SuggestedArg) {
            Some(ContextValue::String(flag)) => Some(flag.clone()),
            _ => None,
        }
    }

    #[test]
    fn misspelt_flags_get_the_closest_flag_of_their_subcommand() {
        assert_eq!(tip(&["ocibuild", "build", "--tga", "x"]).unwrap(), "--tag");
        assert_eq!(tip(&["ocibuild", "build", ".", "--tg"]).unwrap(), "--tag");
        assert_eq!(tip(&["ocibuild", "build", "--targte"]).unwrap(), "--target");
        assert_eq!(
            tip(&["ocibuild", "build", "--dockrfile"]).unwrap(),
            "--dockerfile"
        );
        let push = tip(&["ocibuild", "executor", "push", "p", "--destinaton", "x"]);
        assert_eq!(push.unwrap(), "--destination");
        assert_eq!(tip(&["ocibuild", "build", "--qqqqqq"]), None);
    }
}
