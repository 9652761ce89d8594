//! `tollbook dataset`: the standard benchmark data set, written into a new data directory.
//!
//! Every read-side figure is measured on the same ledger: partners with their customers
//! (100 x 100 by default), a year of business time, and a mix of events like a VoIP
//! reseller's: about 70% rated calls, 15% payments, 10% fund moves between a partner and
//! its own customers, 5% other charges, adjustments and reversals. What the ledger holds
//! (accounts, amounts, business times, which event a reversal names) is a pure function of
//! the seed, the number of events and the sizes; only what the ledger itself makes (event
//! ids, ledger times, global positions) differs between two runs.
//!
//! The events go through the in-process [`Ledger`] like any client's: each is decided by
//! its book's writer and hash-chained, calls are rated by the ledger's CDR path with the
//! tariffs the set publishes. Books are written in parallel, each in windows of commands
//! queued at once, so that writers batch them (group commit).
//!
//! The generator keeps a model of every balance, in the order its book's writer decides,
//! and never asks for what the ledger would refuse or flag: a fund move or a charge stays
//! within the account's funds, and an account that a call or a debit would take past its
//! credit limit is topped up by a payment instead. So every command is exactly one event,
//! and a refusal or an extra event (an alert) is a generator bug, reported as a failure.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use commands::ingest::QueuedCdrs;
use commands::{CommandError, CommandOutcome, Ledger, StoreSpec};
use domain::cdr::CdrInput;
use domain::rating::{CallDirection, Rate, Rounding, RoundingMode, Tariff};
use domain::{
    AccountId, AccountKind, Amount, BookId, Command, CommandMeta, Currency, Event, OpenAccount, TariffId, Timestamp,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::{Decimal, RoundingStrategy};

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The most events one data set may hold: a thousand times the figures' set.
const EVENTS_MAX: u64 = 10_000_000_000;
const PARTNERS_MAX: u64 = 10_000;
const CUSTOMERS_PER_PARTNER_MAX: u64 = 10_000;

/// The mix of the business events (all but the set-up), per mille.
const CALLS_PER_MILLE: u32 = 700;
const PAYMENTS_PER_MILLE: u32 = 150;
const MOVES_PER_MILLE: u32 = 100;
const CHARGES_PER_MILLE: u32 = 20;
const ADJUSTMENTS_PER_MILLE: u32 = 15;
const REVERSALS_PER_MILLE: u32 = 15;
const _: () = assert!(
    CALLS_PER_MILLE
        + PAYMENTS_PER_MILLE
        + MOVES_PER_MILLE
        + CHARGES_PER_MILLE
        + ADJUSTMENTS_PER_MILLE
        + REVERSALS_PER_MILLE
        == 1000
);

/// Commands of one book queued together: a quarter of a writer batch, so that a window's
/// calls fit one bulk message (`BULK_COMMANDS_MAX`), and with the next window queued (see
/// [`WINDOWS_IN_FLIGHT_MAX`]) the writer always has its next batch waiting. Smaller
/// windows spent a fifth of the time allocating the bulk path's per-call buffers.
const WINDOW_COMMANDS_MAX: usize = commands::writer::BATCH_COMMANDS_MAX / 4;
/// A small book takes windows of a sixteenth of its events, down to this: a book of a
/// window or two would have no answered window to reverse events of.
const WINDOW_COMMANDS_MIN: u64 = 32;
const BOOK_WINDOWS_MIN: u64 = 16;
/// Windows of one book queued and not yet answered: the next window is generated while
/// the last one is made durable. A reversal names only events of windows already
/// answered, which is what keeps the choice independent of timing.
const WINDOWS_IN_FLIGHT_MAX: usize = 2;
/// Events of one book a reversal may choose from: the most recent reversible ones.
const REVERSAL_CANDIDATES_MAX: usize = 1024;
const _: () = assert!(WINDOW_COMMANDS_MAX * WINDOWS_IN_FLIGHT_MAX < commands::writer::QUEUE_COMMANDS_MAX);

/// Credit limits, in cents: far above what a window of calls costs, so the model's
/// top-ups keep every account inside them.
const CUSTOMER_CREDIT_LIMIT_CENTS: i64 = 10_000;
const PARTNER_CREDIT_LIMIT_CENTS: i64 = 1_000_000;

/// Destinations: prefix, the operator's wholesale price per minute in 1/10,000 of the
/// currency, and the share of calls per mille (German numbers first, as for a German
/// reseller).
const DESTINATIONS: [(&str, i64, u32); 19] = [
    ("4930", 60, 180),
    ("4940", 60, 100),
    ("4989", 60, 100),
    ("49", 80, 170),
    ("4915", 450, 60),
    ("4917", 450, 60),
    ("43", 95, 20),
    ("44", 90, 50),
    ("447", 350, 30),
    ("33", 85, 40),
    ("336", 400, 20),
    ("39", 100, 30),
    ("34", 90, 30),
    ("1", 50, 40),
    ("86", 150, 20),
    ("91", 180, 20),
    ("7", 250, 15),
    ("90", 600, 10),
    ("234", 1200, 5),
];
const _: () = {
    let mut sum = 0;
    let mut i = 0;
    while i < DESTINATIONS.len() {
        sum += DESTINATIONS[i].2;
        i += 1;
    }
    assert!(sum == 1000);
};
/// Digits of a callee number, its prefix included.
const CALLEE_DIGITS: usize = 11;

#[derive(clap::Args, Debug)]
pub struct DatasetArgs {
    /// A new or empty directory; the event log goes to DIR/events, as `serve` expects.
    /// The read models are not built: run `tollbook replay` (or start the server).
    #[arg(long = "data")]
    pub data_dir: PathBuf,
    /// Events in the log, the set-up (accounts, tariffs) included.
    #[arg(long = "events", value_parser = clap::value_parser!(u64).range(1..=EVENTS_MAX))]
    pub events: u64,
    /// The seed: the same seed, events and sizes give the same ledger.
    #[arg(long = "seed", default_value_t = 1)]
    pub seed: u64,
    /// Partners (resellers), each with a book of its own.
    #[arg(long = "partners", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=PARTNERS_MAX))]
    pub partners: u64,
    /// Customers of each partner.
    #[arg(long = "customers", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=CUSTOMERS_PER_PARTNER_MAX))]
    pub customers: u64,
    /// The start of business time (inclusive): RFC 3339 or YYYY-MM-DD.
    #[arg(long = "from", default_value = "2025-01-01")]
    pub from: String,
    /// The end of business time (exclusive).
    #[arg(long = "to", default_value = "2026-01-01")]
    pub to: String,
}

/// The events that open the accounts and publish and assign the tariffs: the operator's
/// tariff, then per partner its account, its retail tariff and its tariff assignment, and
/// per customer its account and its tariff assignment.
pub fn setup_events(partners: u64, customers: u64) -> u64 {
    1 + partners * (3 + 2 * customers)
}

/// What the business events of the set are, by the command that made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Call,
    Payment,
    Move,
    Charge,
    Adjustment,
    Reversal,
}

