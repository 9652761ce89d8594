//! `tollbook`: the ledger's one binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod auth;
mod body;
mod error;
mod maintenance;
mod query;
mod routes;
mod server;
mod write;

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
    Serve(ServeArgs),
    /// Rebuild every read model from the event log (with the server stopped).
    Replay(DataArgs),
    /// Check every book's hash chain and compare the read models with a fresh replay;
    /// exits non-zero on any difference (with the server stopped).
    Verify(DataArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// The data directory (event log and read models).
    #[arg(long = "data", env = "TOLLBOOK_DATA", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The event store, as for `serve`.
    #[arg(long = "store", env = "TOLLBOOK_STORE")]
    pub store: Option<commands::StoreSpec>,
}

/// The event store that `--store` names, or the sled log inside the data directory.
pub fn store_spec(data_dir: &std::path::Path, store: &Option<commands::StoreSpec>) -> commands::StoreSpec {
    store.clone().unwrap_or_else(|| commands::StoreSpec::Sled(data_dir.join(server::EVENTS_DIR)))
}

#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The data directory (event log and read models).
    #[arg(long = "data", env = "TOLLBOOK_DATA", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The address to listen on.
    #[arg(long = "listen", env = "TOLLBOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The event store: `sled:DIR` (default: `sled:<data>/events`) or a KurrentDB
    /// connection string such as `kurrentdb://host:2113?tls=false` (needs the
    /// `kurrentdb` feature). Read models stay in `<data>/views` either way.
    #[arg(long = "store", env = "TOLLBOOK_STORE")]
    pub store: Option<commands::StoreSpec>,
    /// The operator's admin key (a bearer credential with every right).
    #[arg(long = "admin-key", env = "TOLLBOOK_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOLLBOOK_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            CliCommand::Serve(args) => server::serve(args).await,
            CliCommand::Replay(args) => maintenance::replay(args).await,
            CliCommand::Verify(args) => maintenance::verify(args).await,
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
