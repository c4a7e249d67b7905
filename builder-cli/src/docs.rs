//! `ocibuild completions SHELL` and `ocibuild man`: shell completions and man pages,
//! generated from the command line definition, so they always match `--help`.

use anyhow::{Context, Result};
use clap::{Args, Command};
use clap_complete::Shell;
use std::io::Write;
use std::path::PathBuf;

/// The `completions` command line.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

/// The `man` command line.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write ocibuild.1 and one page per subcommand (ocibuild-build.1, ...) into this
    /// directory instead of printing ocibuild.1.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Prints the completion script of `command` for the shell asked for. The script is
/// made in memory first: `clap_complete` panics when its writer fails (a closed pipe).
pub fn completions(args: CompletionsArgs, mut command: Command) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ocibuild", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")
}

/// Prints the man page of `command`, or writes its pages into `--out-dir`.
pub fn man(args: ManArgs, command: Command) -> Result<()> {
    let command = with_aliases_in_help(command);
    match args.out_dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("writing the man page"),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))
        }
    }
}

/// `command` with the visible aliases of each flag (`-t`, `--tag` of `--destination`)
/// added to its help text, as `--help` shows them: man pages do not list aliases.
fn with_aliases_in_help(command: Command) -> Command {
    command
        .mut_args(|arg| {
            let shorts = arg.get_visible_short_aliases().unwrap_or_default();
            let longs = arg.get_visible_aliases().unwrap_or_default();
            let aliases: Vec<String> = shorts
                .iter()
                .map(|c| format!("-{c}"))
                .chain(longs.iter().map(|l| format!("--{l}")))
                .collect();
            if aliases.is_empty() {
                return arg;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [aliases: {}]", aliases.join(", ")))
        })
        .mut_subcommands(with_aliases_in_help)
}

#[cfg(test)]
mod tests {
    //! The documentation in `docs/` and the README against the command line definition:
    //! every flag is documented, and every relative link leads to a file and heading that
    //! exist.

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The repository's root (the workspace this crate is in).
    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// `--NAME` of every flag and visible alias of `command` and its subcommands, hidden
    /// ones included (they are accepted, so they are documented).
    fn long_flags(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            let names = arg
                .get_long()
                .into_iter()
                .chain(arg.get_visible_aliases().unwrap_or_default());
            into.extend(names.map(|name| format!("--{name}")));
        }
        for sub in command.get_subcommands() {
            long_flags(sub, into);
        }
    }

    /// Whether `text` names `flag` as a whole (`--cache` is not named by `--cache-dir`).
    fn mentions(text: &str, flag: &str) -> bool {
        let part_of_name = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
        text.match_indices(flag).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + flag.len()..].chars().next();
            !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
        })
    }

    #[test]
    fn every_flag_is_in_the_flags_reference() {
        let reference = std::fs::read_to_string(repo().join("docs/flags.md")).unwrap();
        let mut flags = BTreeSet::new();
        long_flags(&crate::command(), &mut flags);
        flags.remove("--help");
        flags.remove("--version");
        assert!(flags.contains("--destination") && flags.contains("--max-size"));
        let missing: Vec<&String> = flags
            .iter()
            .filter(|flag| !mentions(&reference, flag))
            .collect();
        assert!(missing.is_empty(), "not in docs/flags.md: {missing:?}");
    }

    /// GitHub's anchor of a Markdown heading's text: lower case, spaces to `-`, only
    /// letters, digits, `-` and `_` kept.
    fn anchor(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The anchors of the headings of a Markdown text (outside code blocks).
    fn anchors(text: &str) -> BTreeSet<String> {
        let mut in_code = false;
        let mut found = BTreeSet::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            } else if !in_code && line.starts_with('#') {
                found.insert(anchor(line.trim_start_matches('#')));
            }
        }
        found
    }

    /// The targets of the relative links `](target)` of a Markdown text.
    fn relative_links(text: &str) -> Vec<&str> {
        text.split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
            .filter(|target| !target.contains("://"))
            .collect()
    }

    #[test]
    fn links_between_the_readme_and_docs_lead_somewhere() {
        let mut pages = vec![repo().join("README.md")];
        for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
            pages.push(entry.unwrap().path());
        }
        assert!(pages.len() > 5, "{pages:?}");
        let mut broken = Vec::new();
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            for link in relative_links(&text) {
                let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
                let target = match file {
                    "" => page.clone(),
                    file => page.parent().unwrap().join(file),
                };
                let ok = match std::fs::read_to_string(&target) {
                    Ok(_) if fragment.is_empty() => true,
                    Ok(target_text) => anchors(&target_text).contains(fragment),
                    Err(_) => false,
                };
                if !ok {
                    broken.push(format!("{}: {link}", page.display()));
                }
            }
        }
        assert!(broken.is_empty(), "broken links: {broken:#?}");
    }
}