impl Kind {
    const ALL: [Kind; 6] = [Kind::Call, Kind::Payment, Kind::Move, Kind::Charge, Kind::Adjustment, Kind::Reversal];

    fn name(self) -> &'static str {
        match self {
            Kind::Call => "calls",
            Kind::Payment => "payments",
            Kind::Move => "fund moves",
            Kind::Charge => "charges",
            Kind::Adjustment => "adjustments",
            Kind::Reversal => "reversals",
        }
    }
}

/// What one book's writing came to.
#[derive(Default)]
struct Tally {
    by_kind: [u64; 6],
    /// Calls, charges and debits that would have crossed a credit limit, written as a
    /// top-up payment instead (counted among the payments).
    top_ups: u64,
    /// Commands the ledger refused, or that made other than one event: generator bugs.
    failures: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (sum, count) in self.by_kind.iter_mut().zip(other.by_kind) {
            *sum += count;
        }
        self.top_ups += other.top_ups;
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
    }

    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(what);
    }
}

/// An account the set opens.
#[derive(Clone)]
struct Party {
    id: AccountId,
    number: String,
}

/// One partner's book: its accounts, its retail tariff and its share of the events.
struct BookPlan {
    index: u64,
    partner: Party,
    customers: Vec<Party>,
    retail: Tariff,
    /// Business events (after the set-up) of this book.
    events: u64,
}

/// What every book's writer shares.
struct Context {
    seed: u64,
    from: Timestamp,
    to: Timestamp,
    currency: Currency,
    operator_tariff: TariffId,
    actor: String,
    bar: ProgressBar,
}

