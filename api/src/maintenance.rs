//! `tollbook replay` and `tollbook verify`: offline maintenance of the read models.

use std::path::PathBuf;
use std::sync::Arc;

use commands::{EventStore, StoreSpec};
use indicatif::{ProgressBar, ProgressStyle};

use crate::DataArgs;
use crate::server::VIEWS_DIR;

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The event log of a data directory and the directory its read models are saved in.
pub async fn open(args: &DataArgs) -> Result<(Arc<dyn EventStore>, PathBuf), Box<dyn std::error::Error>> {
    let spec = crate::store_spec(&args.data_dir, &args.store);
    if let StoreSpec::Sled(events) = &spec
        && !events.exists()
    {
        return Err(format!("no event log in {}", events.display()).into());
    }
    let store = spec.open().await?;
    Ok((store, args.data_dir.join(VIEWS_DIR)))
}

fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub async fn replay(args: DataArgs) -> CliResult {
    let (store, views) = open(&args).await?;
    let bar = progress_bar("replaying");
    let started = std::time::Instant::now();
    let report = projections::replay(&*store, &views, |_, position, head| {
        bar.set_length(head);
        bar.set_position(position);
    })
    .await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replayed {} events up to position {} in {:.2} s ({:.0} events/s)",
        report.events,
        report.position,
        seconds,
        report.events as f64 / seconds.max(1e-9)
    );
    let stages = report.stages;
    let ms = |micros: u64| micros / 1000;
    println!(
        "stages: read and decode {} ms (wall); apply {} ms (CPU); build the models {} ms (wall); save the snapshot {} ms (wall)",
        ms(stages.read_micros),
        ms(stages.apply_micros),
        ms(stages.build_micros),
        ms(stages.save_micros)
    );
    Ok(())
}

pub async fn verify(args: DataArgs) -> CliResult {
    let (store, views) = open(&args).await?;
    let bar = progress_bar("verifying");
    let report = projections::verify(store.clone(), &views, |_, position, head| {
        bar.set_length(head);
        bar.set_position(position);
    })
    .await?;
    bar.finish_and_clear();
    for (book, verdict) in &report.books {
        match verdict {
            Ok(events) => println!("book {book}: chain intact, {events} events"),
            Err(broken) => println!(
                "book {book}: CHAIN BROKEN at version {} (position {}): {}",
                broken.version, broken.position, broken.reason
            ),
        }
    }
    for account in &report.differing_accounts {
        println!("account {account}: read models differ from a fresh replay");
    }
    println!(
        "checked {} books and {} accounts at position {}",
        report.books.len(),
        report.accounts_checked,
        report.position
    );
    if report.is_clean() { Ok(()) } else { Err("verification found differences".into()) }
}
