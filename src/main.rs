//! The `troupe` command. Parses arguments, runs the command, maps the outcome to an exit code:
//! 0 success, 1 validation or simulation failure, 2 bad usage, config or unreadable input.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(cli::exit_code_for(&err))
        }
    }
}