pub async fn dataset(args: DatasetArgs) -> CliResult {
    let (from, to) = (parse_time("from", &args.from)?, parse_time("to", &args.to)?);
    if to <= from {
        return Err("--to must be after --from".into());
    }
    let setup = setup_events(args.partners, args.customers);
    if args.events < setup {
        return Err(format!(
            "--events {}: {} partners with {} customers each take {setup} events to set up; ask for more",
            args.events, args.partners, args.customers
        )
        .into());
    }
    if std::fs::read_dir(&args.data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} is not empty: the data set goes into a new directory", args.data_dir.display()).into());
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let store = StoreSpec::Sled(args.data_dir.join(crate::server::EVENTS_DIR)).open().await?;
    let ledger = Arc::new(Ledger::open(store.clone()).await?);

    let currency = Currency::parse("EUR")?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let operator_tariff = wholesale_tariff(deterministic_id(&mut rng, from), currency, from);
    let books = plan_books(&mut rng, &args, from, currency, args.events - setup);

    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("generating");
    let context = Arc::new(Context {
        seed: args.seed,
        from,
        to,
        currency,
        operator_tariff: operator_tariff.id,
        actor: format!("dataset:seed-{}", args.seed),
        bar: bar.clone(),
    });
    let started = Instant::now();
    let meta = setup_meta(&context);
    one_event(ledger.publish_tariff(BookId::OPERATOR, operator_tariff, meta).await, "the operator's tariff")?;
    bar.inc(1);
    let tasks: Vec<_> =
        books.into_iter().map(|book| tokio::spawn(write_book(ledger.clone(), book, context.clone()))).collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(&task.await??);
    }
    ledger.shutdown().await;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let written = store.head().await?.saturating_sub(1);
    if tally.failures > 0 {
        return Err(format!(
            "{} commands were refused or made other than one event (a generator bug); the first: {}",
            tally.failures,
            tally.first_failure.unwrap_or_default()
        )
        .into());
    }
    if written != args.events {
        return Err(format!("the log holds {written} events, {} were planned", args.events).into());
    }
    let business = (args.events - setup).max(1) as f64;
    let mix: Vec<String> = Kind::ALL
        .iter()
        .zip(tally.by_kind)
        .map(|(kind, count)| format!("{} {count} ({:.1}%)", kind.name(), count as f64 * 100.0 / business))
        .collect();
    println!(
        "wrote {written} events in {seconds:.2} s ({:.0} events/s): {} partners x {} customers, seed {}, \
         business time {} to {}",
        written as f64 / seconds.max(1e-9),
        args.partners,
        args.customers,
        args.seed,
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    println!("set-up {setup}; {}; {} top-ups instead of a debit past a credit limit", mix.join(", "), tally.top_ups);
    println!("the read models are not built yet: run `tollbook replay --data {}`", args.data_dir.display());
    Ok(())
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).ok_or_else(|| format!("--{flag}: `{text}` is not RFC 3339 or YYYY-MM-DD"))
}

fn now() -> Timestamp {
    Timestamp::from_micros(chrono::Utc::now().timestamp_micros())
}

/// The set-up happens at the start of business time.
fn setup_meta(context: &Context) -> CommandMeta {
    CommandMeta { occurred_at: context.from, recorded_at: now(), actor: context.actor.clone(), idempotency: None }
}

