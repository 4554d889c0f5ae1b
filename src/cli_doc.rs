//! `docs/cli.md`: every command's `--help`, generated from the clap definitions of
//! [`crate::cli`] so the reference cannot drift from the code. `gl cli-reference` prints it
//! (`just docs` writes the file) and a unit test fails when the committed file is stale.

use clap::CommandFactory;

/// The Markdown reference: one section per command and subcommand, its long help verbatim.
pub fn markdown() -> String {
    let mut cmd = deterministic(crate::cli::Cli::command());
    cmd.build();
    let mut out = String::from(
        "# `gl` command reference\n\nGenerated from `src/cli.rs` by `gl cli-reference` \
         (`just docs`); a test fails when it is stale, so edit the doc comments there, not \
         this file.\n",
    );
    section(&mut out, &mut cmd, "gl");
    out
}

/// Help that does not depend on the environment it is rendered in (`GL_THREADS=1` set in a
/// shell would otherwise show in the help of `--threads`).
fn deterministic(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(deterministic)
}

fn section(out: &mut String, cmd: &mut clap::Command, path: &str) {
    let help = cmd.render_long_help().to_string();
    out.push_str(&format!(
        "\n## `{path}`\n\n```text\n{}\n```\n",
        help.trim_end()
    ));
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let path = format!("{path} {}", sub.get_name());
        section(out, sub, &path);
    }
}

#[cfg(test)]
mod tests {
    /// The committed `docs/cli.md` is what the code generates (`just docs` rewrites it).
    #[test]
    fn docs_cli_md_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == super::markdown(),
            "{} is stale: run `just docs`",
            path.display()
        );
    }
}
