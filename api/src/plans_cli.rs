//! `tollbook plans`: recurring-charge plans and subscriptions in a stopped server's data
//! directory, as the operator (the API's `/api/v1/plans` and `/api/v1/subscriptions` do
//! the same for a running server, for every role). Each change is an ordinary ledger
//! command, refused or recorded exactly as over the API; the fees themselves are charged
//! by the server's scheduler, which catches up on everything due when it starts.

use commands::CommandOutcome;
use commands::billing::PlanEntry;
use domain::billing::{BillingPeriod, Plan};
use domain::{AccountKind, Amount, BookId, Command, CommandMeta, Currency, Payload, PlanId, SubscriptionId, Timestamp};

use crate::DataArgs;
use crate::import::Workspace;

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Recorded on the events the command line writes.
const CLI_ACTOR: &str = "cli:plans";

#[derive(clap::Subcommand)]
pub enum PlansCommand {
    /// The plans and their subscriptions, as the ledger holds them.
    List(DataArgs),
    /// Publish a plan: the operator's, or with `--partner` a partner's for its own
    /// customers, which pays an operator plan (`--wholesale`) for each subscription.
    /// Plans never change; a new price is a new plan.
    Publish(PublishArgs),
    /// Subscribe a customer to a plan of its book.
    Subscribe(SubscribeArgs),
    /// End a subscription: no period starting at or after `--at` is charged, and the last
    /// one is pro-rated.
    End(EndArgs),
}

#[derive(clap::Args)]
pub struct PublishArgs {
    #[arg(long)]
    name: String,
    /// The price of one period, such as `12.50`.
    #[arg(long)]
    price: String,
    /// ISO 4217 code, such as `EUR`.
    #[arg(long)]
    currency: String,
    /// `daily`, `weekly` or `monthly`.
    #[arg(long)]
    period: String,
    /// The number of the partner that sells the plan; the operator's plan without it.
    #[arg(long)]
    partner: Option<String>,
    /// For a partner's plan: the operator plan (its id) whose price the partner pays.
    #[arg(long, requires = "partner")]
    wholesale: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(clap::Args)]
pub struct SubscribeArgs {
    /// The customer's number.
    #[arg(long)]
    account: String,
    /// The plan's id.
    #[arg(long)]
    plan: String,
    /// When the subscription starts (RFC 3339 or YYYY-MM-DD); now when absent. A start
    /// in the past is charged from then on once the server runs.
    #[arg(long)]
    starts: Option<String>,
    /// When it ends (exclusive); open-ended when absent.
    #[arg(long)]
    ends: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(clap::Args)]
pub struct EndArgs {
    /// The subscription's id.
    #[arg(long)]
    subscription: String,
    /// When it ends (exclusive; RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    at: String,
    #[command(flatten)]
    data: DataArgs,
}

pub async fn plans(command: PlansCommand) -> CliResult {
    match command {
        PlansCommand::List(data) => list(data).await,
        PlansCommand::Publish(args) => publish(args).await,
        PlansCommand::Subscribe(args) => subscribe(args).await,
        PlansCommand::End(args) => end(args).await,
    }
}

fn now() -> Timestamp {
    Timestamp::from_micros(chrono::Utc::now().timestamp_micros())
}

fn meta() -> CommandMeta {
    CommandMeta { occurred_at: now(), recorded_at: now(), actor: CLI_ACTOR.to_owned(), idempotency: None }
}

fn time(flag: &str, text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).ok_or_else(|| format!("--{flag}: `{text}` is not RFC 3339 or YYYY-MM-DD"))
}

fn plan_id(flag: &str, text: &str) -> Result<PlanId, String> {
    PlanId::parse(text).ok_or_else(|| format!("--{flag}: `{text}` is not a plan id"))
}

/// The id a command's first event of `pick` carries (a repeat answers the first one's).
fn recorded<T>(outcome: &CommandOutcome, pick: impl Fn(&Payload) -> Option<T>) -> Option<T> {
    outcome.events.iter().find_map(|e| pick(&e.event.payload))
}