/// An id the seed decides: a UUIDv7 stamped with the start of business time, as if the
/// ledger had made it then.
fn deterministic_id(rng: &mut ChaCha8Rng, at: Timestamp) -> uuid::Uuid {
    let mut random = [0u8; 10];
    rng.fill_bytes(&mut random);
    let millis = u64::try_from(at.micros() / 1000).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// The digits a number needs, at least three: `P001`, `C001-042`.
fn width(count: u64) -> usize {
    count.to_string().len().max(3)
}

/// The operator's price list, assigned to every partner: what each partner pays for its
/// customers' calls.
fn wholesale_tariff(id: uuid::Uuid, currency: Currency, from: Timestamp) -> Tariff {
    Tariff {
        id: TariffId(id),
        name: "operator wholesale".into(),
        currency,
        effective_from: from,
        rounding: Rounding { decimals: 4, mode: RoundingMode::HalfUp },
        rates: DESTINATIONS
            .iter()
            .map(|(prefix, price, _)| Rate {
                prefix: (*prefix).to_owned(),
                price_per_minute: Amount(Decimal::new(*price, 4)),
                connect_fee: Amount::ZERO,
                minimum_seconds: 0,
                first_increment_seconds: 1,
                next_increment_seconds: 1,
            })
            .collect(),
    }
}

/// A partner's retail price list for its customers: the wholesale prices with the
/// partner's markup, connect fee and billing increments.
fn retail_tariff(rng: &mut ChaCha8Rng, id: uuid::Uuid, number: &str, currency: Currency, from: Timestamp) -> Tariff {
    let markup_percent = rng.random_range(130..=250i64);
    let connect_fee = Amount(Decimal::new(rng.random_range(0..=2i64), 2));
    let (first, next) = [(60, 60), (30, 6), (1, 1)][rng.random_range(0..3usize)];
    Tariff {
        id: TariffId(id),
        name: format!("{number} retail"),
        currency,
        effective_from: from,
        rounding: Rounding { decimals: 4, mode: RoundingMode::Up },
        rates: DESTINATIONS
            .iter()
            .map(|(prefix, price, _)| Rate {
                prefix: (*prefix).to_owned(),
                price_per_minute: Amount(Decimal::new(price * markup_percent, 6)),
                connect_fee,
                minimum_seconds: 0,
                first_increment_seconds: first,
                next_increment_seconds: next,
            })
            .collect(),
    }
}

/// Every book's accounts and tariff, and its share of `business` events (equal shares,
/// the first books one more when they do not divide evenly).
fn plan_books(
    rng: &mut ChaCha8Rng,
    args: &DatasetArgs,
    from: Timestamp,
    currency: Currency,
    business: u64,
) -> Vec<BookPlan> {
    let (partner_width, customer_width) = (width(args.partners), width(args.customers));
    (0..args.partners)
        .map(|index| {
            let number = format!("P{:0partner_width$}", index + 1);
            let partner = Party { id: AccountId(deterministic_id(rng, from)), number };
            let customers = (0..args.customers)
                .map(|c| Party {
                    id: AccountId(deterministic_id(rng, from)),
                    number: format!("C{:0partner_width$}-{:0customer_width$}", index + 1, c + 1),
                })
                .collect();
            let tariff_id = deterministic_id(rng, from);
            let retail = retail_tariff(rng, tariff_id, &partner.number, currency, from);
            let events = business / args.partners + u64::from(index < business % args.partners);
            BookPlan { index, partner, customers, retail, events }
        })
        .collect()
}

/// Whether a set-up command made exactly its one event.
fn one_event(outcome: Result<CommandOutcome, CommandError>, what: &str) -> Result<(), String> {
    match outcome {
        Ok(outcome) if outcome.events.len() == 1 && !outcome.repeated => Ok(()),
        Ok(outcome) => Err(format!("{what}: {} events (repeated: {})", outcome.events.len(), outcome.repeated)),
        Err(error) => Err(format!("{what}: {error}")),
    }
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<CommandOutcome, CommandError>> + Send + 'a>>;

/// Opens the book's accounts, publishes and assigns its tariffs, then writes its share
/// of the business events.
async fn write_book(ledger: Arc<Ledger>, plan: BookPlan, context: Arc<Context>) -> Result<Tally, String> {
    let book = BookId::of_partner(plan.partner.id);
    let open = |party: &Party, kind: AccountKind, partner: Option<AccountId>, credit_limit_cents: i64| {
        Command::OpenAccount(OpenAccount {
            account: party.id,
            number: party.number.clone(),
            name: match kind {
                AccountKind::Partner => format!("Partner {}", party.number),
                AccountKind::Customer => format!("Customer {}", party.number),
            },
            kind,
            partner,
            currency: context.currency,
            credit_limit: Amount(Decimal::new(credit_limit_cents, 2)),
        })
    };
    // The partner opens its book; then its tariff and customers, then the assignments
    // (which need the tariff and the accounts), each step as one batch.
    let partner = open(&plan.partner, AccountKind::Partner, None, PARTNER_CREDIT_LIMIT_CENTS);
    one_event(ledger.execute_in(book, partner, setup_meta(&context)).await, "a partner's account")?;
    let mut opening: Vec<Answer<'_>> =
        vec![Box::pin(ledger.publish_tariff(book, plan.retail.clone(), setup_meta(&context)))];
    for customer in &plan.customers {
        let command = open(customer, AccountKind::Customer, Some(plan.partner.id), CUSTOMER_CREDIT_LIMIT_CENTS);
        opening.push(Box::pin(ledger.execute_in(book, command, setup_meta(&context))));
    }
    for outcome in futures::future::join_all(opening).await {
        one_event(outcome, "a customer's account or a retail tariff")?;
    }
    let mut assigning: Vec<Answer<'_>> =
        vec![Box::pin(ledger.assign_tariff(plan.partner.id, Some(context.operator_tariff), setup_meta(&context)))];
    for customer in &plan.customers {
        assigning.push(Box::pin(ledger.assign_tariff(customer.id, Some(plan.retail.id), setup_meta(&context))));
    }
    for outcome in futures::future::join_all(assigning).await {
        one_event(outcome, "a tariff assignment")?;
    }
    context.bar.inc(3 + 2 * plan.customers.len() as u64);

    let mut generator = Generator::new(&plan, &context);
    let mut tally = Tally::default();
    let mut in_flight: VecDeque<Window<'_>> = VecDeque::new();
    let mut next = 0;
    let window_commands = (plan.events / BOOK_WINDOWS_MIN).clamp(WINDOW_COMMANDS_MIN, WINDOW_COMMANDS_MAX as u64);
    while next < plan.events {
        if in_flight.len() == WINDOWS_IN_FLIGHT_MAX {
            let window = in_flight.pop_front().expect("a window is in flight");
            settle(window, &mut generator, &mut tally, &context).await;
        }
        let end = plan.events.min(next + window_commands);
        let planned = generator.window(&ledger, next..end, &mut tally)?;
        in_flight.push_back(submit(&ledger, book, planned, &context).await);
        next = end;
    }
    while let Some(window) = in_flight.pop_front() {
        settle(window, &mut generator, &mut tally, &context).await;
    }
    Ok(tally)
}

/// A business command as generated, before it is queued.
struct Planned {
    kind: Kind,
    /// Its business time (a call's is its start).
    occurred_at: Timestamp,
    /// Whether a later reversal may name its event.
    reversible: bool,
    what: What,
}

enum What {
    Cdr(CdrInput),
    Command(Command),
}

/// A window's commands as queued, in queue order.
struct Window<'a> {
    kinds: Vec<(Kind, bool)>,
    answers: Vec<Queued<'a>>,
}

enum Queued<'a> {
    /// A run of consecutive calls, charged through the ledger's bulk CDR path.
    Cdrs(QueuedCdrs),
    Waiting(Answer<'a>),
    Answered(Result<CommandOutcome, CommandError>),
}

/// Queues a window's commands in order: each book's writer decides them in the order
/// the generator's model assumed.
async fn submit<'a>(ledger: &'a Ledger, book: BookId, planned: Vec<Planned>, context: &Context) -> Window<'a> {
    let meta =
        CommandMeta { occurred_at: context.from, recorded_at: now(), actor: context.actor.clone(), idempotency: None };
    let mut window = Window { kinds: Vec::with_capacity(planned.len()), answers: Vec::new() };
    let mut calls: Vec<CdrInput> = Vec::new();
    for Planned { kind, occurred_at, reversible, what } in planned {
        window.kinds.push((kind, reversible));
        match what {
            What::Cdr(cdr) => calls.push(cdr),
            What::Command(command) => {
                if !calls.is_empty() {
                    window.answers.push(Queued::Cdrs(ledger.queue_cdrs(std::mem::take(&mut calls), &meta).await));
                }
                let meta = CommandMeta { occurred_at, ..meta.clone() };
                let mut answer: Answer<'a> = Box::pin(ledger.execute_in(book, command, meta));
                // Polled once here, the command is in its writer's queue before the next
                // one is made: the writer gets them in the window's order.
                window.answers.push(match futures::poll!(answer.as_mut()) {
                    Poll::Ready(outcome) => Queued::Answered(outcome),
                    Poll::Pending => Queued::Waiting(answer),
                });
            }
        }
    }
    if !calls.is_empty() {
        window.answers.push(Queued::Cdrs(ledger.queue_cdrs(calls, &meta).await));
    }
    window
}

