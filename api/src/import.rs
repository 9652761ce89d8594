//! `tollbook import cdrs|payments FILE.csv` and `tollbook reconcile cdrs FILE.csv`:
//! bulk work on a stopped server's data directory. An import charges row by row (a bad
//! row rejects only itself, into `FILE.rejects.csv`), is resumable (a rerun finds what is
//! in: CDR ids are duplicates, payment ids are idempotency keys), and leaves the read
//! models caught up with what it wrote.

use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::ingest::{self, CsvTable};
use commands::{CommandError, CommandOutcome, EventStore, Ledger};
use domain::{CommandMeta, DomainError, Timestamp};
use indicatif::{ProgressBar, ProgressStyle};
use projections::ReadModels;

use crate::DataArgs;
use crate::csv_out::{Column, csv_line};

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Rows charged at once: enough to keep the book writers' batches full.
const IMPORT_CHUNK_ROWS: usize = 16_384;

#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// CDRs in the CSV format of `POST /api/v1/cdrs`: rated with the tariffs in force at
    /// each call's start and charged.
    Cdrs(ImportArgs),
    /// Payments with the columns `id,account,amount,occurred_at,method,reference`; `id`
    /// is the payment's idempotency key.
    Payments(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The CSV file, with a header row.
    pub file: PathBuf,
    /// Where to write the rejected rows (line, id, error, field, message); by default
    /// next to the file, as FILE.rejects.csv.
    #[arg(long = "rejects")]
    pub rejects: Option<PathBuf>,
    /// CDRs only: the file's format: `tollbook` (the columns of a CDR upload),
    /// `freeswitch-json` (mod_json_cdr documents, one a line), `freeswitch-csv`
    /// (mod_cdr_csv's default template), `asterisk-csv` (Master.csv), `kamailio-dbtext` or
    /// `kamailio-csv` (acc dialog CDRs). A switch's CDR is charged to the account holding
    /// its account code, caller id or trunk (`/api/v1/accounts/{number}/switch-identifiers`).
    #[arg(long = "format", default_value = "tollbook")]
    pub format: String,
    /// CDRs only: the switch's offset from UTC for times written without a zone
    /// (`+01:00`); UTC when neither this nor `--time-zone` is given. With `--mapping`,
    /// replaces the mapping's time zone.
    #[arg(long = "utc-offset")]
    pub utc_offset: Option<String>,
    /// A switch's format or `--mapping`: the zone of times written without an offset (with
    /// `--mapping`, replacing the mapping's): an IANA time zone (`Europe/Berlin`, the offset
    /// in force at each time) or an offset (`+01:00`). UTC when absent.
    #[arg(long = "time-zone", conflicts_with = "utc_offset")]
    pub time_zone: Option<String>,
    /// CDRs only: read the file through this column mapping (`/api/v1/cdr-mappings`): the
    /// operator's of that name, or a ready-made one such as `asterisk-cdr-custom`.
    #[arg(long = "mapping", conflicts_with = "format")]
    pub mapping: Option<String>,
    /// With `--mapping`: the partner (account number) whose mapping it is.
    #[arg(long = "partner", requires = "mapping")]
    pub partner: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Subcommand)]
pub enum ReconcileCommand {
    /// Compares an outside CDR file (the columns of a CDR upload; `cost` and
    /// `partner_cost` are compared when present) with the ledger's CDRs of a period.
    Cdrs(ReconcileArgs),
}

#[derive(clap::Args)]
pub struct ReconcileArgs {
    pub file: PathBuf,
    /// The period's start (inclusive) by call start: RFC 3339 or YYYY-MM-DD.
    #[arg(long = "from")]
    pub from: String,
    /// The period's end (exclusive).
    #[arg(long = "to")]
    pub to: String,
    /// `human` (a summary and the differences), `json` (the whole report) or `csv` (one
    /// line per difference).
    #[arg(long = "format", default_value = "human")]
    pub format: ReportFormat,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Human,
    Json,
    Csv,
}

/// What an import did, row by row.
#[derive(Default)]
struct Tally {
    rows: u64,
    charged: u64,
    duplicate: u64,
    rejected: u64,
}

