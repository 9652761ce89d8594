//! `tollbook invoices run`: an invoice run on a stopped server's data directory, as
//! `POST /api/v1/invoice-runs` does it on a running one.

use std::sync::Arc;
use std::time::Duration;

use commands::Ledger;
use domain::{BookId, CommandMeta, Timestamp};
use projections::ReadModels;

use super::RunScope;
use crate::DataArgs;

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Recorded as the actor of the invoices a command-line run issues.
const CLI_ACTOR: &str = "system:invoices";

#[derive(clap::Subcommand)]
pub enum InvoicesCommand {
    /// Invoice every account with movement in a month that has ended, once: accounts
    /// already invoiced for the month are skipped, so a run cut short is completed by
    /// running it again. Prints one line per invoice issued, then a summary.
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The month, `YYYY-MM`.
    #[arg(long)]
    period: String,
    /// Only this issuer's accounts: `operator` or a partner's number. All by default.
    #[arg(long)]
    issuer: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

pub async fn invoices(command: InvoicesCommand) -> CliResult {
    match command {
        InvoicesCommand::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> CliResult {
    let now = Timestamp::from_micros(chrono::Utc::now().timestamp_micros());
    let (from, to) = super::ended_month(&args.period, now).map_err(|e| e.message.to_string())?;
    let (store, views) = crate::maintenance::open(&args.data).await?;
    let models = ReadModels::open(&views, store.clone())?;
    let projector = projections::spawn_projector(models.clone(), store.clone());
    let ledger = Arc::new(Ledger::open(store.clone()).await?);
    let scope = match args.issuer.as_deref() {
        None => RunScope::All,
        Some("operator") => RunScope::Issuer(BookId::OPERATOR),
        Some(number) => {
            let partner = ledger
                .account(number)
                .filter(|a| a.kind == domain::AccountKind::Partner)
                .ok_or_else(|| format!("--issuer: no partner `{number}`"))?;
            RunScope::Issuer(BookId::of_partner(partner.id))
        }
    };
    // A data directory whose read models lag far behind (a fresh `tollbook dataset`, a
    // crash) is projected first, however long that takes: the statements must be whole.
    let head = store.head().await?.saturating_sub(1);
    while models.position() < head {
        if projector.is_finished() {
            return Err("the read models stopped following the log; see the log above".into());
        }
        let _ = models.wait_for(head, Duration::from_secs(1)).await;
    }
    let meta = CommandMeta { occurred_at: to, recorded_at: now, actor: CLI_ACTOR.to_owned(), idempotency: None };
    let started = std::time::Instant::now();
    let outcome = super::run(&ledger, &models, scope, from, to, meta).await.map_err(|e| e.message.to_string());
    let elapsed = started.elapsed();
    ledger.shutdown().await;
    let run = outcome?;
    for (_, _, number) in &run.invoices {
        println!("{number}");
    }
    for (account, error) in &run.failed {
        eprintln!("tollbook: account {account}: {error}");
    }
    eprintln!(
        "{}: {} invoices issued, {} accounts already invoiced, {} failed, in {:.2} s",
        domain::invoice::month_name(from),
        run.issued,
        run.already,
        run.failed.len(),
        elapsed.as_secs_f64()
    );
    // The read models catch up with the invoices before they are saved, so that the
    // server starts with nothing to project.
    let last = store.head().await?.saturating_sub(1);
    let _ = models.wait_for(last, Duration::from_secs(30)).await;
    projector.stop().await?;
    if !run.failed.is_empty() {
        return Err(format!("{} accounts could not be invoiced; run again", run.failed.len()).into());
    }
    Ok(())
}
