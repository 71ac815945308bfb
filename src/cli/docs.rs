//! `completions` and `man`: what a shell and `man` read, generated from the command-line
//! definition itself (clap_complete, clap_mangen), so they never drift from `--help`.

use std::io::Write;
use std::process::ExitCode;

use roff::{Roff, bold, italic, roman};

/// Prints `shell`'s completion script for `command` on stdout. Exit 1 if stdout is gone.
pub(crate) fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> ExitCode {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    print(&script)
}

/// Prints `command`'s man page (roff, section 1) on stdout: one page for the whole command,
/// every subcommand in it (clap_mangen alone would point at a page per subcommand, which is
/// not shipped). Exit 1 if stdout is gone.
pub(crate) fn man(command: clap::Command) -> ExitCode {
    let mut page = Vec::new();
    match render(&command, &mut page) {
        Ok(()) => print(&page),
        Err(e) => {
            eprintln!("kwikid-gateway: cannot render the man page: {e}");
            ExitCode::from(1)
        }
    }
}

fn render(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    subcommands(&mut roff, command);
    environment(&mut roff);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "The README (configuration, operation, runbooks) and openapi.yaml (the caller API) in the source repository.",
    )]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// `kwikid-gateway NAME <ARG>` and what it does, for every subcommand but `help`.
fn subcommands(roff: &mut Roff, command: &clap::Command) {
    roff.control("SH", ["SUBCOMMANDS"]);
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let mut usage = format!("{} {}", command.get_name(), sub.get_name());
        for arg in sub.get_positionals() {
            let values: Vec<_> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect();
            usage.push(' ');
            usage.push_str(&values.join("|"));
        }
        roff.control("TP", []);
        roff.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
    }
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in [
        (
            "KWIKID_GATEWAY_CONFIG",
            "The config file when --config is not given.",
        ),
        (
            "KWIKID_API_TOKEN",
            "The KwikID API token, unless the config's [token] names another variable or a file.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(name)]);
        roff.text([roman(what)]);
    }
}

fn print(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