async fn list(data: DataArgs) -> CliResult {
    let workspace = Workspace::open(&data).await?;
    {
        let ledger = &workspace.ledger;
        let catalog = ledger.billing_catalog();
        let mut plans: Vec<&PlanEntry> = catalog.plans().collect();
        plans.sort_by_key(|entry| entry.plan.id);
        let number = |book: BookId| match book {
            BookId::OPERATOR => "operator".to_owned(),
            book => ledger.account_by_id(domain::AccountId(book.0)).map_or_else(|| book.to_string(), |a| a.number),
        };
        for entry in plans {
            let plan = &entry.plan;
            println!(
                "plan {}  {}  {} {} {}  sold by {}",
                plan.id,
                plan.name,
                plan.price.canonical(plan.currency),
                plan.currency,
                plan.period.as_str(),
                number(entry.book)
            );
            let mut subscriptions: Vec<_> =
                catalog.subscriptions().filter(|s| s.subscription.plan == plan.id).collect();
            subscriptions.sort_by_key(|s| s.subscription.id);
            for entry in subscriptions {
                let subscription = &entry.subscription;
                let account = ledger.account_by_id(subscription.account).map_or_else(String::new, |a| a.number);
                let ends = subscription.ends_at.map_or_else(|| "open-ended".to_owned(), |t| format!("until {t}"));
                let settled =
                    entry.settled_until.map_or_else(|| "nothing settled".to_owned(), |t| format!("settled until {t}"));
                println!(
                    "  subscription {}  {account}  from {}  {ends}  {settled}",
                    subscription.id, subscription.starts_at
                );
            }
        }
    }
    workspace.close().await
}

async fn publish(args: PublishArgs) -> CliResult {
    let currency: Currency = args.currency.parse().map_err(|e| format!("--currency: {e}"))?;
    let price: Amount = args.price.parse().map_err(|e| format!("--price: {e}"))?;
    let period = BillingPeriod::parse(&args.period)
        .ok_or_else(|| format!("--period: `{}` is not daily, weekly or monthly", args.period))?;
    let wholesale = args.wholesale.as_deref().map(|text| plan_id("wholesale", text)).transpose()?;
    let workspace = Workspace::open(&args.data).await?;
    let book = match args.partner.as_deref() {
        None => BookId::OPERATOR,
        Some(number) => {
            let partner = workspace.ledger.account(number).ok_or_else(|| format!("--partner: no account {number}"))?;
            if partner.kind != AccountKind::Partner {
                return Err(format!("--partner: {number} is not a partner").into());
            }
            partner.book
        }
    };
    let plan = Plan { id: PlanId::new(), name: args.name, price, currency, period, wholesale: None };
    let outcome = workspace.ledger.publish_plan(book, plan, wholesale, meta()).await;
    let outcome = finish(workspace, outcome).await?;
    let id = recorded(&outcome, |p| match p {
        Payload::PlanPublished(published) => Some(published.plan.id),
        _ => None,
    });
    println!("plan {}", id.map_or_else(String::new, |id| id.to_string()));
    Ok(())
}

async fn subscribe(args: SubscribeArgs) -> CliResult {
    let plan = plan_id("plan", &args.plan)?;
    let starts_at = args.starts.as_deref().map(|text| time("starts", text)).transpose()?.unwrap_or_else(now);
    let ends_at = args.ends.as_deref().map(|text| time("ends", text)).transpose()?;
    let workspace = Workspace::open(&args.data).await?;
    let account =
        workspace.ledger.account(&args.account).ok_or_else(|| format!("--account: no account {}", args.account))?;
    let command = Command::StartSubscription {
        subscription: SubscriptionId::new(),
        account: account.id,
        plan,
        starts_at,
        ends_at,
    };
    let outcome = workspace.ledger.execute(command, meta()).await;
    let outcome = finish(workspace, outcome).await?;
    let id = recorded(&outcome, |p| match p {
        Payload::SubscriptionStarted(started) => Some(started.subscription),
        _ => None,
    });
    println!("subscription {}", id.map_or_else(String::new, |id| id.to_string()));
    Ok(())
}

async fn end(args: EndArgs) -> CliResult {
    let subscription = SubscriptionId::parse(&args.subscription)
        .ok_or_else(|| format!("--subscription: `{}` is not a subscription id", args.subscription))?;
    let ends_at = time("at", &args.at)?;
    let workspace = Workspace::open(&args.data).await?;
    let account = workspace
        .ledger
        .billing_catalog()
        .subscription(subscription)
        .map(|entry| entry.subscription.account)
        .ok_or_else(|| format!("--subscription: no subscription {subscription}"))?;
    let command = Command::EndSubscription { subscription, account, ends_at };
    let outcome = workspace.ledger.execute(command, meta()).await;
    finish(workspace, outcome).await?;
    println!("subscription {subscription} ends at {ends_at}");
    Ok(())
}

/// Closes the workspace (the read models catch up, so the server starts with nothing to
/// project) whatever the command's outcome, then gives the outcome: a refusal names its
/// code and field as the API would.
async fn finish(
    workspace: Workspace,
    outcome: Result<CommandOutcome, commands::CommandError>,
) -> Result<CommandOutcome, Box<dyn std::error::Error>> {
    workspace.close().await?;
    outcome.map_err(|error| match &error {
        commands::CommandError::Domain(refusal) => {
            let field = refusal.field().map_or_else(String::new, |f| format!(" (field {f})"));
            format!("refused: {}{field}: {refusal}", refusal.code()).into()
        }
        _ => error.into(),
    })
}
