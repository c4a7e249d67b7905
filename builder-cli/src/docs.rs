//! `ocibuild completions SHELL` and `ocibuild man`: shell completions and man pages,
//! generated from the command line definition, so they always match `--help`.

use anyhow::{Context, Result};
use clap::{Args, Command};
use clap_complete::Shell;
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

/// Prints the completion script of `command` for the shell asked for.
pub fn completions(args: CompletionsArgs, mut command: Command) -> Result<()> {
    clap_complete::generate(args.shell, &mut command, "ocibuild", &mut std::io::stdout());
    Ok(())
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
