//! Reference docs generated from the code: `docs/CLI.md` from clap's
//! definitions, `docs/openapi.json` from the API's. Tests fail when the
//! committed files are stale (`legacygpu docs cli > docs/CLI.md` and
//! `legacygpu docs openapi > docs/openapi.json` refresh them).

use std::fmt::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cli;

pub fn run(what: &str) -> anyhow::Result<ExitCode> {
    match what {
        "cli" => print!("{}", cli_markdown()),
        _ => println!("{}", coordinator::openapi_json()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Every command's long help, in a stable width, environment values hidden.
pub fn cli_markdown() -> String {
    let mut out = String::from(
        "# The `legacygpu` command line\n\n\
         Generated from the code by `legacygpu docs cli`; a test fails when this file is stale.\n\n\
         Exit codes: 0 success; 1 an error (one line on stderr: unreachable coordinator, \
         refused request, unknown task…); 2 bad usage; 3 a task ended without a result \
         (failed, cancelled, timed out); 4 a task has not finished within `--timeout`.\n\n\
         Connection settings come from flags, then the environment (`LEGACYGPU_*`, `API_KEYS`), \
         then `~/.config/legacygpu/cli.json` (`{\"api_url\", \"api_key\", \"coordinator\", \"token\"}`).\n",
    );
    let mut root = Cli::command().term_width(100);
    root.build();
    walk(&root, "legacygpu", &mut out);
    out
}

fn walk(cmd: &clap::Command, path: &str, out: &mut String) {
    if cmd.is_hide_set() {
        return;
    }
    let mut shown = cmd.clone().term_width(100).mut_args(|a| a.hide_env_values(true));
    let help = shown.render_long_help().to_string();
    let _ = write!(out, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end());
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}