/// Waits for a window's answers; tallies them and keeps its reversible events for later
/// reversals.
async fn settle(window: Window<'_>, generator: &mut Generator, tally: &mut Tally, context: &Context) {
    let mut outcomes = Vec::with_capacity(window.kinds.len());
    for queued in window.answers {
        match queued {
            Queued::Cdrs(cdrs) => outcomes.extend(cdrs.answers().await),
            Queued::Waiting(answer) => outcomes.push(answer.await),
            Queued::Answered(outcome) => outcomes.push(outcome),
        }
    }
    assert_eq!(outcomes.len(), window.kinds.len(), "every queued command is answered");
    context.bar.inc(outcomes.len() as u64);
    for ((kind, reversible), outcome) in window.kinds.into_iter().zip(outcomes) {
        match outcome {
            Ok(outcome) if outcome.events.len() == 1 && !outcome.repeated => {
                tally.by_kind[kind as usize] += 1;
                if reversible {
                    let event = outcome.events.into_iter().next().expect("one event").event;
                    generator.keep_reversible(event);
                }
            }
            Ok(outcome) => tally.fail(format!("{kind:?}: {} events", outcome.events.len())),
            Err(error) => tally.fail(format!("{kind:?}: {error}")),
        }
    }
}

/// Payment methods, chosen at random.
const PAYMENT_METHODS: [&str; 4] = ["card", "wire", "direct_debit", "cash"];
const CHARGE_DESCRIPTIONS: [&str; 4] = ["monthly fee", "number rental", "SMS bundle", "setup fee"];
const ADJUSTMENT_REASONS: [&str; 4] = ["goodwill", "billing correction", "late fee", "porting fee"];

