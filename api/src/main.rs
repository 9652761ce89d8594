//! `tollbook`: the ledger's one binary, a command line over the `tollbook` library.

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use tollbook::{DataArgs, ServeArgs, dataset, import, invoicing, maintenance, plans_cli, server};

// glibc malloc showed up as a fifth of the write path's CPU time; mimalloc halves it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollbook",
    version,
    about = "An event-sourced balance ledger for VoIP operators, ISPs and their resellers"
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Serve the HTTP API.
    // Boxed: its many flags make it far larger than the other commands' arguments.
    Serve(Box<ServeArgs>),
    /// Rebuild every read model from the event log (with the server stopped).
    Replay(DataArgs),
    /// Check every book's hash chain and compare the read models with a fresh replay;
    /// exits non-zero on any difference (with the server stopped).
    Verify(DataArgs),
    /// Import a CSV file of CDRs or payments into a stopped server's data directory:
    /// resumable (a rerun skips what is in), with a progress bar and a summary.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Compare an outside file with the ledger and report the differences (exit 1 when
    /// there are any).
    #[command(subcommand)]
    Reconcile(import::ReconcileCommand),
    /// Write the standard benchmark data set into a new data directory: partners with
    /// their customers, a year of calls, payments, fund moves, charges, adjustments and
    /// reversals, all decided by the ledger; the same seed gives the same ledger.
    Dataset(dataset::DatasetArgs),
    /// Recurring-charge plans and subscriptions in a stopped server's data directory (the
    /// server charges the fees as they fall due).
    #[command(subcommand)]
    Plans(plans_cli::PlansCommand),
    /// Invoices: run those of a billing period on a stopped server's data directory.
    #[command(subcommand)]
    Invoices(invoicing::cli::InvoicesCommand),
}

fn main() -> std::process::ExitCode {
    eventlog::memory::tune_process();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLBOOK_LOG").unwrap_or_else(|_| "info".into());
    // Logs go to stderr: stdout carries only what a script may read (the bound address).
    // Colours only for a person at a terminal: in a file or a log collector, escape codes
    // are noise that breaks grep.
    let colours = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    // One JSON object a line, for log collectors; text for people.
    if std::env::var("TOLLBOOK_LOG_FORMAT").is_ok_and(|format| format == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            CliCommand::Serve(args) => server::serve(*args).await,
            CliCommand::Replay(args) => maintenance::replay(args).await,
            CliCommand::Verify(args) => maintenance::verify(args).await,
            CliCommand::Import(command) => import::import(command).await,
            CliCommand::Reconcile(command) => import::reconcile(command).await,
            CliCommand::Dataset(args) => dataset::dataset(args).await,
            CliCommand::Plans(command) => plans_cli::plans(command).await,
            CliCommand::Invoices(command) => invoicing::cli::invoices(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tollbook: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
