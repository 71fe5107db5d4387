//! `cifar-sweep`: hyperparameter sweeps over CIFAR-10 CNNs. This file only sets the process
//! up and dispatches: the flags are in `cli.rs`, each command in `commands.rs`, the work in
//! the `sweep` library.

mod cli;
mod commands;
mod jobs;
mod signals;

use clap::Parser;
use cli::{Cli, Cmd};

fn main() {
    init_logging();
    let exit = match Cli::parse().cmd {
        Cmd::Run(args) => commands::run(args),
        Cmd::Plan(args) => commands::plan(args),
        Cmd::Report(args) => commands::report(args),
        Cmd::Plot(args) => commands::plot(args),
        Cmd::Compare(args) => commands::compare(args),
        Cmd::Show(args) => commands::show(args),
        Cmd::Status(args) => commands::status(args),
        Cmd::Train(args) => commands::train(args),
        Cmd::Slurm(args) => commands::slurm(args),
        Cmd::Data { cmd } => commands::data(cmd),
    }
    .unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        sweep::exit::of(e.as_ref())
    });
    std::process::exit(exit.code());
}

/// Logs go to stderr, at the level RUST_LOG sets (info by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: not in log files, CI or pipes.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false)
        .init();
}
