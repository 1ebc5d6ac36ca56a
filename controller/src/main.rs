//! `drove`: the controller (`drove serve`) and the admin CLI.

use clap::Parser;
use drove_controller::cli;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    drove_worker::logging::init(cli.log_format, cli.command.log_target());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drove: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drove: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
