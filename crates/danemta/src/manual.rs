//! `danemta manpages` and `danemta completions`: the manual pages and shell completion
//! scripts, generated from the same clap definitions that parse the command line, so they
//! never disagree with `--help`.
//!
//! Pages are in section 8 (system administration: the daemon and its tools): danemta(8), and
//! one page per subcommand, nested ones included (`danemta-tlsa-generate(8)`), each named as
//! `man` finds it (`danemta-serve.8`). The package installs them (scripts/package.sh).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::Cli;
use crate::error::CliError;

/// The manual section of every page.
const SECTION: &str = "8";

/// Where the packaged daemon finds its files (the main page's FILES section).
const FILES: &str = r#".SH FILES
.TP
.I /etc/danemta/danemta.toml
The configuration read by \fBserve\fR, \fBqueue\fR and \fBsendmail\fR when no \fB\-\-config\fR is given.
.TP
.I /var/spool/danemta
The queue: spool files, the SQLite database, the self\-signed certificate, the daemon's \fIwake.sock\fR.
.SH ENVIRONMENT
.TP
.B DANEMTA_LOG
What is logged, in tracing's env\-filter syntax (e.g. \fBdebug\fR).
.TP
.B DANEMTA_LOG_FORMAT
\fBjson\fR: the daemon logs one JSON object per line.
"#;

/// Options of `danemta manpages`.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write the pages to (danemta.8, danemta-serve.8, …); created if missing.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Options of `danemta completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

/// Writes every page into the directory and lists the files written on standard output.
pub fn manpages(args: ManpagesArgs) -> Result<ExitCode, CliError> {
    let write_error = |path: &Path, source: std::io::Error| CliError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&args.dir).map_err(|e| write_error(&args.dir, e))?;
    for (name, page) in pages().map_err(|e| write_error(&args.dir, e))? {
        let path = args.dir.join(name);
        std::fs::write(&path, page).map_err(|e| write_error(&path, e))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the completion script for the shell.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "danemta", &mut out);
    std::io::stdout()
        .write_all(&out)
        .map_err(|source| CliError::Write {
            path: "standard output".into(),
            source,
        })?;
    Ok(ExitCode::SUCCESS)
}

/// Every page as (file name, roff text): the main page first, then the subcommands'.
fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut names = Vec::new();
    collect_names(&root, &mut names);
    let mut pages = Vec::new();
    render_tree(&root, &names, &mut pages)?;
    Ok(pages)
}

/// The page names of the command and its visible subcommands, depth first.
fn collect_names(cmd: &Command, names: &mut Vec<String>) {
    names.push(page_name(cmd));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_names(sub, names);
    }
}

/// `danemta`, `danemta-serve`, `danemta-tlsa-generate`: the names clap gives built commands.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_string()
}

fn render_tree(
    cmd: &Command,
    all: &[String],
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let name = page_name(cmd);
    let top = name == "danemta";
    let mut cmd = cmd.clone();
    if top {
        // The NAME line reads "danemta - …": the about text without its own "danemta: ".
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        cmd = cmd.about(
            about
                .trim_start_matches("danemta: ")
                .trim_end_matches('.')
                .to_string(),
        );
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("danemta manual")
        .source(format!("danemta {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)?;
    if top {
        page.extend_from_slice(FILES.as_bytes());
    }
    // SEE ALSO: the main page lists every other page; a subcommand's page names the main
    // page, its parent and its own subcommands.
    let related: Vec<&String> = if top {
        all.iter().filter(|n| **n != name).collect()
    } else {
        all.iter()
            .filter(|n| {
                **n != name
                    && (*n == "danemta"
                        || name.starts_with(&format!("{n}-"))
                        || n.strip_prefix(&format!("{name}-"))
                            .is_some_and(|rest| !rest.contains('-')))
            })
            .collect()
    };
    page.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let refs: Vec<String> = related
        .iter()
        .map(|n| format!(".BR {} ({SECTION})", n.replace('-', "\\-")))
        .collect();
    page.extend_from_slice(refs.join(",\n").as_bytes());
    page.push(b'\n');
    pages.push((format!("{name}.{SECTION}"), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_tree(sub, all, pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(pages: &[(String, Vec<u8>)], name: &str) -> String {
        let (_, text) = pages
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no page {name}"));
        String::from_utf8(text.clone()).unwrap()
    }

    #[test]
    fn a_page_for_every_visible_subcommand_in_section_8() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "danemta.8",
            "danemta-serve.8",
            "danemta-queue.8",
            "danemta-queue-list.8",
            "danemta-sendmail.8",
            "danemta-check.8",
            "danemta-send.8",
            "danemta-doctor.8",
            "danemta-tlsa.8",
            "danemta-tlsa-generate.8",
            "danemta-tlsa-rollover.8",
            "danemta-report.8",
            "danemta-completions.8",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        // Hidden commands (manpages itself) get no page.
        assert!(!names.iter().any(|n| n.contains("manpages")), "{names:?}");
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            assert!(text.contains(".TH "), "{name}: no title");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(".TH") && l.contains(" 8 ")),
                "{name}: not section 8"
            );
        }
    }

    #[test]
    fn pages_carry_the_help_text_files_and_cross_references() {
        let pages = pages().unwrap();
        let main = page(&pages, "danemta.8");
        assert!(main.contains("/etc/danemta/danemta.toml"));
        assert!(main.contains(".BR danemta\\-serve (8)"));
        let serve = page(&pages, "danemta-serve.8");
        assert!(
            serve.contains("check\\-config"),
            "serve's options are on its page"
        );
        assert!(serve.contains(".BR danemta (8)"));
        let tlsa = page(&pages, "danemta-tlsa.8");
        assert!(tlsa.contains(".BR danemta\\-tlsa\\-generate (8)"));
        assert!(
            !tlsa.contains(".BR danemta\\-queue (8)"),
            "unrelated pages are not listed"
        );
        let generate = page(&pages, "danemta-tlsa-generate.8");
        assert!(generate.contains(".BR danemta\\-tlsa (8)"));
    }

    #[test]
    fn completions_know_the_subcommands() {
        let mut cmd = Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut cmd, "danemta", &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(
            script.contains("serve") && script.contains("rollover"),
            "{script}"
        );
    }
}