/// One book's business events, one after another, and the model of its balances in the
/// order its writer decides them.
struct Generator {
    rng: ChaCha8Rng,
    /// The book's business events, and where business time starts and how long it runs.
    events: u64,
    from_micros: i64,
    span_micros: i64,
    partner_number: String,
    /// Account ids: the partner's at 0, customer `c`'s at `1 + c`; likewise the balances.
    accounts: Vec<AccountId>,
    numbers: Vec<String>,
    balances: Vec<Decimal>,
    slots: HashMap<AccountId, usize>,
    /// Events of answered windows a reversal may name; once full, the oldest give way.
    reversible: Vec<Event>,
    reversible_oldest: usize,
}

/// A slot of [`Generator::accounts`].
const PARTNER_SLOT: usize = 0;

impl Generator {
    fn new(plan: &BookPlan, context: &Context) -> Self {
        // One stream of the seed per book: books are written in parallel, each from its
        // own sequence, so no book's content depends on how the others were scheduled.
        let mut rng = ChaCha8Rng::seed_from_u64(context.seed);
        rng.set_stream(1 + plan.index);
        let parties = std::iter::once(&plan.partner).chain(&plan.customers);
        let accounts: Vec<AccountId> = parties.clone().map(|p| p.id).collect();
        Generator {
            rng,
            events: plan.events,
            from_micros: context.from.micros(),
            span_micros: context.to.micros() - context.from.micros(),
            partner_number: plan.partner.number.clone(),
            numbers: parties.map(|p| p.number.clone()).collect(),
            balances: vec![Decimal::ZERO; accounts.len()],
            slots: accounts.iter().enumerate().map(|(slot, id)| (*id, slot)).collect(),
            accounts,
            reversible: Vec::new(),
            reversible_oldest: 0,
        }
    }

    /// The business commands `indexes` of the book, in the order to queue them: the
    /// window's calls as one run (one bulk message to the writer rather than one per
    /// stretch of calls), the other commands after them. Payments that keep a call within
    /// its credit limit go first: a credit queued earlier than the model assumed only
    /// raises the balances in between. Business time runs evenly through the period:
    /// event `i` of `n` falls at random in the `i`-th `n`th of it.
    fn window(
        &mut self,
        ledger: &Ledger,
        indexes: std::ops::Range<u64>,
        tally: &mut Tally,
    ) -> Result<Vec<Planned>, String> {
        let span = i128::from(self.span_micros);
        let draws: Vec<(u64, Timestamp, usize, u32)> = indexes
            .map(|i| {
                let jitter = i128::from(self.rng.random_range(0..self.span_micros));
                let offset = (i128::from(i) * span + jitter) / i128::from(self.events);
                let at = Timestamp::from_micros(self.from_micros + offset as i64);
                let customer = 1 + self.rng.random_range(0..self.accounts.len() - 1);
                (i, at, customer, self.rng.random_range(0..1000u32))
            })
            .collect();
        let (mut top_ups, mut calls, mut others) = (Vec::new(), Vec::new(), Vec::new());
        for &(i, at, customer, _) in draws.iter().filter(|draw| draw.3 < CALLS_PER_MILLE) {
            let planned = self.call(ledger, i, customer, at, tally)?;
            match planned.what {
                What::Cdr(_) => calls.push(planned),
                What::Command(_) => top_ups.push(planned),
            }
        }
        for &(i, at, customer, roll) in draws.iter().filter(|draw| draw.3 >= CALLS_PER_MILLE) {
            others.push(self.other(roll - CALLS_PER_MILLE, i, customer, at, tally));
        }
        top_ups.extend(calls);
        top_ups.extend(others);
        Ok(top_ups)
    }

    /// A business command other than a call; `roll` is below the other kinds' per mille.
    fn other(&mut self, roll: u32, i: u64, customer: usize, at: Timestamp, tally: &mut Tally) -> Planned {
        let mut threshold = PAYMENTS_PER_MILLE;
        if roll < threshold {
            let slot = if self.rng.random_ratio(1, 3) { PARTNER_SLOT } else { customer };
            return self.payment(slot, i, at);
        }
        threshold += MOVES_PER_MILLE;
        if roll < threshold {
            return self.fund_move(customer, i, at, tally);
        }
        threshold += CHARGES_PER_MILLE;
        if roll < threshold {
            return self.charge(customer, i, at, tally);
        }
        threshold += ADJUSTMENTS_PER_MILLE;
        if roll < threshold {
            return self.adjustment(customer, i, at, tally);
        }
        self.reversal(customer, i, at, tally)
    }

    fn cents(&mut self, range: std::ops::RangeInclusive<i64>) -> Decimal {
        Decimal::new(self.rng.random_range(range), 2)
    }