/// The ledger and read models of a data directory, with a projector following the log
/// while the import writes, so that projecting overlaps charging.
pub(crate) struct Workspace {
    store: Arc<dyn EventStore>,
    models: ReadModels,
    projector: projections::Projector,
    pub(crate) ledger: Ledger,
}

impl Workspace {
    pub(crate) async fn open(data: &DataArgs) -> Result<Self, Box<dyn std::error::Error>> {
        let (store, views) = crate::maintenance::open(data).await?;
        let models = ReadModels::open(&views, store.clone())?;
        let projector = projections::spawn_projector(models.clone(), store.clone());
        let ledger = Ledger::open(store.clone()).await?;
        Ok(Workspace { store, models, projector, ledger })
    }

    /// Waits until the read models hold everything written, then stops.
    pub(crate) async fn close(self) -> CliResult {
        self.ledger.shutdown().await;
        let last = self.store.head().await?.saturating_sub(1);
        while self.models.position() < last {
            if self.projector.is_finished() {
                return Err("the read models stopped following the log; see the log above".into());
            }
            let _ = self.models.wait_for(last, Duration::from_secs(1)).await;
        }
        // Stopping saves the models' snapshot: the server starts with nothing to project.
        self.projector.stop().await?;
        Ok(())
    }
}

fn bytes_bar(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn now() -> Timestamp {
    Timestamp::from_micros(chrono::Utc::now().timestamp_micros())
}

/// The rejects file, created on the first rejected row only.
struct Rejects {
    path: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

/// line, id, error, field, message.
const REJECTS_COLUMNS: [Column; 5] = [Column::Number, Column::Text, Column::Text, Column::Text, Column::Text];

impl Rejects {
    fn new(file: &Path, chosen: Option<PathBuf>) -> Self {
        let path = chosen.unwrap_or_else(|| {
            let mut name = file.as_os_str().to_owned();
            name.push(".rejects.csv");
            PathBuf::from(name)
        });
        Rejects { path, writer: None }
    }

    fn add(&mut self, line: u64, id: Option<&str>, error: &str, field: Option<&str>, message: &str) -> CliResult {
        if self.writer.is_none() {
            let mut writer = std::io::BufWriter::new(std::fs::File::create(&self.path)?);
            writer.write_all(csv_line(&[Column::Text; 5], &["line", "id", "error", "field", "message"]).as_bytes())?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("just created");
        let record = [&line.to_string(), id.unwrap_or(""), error, field.unwrap_or(""), message];
        writer.write_all(csv_line(&REJECTS_COLUMNS, &record).as_bytes())?;
        Ok(())
    }

    fn finish(self) -> Result<Option<PathBuf>, Box<dyn std::error::Error>> {
        match self.writer {
            Some(mut writer) => {
                writer.flush()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

/// A refusal that belongs to its row; anything else (storage, overload) stops the import.
fn row_refusal(error: CommandError) -> Result<(&'static str, Option<&'static str>, String), CommandError> {
    match error {
        CommandError::Domain(domain) => Ok((domain.code(), domain.field(), domain.to_string())),
        CommandError::UnknownAccount(number) => {
            Ok(("account_not_found", Some("account"), format!("account `{number}` not found")))
        }
        other => Err(other),
    }
}

fn domain_refusal(error: &DomainError) -> (&'static str, Option<&'static str>, String) {
    (error.code(), error.field(), error.to_string())
}

pub async fn import(command: ImportCommand) -> CliResult {
    let (args, cdrs) = match command {
        ImportCommand::Cdrs(args) => (args, true),
        ImportCommand::Payments(args) => (args, false),
    };
    let format = domain::switch_cdr::SwitchFormat::parse(&args.format).ok_or_else(|| {
        let names: Vec<&str> = domain::switch_cdr::SwitchFormat::ALL.iter().map(|f| f.as_str()).collect();
        format!("--format: `{}` is not one of {}", args.format, names.join(", "))
    })?;
    if !cdrs
        && (format != domain::switch_cdr::SwitchFormat::Tollbook || args.utc_offset.is_some() || args.mapping.is_some())
    {
        return Err("--format, --mapping and --utc-offset are for CDR files".into());
    }
    // tollbook's own CSV carries its times' offsets: a zone given for it would be ignored,
    // and an operator who gives one believes it is not.
    if args.time_zone.is_some() && args.mapping.is_none() && format == domain::switch_cdr::SwitchFormat::Tollbook {
        return Err("--time-zone is for a switch's --format or a --mapping: tollbook's CSV takes RFC 3339 times, each with its offset".into());
    }
    let given_offset = args
        .utc_offset
        .as_deref()
        .map(domain::switch_cdr::UtcOffset::parse)
        .transpose()
        .map_err(|e| format!("--utc-offset: {e}"))?;
    let given_zone = match &args.time_zone {
        Some(zone) => {
            Some(domain::local_time::LocalZone::parse("time_zone", zone).map_err(|e| format!("--time-zone: {e}"))?)
        }
        None => given_offset.map(Into::into),
    };
    let file = std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let length = file.metadata()?.len();
    let input = BufReader::with_capacity(1 << 20, file);
    let workspace = Workspace::open(&args.data).await?;
    let mut rejects = Rejects::new(&args.file, args.rejects.clone());
    let bar = bytes_bar(length, if cdrs { "importing CDRs" } else { "importing payments" });
    let started = Instant::now();
    let actor =
        format!("import:{}", args.file.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
    let mut tally = Tally::default();
    // The file is parsed (and CDRs validated) on a thread of its own, a chunk ahead of
    // the chunk being charged.
    let (chunks, mut parsed) = tokio::sync::mpsc::channel::<Chunk>(2);
    let reader = if let Some(name) = &args.mapping {
        let mapping = saved_mapping(&args.data, &workspace, name, args.partner.as_deref())?;
        let table = domain::switch_cdr::SwitchTable::open_mapped(input, mapping, given_zone)
            .map_err(|e| format!("{}: {e}", args.file.display()))?;
        std::thread::spawn(move || read_switch_chunks(table, chunks))
    } else if format != domain::switch_cdr::SwitchFormat::Tollbook {
        let table = domain::switch_cdr::SwitchTable::open(input, format, given_zone.unwrap_or_default())
            .map_err(|e| format!("{}: {e}", args.file.display()))?;
        std::thread::spawn(move || read_switch_chunks(table, chunks))
    } else if cdrs {
        let table = ingest::cdr_table(input).map_err(|e| format!("{}: {e}", args.file.display()))?;
        std::thread::spawn(move || read_chunks(table, ingest::next_cdr, Row::Cdr, chunks))
    } else {
        let table = ingest::payment_table(input).map_err(|e| format!("{}: {e}", args.file.display()))?;
        std::thread::spawn(move || read_chunks(table, ingest::next_payment, Row::Payment, chunks))
    };
    // A chunk's CDRs are queued to the writers while the chunk before is made durable,
    // so that the writers do not wait for the importer between chunks; the chunks are
    // tallied (and their rejects written) in file order.
    let mut previous: Option<(Sent, Charging)> = None;
    while let Some(chunk) = parsed.recv().await {
        let mut sent = Sent {
            lines: Vec::with_capacity(chunk.rows.len()),
            ids: Vec::with_capacity(chunk.rows.len()),
            unreadable: Vec::new(),
            bytes_read: chunk.bytes_read,
        };
        let (mut cdr_rows, mut payment_rows) = (Vec::new(), Vec::new());
        for (line, id, row) in chunk.rows {
            match row {
                Err(error) => sent.unreadable.push((line, id, error)),
                Ok(Row::Cdr(cdr)) => {
                    sent.lines.push(line);
                    sent.ids.push(cdr.id.clone());
                    cdr_rows.push(cdr);
                }
                // A switch's CDR is tied to its account here, where the ledger's
                // identifiers are; one that no account holds is the row's refusal.
                Ok(Row::Native(native)) => match workspace.ledger.native_input(native) {
                    Ok(cdr) => {
                        sent.lines.push(line);
                        sent.ids.push(cdr.id.clone());
                        cdr_rows.push(cdr);
                    }
                    Err(CommandError::Domain(error)) => sent.unreadable.push((line, id, error)),
                    Err(other) => return Err(other.into()),
                },
                Ok(Row::Payment(payment)) => {
                    sent.lines.push(line);
                    sent.ids.push(payment.id.clone());
                    payment_rows.push(payment);
                }
            }
        }
        let meta = CommandMeta { occurred_at: now(), recorded_at: now(), actor: actor.clone(), idempotency: None };
        let charging = if cdrs {
            Charging::Queued(workspace.ledger.queue_cdrs(cdr_rows, &meta).await)
        } else {
            Charging::Done(workspace.ledger.receive_payments(payment_rows, &meta).await)
        };
        if let Some((sent, charging)) = previous.replace((sent, charging)) {
            bar.set_position(tally_chunk(sent, charging, &mut tally, &mut rejects).await?);
        }
    }
    if let Some((sent, charging)) = previous.take() {
        tally_chunk(sent, charging, &mut tally, &mut rejects).await?;
    }
    reader.join().map_err(|_| "the file reader failed")??;
    bar.finish_and_clear();
    let charged_at = started.elapsed();
    workspace.close().await?;
    let seconds = started.elapsed().as_secs_f64();
    let done = if cdrs { "charged" } else { "recorded" };
    println!(
        "{} rows in {seconds:.2} s ({:.0} rows/s; written in {:.2} s, then the read models caught up): \
         {} {done}, {} already in, {} rejected",
        tally.rows,
        tally.rows as f64 / seconds.max(1e-9),
        charged_at.as_secs_f64(),
        tally.charged,
        tally.duplicate,
        tally.rejected
    );
    if let Some(path) = rejects.finish()? {
        println!("rejected rows: {}", path.display());
    }
    Ok(())
}

/// The column mapping `--mapping` names: the book's saved one (in the settings store,
/// `<data>/notify`), else a ready-made one.
fn saved_mapping(
    data: &DataArgs,
    workspace: &Workspace,
    name: &str,
    partner: Option<&str>,
) -> Result<domain::csv_mapping::CsvMapping, Box<dyn std::error::Error>> {
    let book = match partner {
        None => domain::BookId::OPERATOR,
        Some(number) => match workspace.ledger.account(number) {
            Some(account) if account.kind == domain::AccountKind::Partner => domain::BookId::of_partner(account.id),
            _ => return Err(format!("--partner: `{number}` is not a partner").into()),
        },
    };
    let store = crate::notify::NotifyStore::open(&data.data_dir.join(crate::notify::store::NOTIFY_DIR))?;
    if let Some(record) = store.cdr_mapping(book, name)? {
        return Ok(record.mapping);
    }
    domain::csv_mapping::builtin_mapping(name)
        .ok_or_else(|| format!("--mapping: no column mapping `{name}` (see GET /api/v1/cdr-mappings)").into())
}

/// A row of an import file, parsed.
enum Row {
    Cdr(domain::cdr::CdrInput),
    /// A switch's CDR, not yet tied to an account.
    Native(domain::switch_cdr::NativeCdr),
    Payment(ingest::PaymentRow),
}

/// Parsed rows with their lines (and, for a row that could not be read, its `id` as
/// written), and how far into the file they reach.
struct Chunk {
    rows: Vec<(u64, Option<String>, Result<Row, DomainError>)>,
    bytes_read: u64,
}

type NextRow<R, T> = fn(&mut CsvTable<R>) -> Option<(u64, Result<T, DomainError>)>;

/// Reads the whole file in chunks into `chunks`; stops early if the importer is gone.
fn read_chunks<R: std::io::Read, T>(
    mut table: CsvTable<R>,
    next: NextRow<R, T>,
    wrap: fn(T) -> Row,
    chunks: tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), String> {
    loop {
        let mut rows = Vec::with_capacity(IMPORT_CHUNK_ROWS);
        while rows.len() < IMPORT_CHUNK_ROWS {
            let Some((line, row)) = next(&mut table) else { break };
            let id = row.is_err().then(|| table.last_field("id").map(str::to_owned)).flatten();
            rows.push((line, id, row.map(wrap)));
        }
        if rows.is_empty() {
            return match table.io_failure() {
                Some(failure) => Err(format!("reading the file failed after {} bytes: {failure}", table.bytes_read())),
                None => Ok(()),
            };
        }
        if chunks.blocking_send(Chunk { rows, bytes_read: table.bytes_read() }).is_err() {
            return Ok(());
        }
    }
}

/// [`read_chunks`] for a switch's file.
fn read_switch_chunks<R: std::io::Read>(
    mut table: domain::switch_cdr::SwitchTable<R>,
    chunks: tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), String> {
    loop {
        let mut rows = Vec::with_capacity(IMPORT_CHUNK_ROWS);
        while rows.len() < IMPORT_CHUNK_ROWS {
            let Some((line, id, row)) = table.next_cdr() else { break };
            rows.push((line, id, row.map(Row::Native)));
        }
        if rows.is_empty() {
            return match table.io_failure() {
                Some(failure) => Err(format!("reading the file failed after {} bytes: {failure}", table.bytes_read())),
                None => Ok(()),
            };
        }
        if chunks.blocking_send(Chunk { rows, bytes_read: table.bytes_read() }).is_err() {
            return Ok(());
        }
    }
}

/// What was sent of a chunk: the lines and ids of its rows in the order charged, and the
/// rows that could not be read.
struct Sent {
    lines: Vec<u64>,
    ids: Vec<String>,
    unreadable: Vec<(u64, Option<String>, DomainError)>,
    bytes_read: u64,
}

enum Charging {
    /// CDRs handed to their writers, answered once durable.
    Queued(ingest::QueuedCdrs),
    Done(Vec<Result<CommandOutcome, CommandError>>),
}

/// Tallies a chunk once all its rows are answered, its unreadable rows first (as they
/// come first in the rejects file); gives how far into the file the chunk reaches.
async fn tally_chunk(
    sent: Sent,
    charging: Charging,
    tally: &mut Tally,
    rejects: &mut Rejects,
) -> Result<u64, Box<dyn std::error::Error>> {
    for (line, id, error) in &sent.unreadable {
        let (code, field, message) = domain_refusal(error);
        rejects.add(*line, id.as_deref(), code, field, &message)?;
        tally.rejected += 1;
        tally.rows += 1;
    }
    let outcomes = match charging {
        Charging::Queued(queued) => queued.answers().await,
        Charging::Done(outcomes) => outcomes,
    };
    tally_outcomes(outcomes, &sent.lines, &sent.ids, tally, rejects)?;
    Ok(sent.bytes_read)
}

fn tally_outcomes(
    outcomes: Vec<Result<CommandOutcome, CommandError>>,
    lines: &[u64],
    ids: &[String],
    tally: &mut Tally,
    rejects: &mut Rejects,
) -> CliResult {
    for ((outcome, line), id) in outcomes.into_iter().zip(lines).zip(ids) {
        tally.rows += 1;
        match outcome {
            Ok(outcome) if outcome.repeated => tally.duplicate += 1,
            Ok(_) => tally.charged += 1,
            Err(error) => {
                let (code, field, message) = row_refusal(error)?;
                rejects.add(*line, Some(id), code, field, &message)?;
                tally.rejected += 1;
            }
        }
    }
    Ok(())
}

pub async fn reconcile(command: ReconcileCommand) -> CliResult {
    let ReconcileCommand::Cdrs(args) = command;
    let time = |flag: &str, text: &str| {
        Timestamp::parse(text).ok_or_else(|| format!("--{flag}: `{text}` is not RFC 3339 or YYYY-MM-DD"))
    };
    let (from, to) = (time("from", &args.from)?, time("to", &args.to)?);
    if from > to {
        return Err("--to is before --from".into());
    }
    let file = std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let (calls, unreadable) = projections::reconcile::file_calls(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let workspace = Workspace::open(&args.data).await?;
    let models = workspace.models.clone();
    workspace.close().await?;
    let accounts =
        projections::reconcile::customer_accounts(&models.snapshot(), &projections::AccountFilter::default())?;
    let ledger = projections::reconcile::ledger_calls(&models.snapshot(), &accounts, from, to).await?;
    let mut report = projections::reconcile::reconcile(from, to, calls, ledger);
    report.unreadable = unreadable;
    let mut out = std::io::stdout().lock();
    match args.format {
        ReportFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        ReportFormat::Csv => out.write_all(&report_csv(&report))?,
        ReportFormat::Human => write!(out, "{}", report_text(&report))?,
    }
    if report.is_clean() { Ok(()) } else { Err("the file and the ledger differ".into()) }
}

/// One line per difference, in the columns of `difference,account,id,start,file_cost,ledger_cost,file_partner_cost,ledger_partner_cost,line`.
pub fn report_csv(report: &projections::reconcile::Report) -> Vec<u8> {
    use Column::{Number, Text};
    use projections::reconcile::CallRecord;
    // The account and id come from the file or a client: text; the costs and line numbers.
    const COLUMNS: [Column; 9] = [Text, Text, Text, Text, Number, Number, Number, Number, Number];
    let mut out = csv_line(
        &[Text; 9],
        &[
            "difference",
            "account",
            "id",
            "start",
            "file_cost",
            "ledger_cost",
            "file_partner_cost",
            "ledger_partner_cost",
            "line",
        ],
    );
    let amount = |a: Option<domain::Amount>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut row = |kind: &str, file: Option<&CallRecord>, ledger: Option<&CallRecord>| {
        let either = file.or(ledger).expect("one side at least");
        let record = [
            kind.to_owned(),
            either.account.clone(),
            either.id.clone(),
            either.start.to_rfc3339(),
            amount(file.and_then(|f| f.cost)),
            amount(ledger.and_then(|l| l.cost)),
            amount(file.and_then(|f| f.partner_cost)),
            amount(ledger.and_then(|l| l.partner_cost)),
            file.and_then(|f| f.line).map(|l| l.to_string()).unwrap_or_default(),
        ];
        out.push_str(&csv_line(&COLUMNS, &record));
    };
    for call in &report.missing_in_ledger {
        row("missing_in_ledger", Some(call), None);
    }
    for call in &report.missing_in_file {
        row("missing_in_file", None, Some(call));
    }
    for difference in &report.cost_differs {
        row("cost_differs", Some(&difference.file), Some(&difference.ledger));
    }
    for call in &report.repeated_in_file {
        row("repeated_in_file", Some(call), None);
    }
    out.into_bytes()
}

/// The summary a person reads first, then the differences.
pub fn report_text(report: &projections::reconcile::Report) -> String {
    let t = &report.totals;
    let mut text = format!(
        "reconciliation of {} to {}\n\
         file:   {} calls, cost {}, partner cost {}\n\
         ledger: {} calls, cost {}, partner cost {}\n\
         matched {}, missing in the ledger {}, missing in the file {}, cost differs {}\n",
        report.from.to_rfc3339(),
        report.to.to_rfc3339(),
        t.file_calls,
        t.file_cost,
        t.file_partner_cost,
        t.ledger_calls,
        t.ledger_cost,
        t.ledger_partner_cost,
        report.matched,
        report.missing_in_ledger.len(),
        report.missing_in_file.len(),
        report.cost_differs.len(),
    );
    if report.outside_period > 0 {
        text += &format!("{} file rows started outside the period (not compared)\n", report.outside_period);
    }
    for call in &report.missing_in_ledger {
        text += &format!("missing in the ledger: {} {} (line {})\n", call.account, call.id, call.line.unwrap_or(0));
    }
    for call in &report.missing_in_file {
        text += &format!("missing in the file:   {} {}\n", call.account, call.id);
    }
    for d in &report.cost_differs {
        let cost = |a: Option<domain::Amount>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        text += &format!(
            "cost differs:          {} {}: file {} / {}, ledger {} / {} (cost / partner cost)\n",
            d.ledger.account,
            d.ledger.id,
            cost(d.file.cost),
            cost(d.file.partner_cost),
            cost(d.ledger.cost),
            cost(d.ledger.partner_cost)
        );
    }
    for call in &report.repeated_in_file {
        text += &format!("repeated in the file:  {} {} (line {})\n", call.account, call.id, call.line.unwrap_or(0));
    }
    for row in &report.unreadable {
        text += &format!("unreadable line {}: {}\n", row.line, row.message);
    }
    if report.is_clean() {
        text += "no differences\n";
    }
    text
}
