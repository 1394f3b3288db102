//! The `troupe` command. Parses arguments, runs the command, maps the outcome to an exit code:
//! 0 success, 1 validation or simulation failure, 2 bad usage, config or unreadable input.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    let outcome = cli::run(args);
    // After the command's async runtime is gone: spans close while it winds its tasks down.
    cli::logging::flush_traces();
    match outcome {
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