    fn credit_limit(slot: usize) -> Decimal {
        let cents = if slot == PARTNER_SLOT { PARTNER_CREDIT_LIMIT_CENTS } else { CUSTOMER_CREDIT_LIMIT_CENTS };
        Decimal::new(cents, 2)
    }

    /// Whether a balance is past the account's credit limit (where the ledger raises an
    /// alert, an event of its own).
    fn past_limit(slot: usize, balance: Decimal) -> bool {
        balance < -Self::credit_limit(slot)
    }

    /// The positive funds of an account, in whole cents: what a fund move may take.
    fn funds(&self, slot: usize) -> Decimal {
        self.balances[slot].max(Decimal::ZERO).round_dp_with_strategy(2, RoundingStrategy::ToZero)
    }

    fn call(
        &mut self,
        ledger: &Ledger,
        i: u64,
        customer: usize,
        at: Timestamp,
        tally: &mut Tally,
    ) -> Result<Planned, String> {
        let cdr = self.cdr(i, customer, at);
        // Rated here as the ledger will rate it, for the model; the ledger rates it again
        // when it charges it.
        let charge = ledger.rate(&cdr).map_err(|error| format!("rating call {}: {error}", cdr.id))?;
        let customer_after = self.balances[customer] - charge.customer_cost.0;
        let partner_after = self.balances[PARTNER_SLOT] - charge.partner_cost.map_or(Decimal::ZERO, |cost| cost.0);
        if Self::past_limit(customer, customer_after) {
            return Ok(self.top_up(customer, i, at, tally));
        }
        if Self::past_limit(PARTNER_SLOT, partner_after) {
            return Ok(self.top_up(PARTNER_SLOT, i, at, tally));
        }
        self.balances[customer] = customer_after;
        self.balances[PARTNER_SLOT] = partner_after;
        let reversible = !charge.customer_cost.is_zero();
        Ok(Planned { kind: Kind::Call, occurred_at: at, reversible, what: What::Cdr(cdr) })
    }

    /// A call of `customer` starting at `start`: nine in ten answered, most short, a few
    /// up to an hour; the rest busy or unanswered (rated at zero, still recorded).
    fn cdr(&mut self, i: u64, customer: usize, start: Timestamp) -> CdrInput {
        let roll = self.rng.random_range(0..1000u32);
        let mut cumulative = 0;
        let prefix = DESTINATIONS
            .iter()
            .find(|(_, _, share)| {
                cumulative += share;
                roll < cumulative
            })
            .map_or(DESTINATIONS[0].0, |(prefix, _, _)| prefix);
        let rest = CALLEE_DIGITS - prefix.len();
        let subscriber = self.rng.random_range(0..10u64.pow(rest as u32));
        let ring_seconds = self.rng.random_range(2..=20i64);
        let (answer, end, billable_seconds, hangup_cause) = if self.rng.random_ratio(9, 10) {
            let talk_seconds = match self.rng.random_range(0..100u32) {
                0..40 => self.rng.random_range(1..=60),
                40..70 => self.rng.random_range(61..=180),
                70..90 => self.rng.random_range(181..=600),
                90..98 => self.rng.random_range(601..=1800),
                _ => self.rng.random_range(1801..=3600),
            };
            let answer = start.add_seconds(ring_seconds);
            (Some(answer), answer.add_seconds(talk_seconds), talk_seconds as u32, 16)
        } else {
            // Normal: no answer (19) or busy (17).
            let cause = if self.rng.random_ratio(1, 2) { 19 } else { 17 };
            (None, start.add_seconds(ring_seconds + 10), 0, cause)
        };
        CdrInput {
            id: format!("{}-{i:09}", self.partner_number),
            account: self.numbers[customer].clone(),
            caller: format!("+49{:0>9}", customer),
            callee: format!("{prefix}{subscriber:0rest$}"),
            start,
            answer,
            end,
            billable_seconds,
            hangup_cause,
            direction: CallDirection::Outbound,
            cost: None,
            partner_cost: None,
            hangup_cause_raw: None,
            hangup_cause_flag: None,
        }
    }

    /// A payment into `slot`: a partner pays more than a customer, and an account below
    /// zero pays its debt on top.
    fn payment(&mut self, slot: usize, i: u64, at: Timestamp) -> Planned {
        let base = if slot == PARTNER_SLOT { self.cents(10_000..=100_000) } else { self.cents(1_000..=10_000) };
        let balance = self.balances[slot];
        let debt = if balance.is_sign_negative() {
            (-balance).round_dp_with_strategy(2, RoundingStrategy::AwayFromZero)
        } else {
            Decimal::ZERO
        };
        let amount = base + debt;
        self.balances[slot] += amount;
        let method = PAYMENT_METHODS[self.rng.random_range(0..PAYMENT_METHODS.len())];
        let command = Command::ReceivePayment {
            account: self.accounts[slot],
            amount: Amount(amount),
            method: Some(method.to_owned()),
            reference: Some(format!("PAY-{}-{i:09}", self.partner_number)),
        };
        Planned { kind: Kind::Payment, occurred_at: at, reversible: false, what: What::Command(command) }
    }

    /// A payment instead of a debit that would take `slot` past its credit limit.
    fn top_up(&mut self, slot: usize, i: u64, at: Timestamp, tally: &mut Tally) -> Planned {
        tally.top_ups += 1;
        self.payment(slot, i, at)
    }

    /// Seven in ten moves go from the partner to the customer, the rest back; never more
    /// than the giving side's funds. With no funds on either side, the partner pays in.
    fn fund_move(&mut self, customer: usize, i: u64, at: Timestamp, tally: &mut Tally) -> Planned {
        let down = (PARTNER_SLOT, customer, self.cents(500..=5_000));
        let up = (customer, PARTNER_SLOT, self.cents(100..=2_000));
        let order = if self.rng.random_ratio(7, 10) { [down, up] } else { [up, down] };
        let Some((from, to, amount)) = order.into_iter().find_map(|(from, to, wanted)| {
            let amount = wanted.min(self.funds(from));
            (amount > Decimal::ZERO).then_some((from, to, amount))
        }) else {
            return self.top_up(PARTNER_SLOT, i, at, tally);
        };
        self.balances[from] -= amount;
        self.balances[to] += amount;
        let command =
            Command::MoveFunds { from: self.accounts[from], to: self.accounts[to], amount: Amount(amount), note: None };
        Planned { kind: Kind::Move, occurred_at: at, reversible: false, what: What::Command(command) }
    }

    /// A charge the ledger accepts only within the account's funds and credit.
    fn charge(&mut self, customer: usize, i: u64, at: Timestamp, tally: &mut Tally) -> Planned {
        let amount = self.cents(100..=1_500);
        if self.balances[customer] + Self::credit_limit(customer) < amount {
            return self.top_up(customer, i, at, tally);
        }
        self.balances[customer] -= amount;
        let description = CHARGE_DESCRIPTIONS[self.rng.random_range(0..CHARGE_DESCRIPTIONS.len())];
        let command = Command::PostCharge {
            account: self.accounts[customer],
            amount: Amount(amount),
            description: Some(description.to_owned()),
        };
        Planned { kind: Kind::Charge, occurred_at: at, reversible: true, what: What::Command(command) }
    }

    /// Half credits (negative), half debits (positive).
    fn adjustment(&mut self, customer: usize, i: u64, at: Timestamp, tally: &mut Tally) -> Planned {
        let magnitude = self.cents(50..=1_000);
        let debit = self.rng.random_ratio(1, 2);
        let amount = if debit { magnitude } else { -magnitude };
        if debit && Self::past_limit(customer, self.balances[customer] - amount) {
            return self.top_up(customer, i, at, tally);
        }
        self.balances[customer] -= amount;
        let reason = ADJUSTMENT_REASONS[self.rng.random_range(0..ADJUSTMENT_REASONS.len())];
        let command = Command::PostAdjustment {
            account: self.accounts[customer],
            amount: Amount(amount),
            reason: Some(reason.to_owned()),
        };
        // Reversing a credit would be a debit, which might cross a limit: debits only.
        Planned { kind: Kind::Adjustment, occurred_at: at, reversible: debit, what: What::Command(command) }
    }

    /// Reverses a call, a charge or a debit adjustment of an answered window: a credit,
    /// so it never crosses a limit. With none yet, a charge instead.
    fn reversal(&mut self, customer: usize, i: u64, at: Timestamp, tally: &mut Tally) -> Planned {
        if self.reversible.is_empty() {
            return self.charge(customer, i, at, tally);
        }
        let target = self.reversible.swap_remove(self.rng.random_range(0..self.reversible.len()));
        target.payload.for_each_posting(|posting| {
            let slot = self.slots[&posting.account];
            self.balances[slot] -= posting.category.balance_effect(posting.amount).0;
        });
        let command = Command::ReverseEntry { target: Box::new(target), reason: Some("disputed".to_owned()) };
        Planned { kind: Kind::Reversal, occurred_at: at, reversible: false, what: What::Command(command) }
    }

    fn keep_reversible(&mut self, event: Event) {
        if self.reversible.len() < REVERSAL_CANDIDATES_MAX {
            self.reversible.push(event);
        } else {
            self.reversible[self.reversible_oldest] = event;
            self.reversible_oldest = (self.reversible_oldest + 1) % REVERSAL_CANDIDATES_MAX;
        }
    }
}
