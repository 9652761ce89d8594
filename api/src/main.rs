//! `tollbook`: the ledger's one binary.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod auth;
mod body;
mod csv_out;
mod dataset;
mod error;
mod flush;
mod import;
mod invoicing;
mod maintenance;
mod notify;
mod openapi;
mod portal;
mod query;
mod routes;
mod server;
mod write;

// glibc malloc showed up as a fifth of the write path's CPU time; mimalloc halves it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory for reuse instead of returning it to the OS at once, in small
/// pages: the read models are built from many small allocations, and with mimalloc's
/// defaults (purge after 10 ms, 2 MiB pages) a third of replay's CPU went to the kernel
/// zeroing pages it had just handed back (`perf`: `clear_page_erms`). RSS then stays
/// near its peak, which is the working set anyway.
fn tune_allocator() {
    // Indexes of `mi_option_t`, the same in mimalloc v2 and v3.
    const ALLOW_LARGE_OS_PAGES: libmimalloc_sys::mi_option_t = 6;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option has no preconditions; mimalloc reads options atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(ALLOW_LARGE_OS_PAGES, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}

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
    /// Invoices: run those of a billing period on a stopped server's data directory.
    #[command(subcommand)]
    Invoices(invoicing::cli::InvoicesCommand),
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
    /// The address to serve Prometheus metrics on (`GET /metrics`), such as
    /// `127.0.0.1:9464`: apart from the API, so that they can be kept from the clients.
    /// Off unless given; never on the API's address.
    #[arg(long = "metrics-listen", env = "TOLLBOOK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The event store: `sled:DIR` (default: `sled:<data>/events`) or a KurrentDB
    /// connection string such as `kurrentdb://host:2113?tls=false` (needs the
    /// `kurrentdb` feature). Read models stay in `<data>/views` either way.
    #[arg(long = "store", env = "TOLLBOOK_STORE")]
    pub store: Option<commands::StoreSpec>,
    /// The operator's admin key (a bearer credential with every right).
    #[arg(long = "admin-key", env = "TOLLBOOK_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// How long a session's access token is good for: seconds, or a number with `s`, `m`,
    /// `h` or `d` (`2d`, `30m`). The refresh token gets a new one.
    #[arg(long = "session-lifetime", env = "TOLLBOOK_SESSION_LIFETIME", default_value = "2d")]
    pub session_lifetime: Lifetime,
    /// How long one webhook request may take, connecting included.
    #[arg(long = "webhook-timeout", env = "TOLLBOOK_WEBHOOK_TIMEOUT", default_value = "10s")]
    pub webhook_timeout: Lifetime,
    /// How long a webhook delivery is retried before it is marked failed and the
    /// subscription moves on to the next event.
    #[arg(long = "webhook-retry-for", env = "TOLLBOOK_WEBHOOK_RETRY_FOR", default_value = "1h")]
    pub webhook_retry_for: Lifetime,
    /// The first wait between two webhook attempts, in milliseconds; each next wait
    /// doubles, up to ten minutes.
    #[arg(long = "webhook-backoff-ms", env = "TOLLBOOK_WEBHOOK_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_backoff_ms: u64,
    /// A private address range webhooks may reach, as CIDR (`127.0.0.0/8`, `10.1.0.0/16`);
    /// repeat the flag for more, or separate them with commas in the environment.
    /// Loopback, private, link-local (cloud metadata), shared, unspecified, multicast and
    /// broadcast addresses are refused otherwise.
    #[arg(long = "webhook-allow-private", env = "TOLLBOOK_WEBHOOK_ALLOW_PRIVATE", value_delimiter = ',')]
    pub webhook_allow_private: Vec<ipnet::IpNet>,
    /// The SMTP relay that alert e-mail goes through (host name or address). Alert e-mail
    /// is off without it; the addresses are set per account
    /// (`/api/v1/accounts/{number}/alert-emails`).
    #[arg(long = "smtp-host", env = "TOLLBOOK_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// The relay's port; by default 25 with `--smtp-tls none`, 587 with `starttls`, 465
    /// with `tls`.
    #[arg(long = "smtp-port", env = "TOLLBOOK_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// How the connection to the relay is secured: `starttls` (upgrade a plain
    /// connection; refused if the relay does not offer it), `tls` (TLS from the start,
    /// SMTPS), or `none` (plain text: a relay on this host or a trusted network only).
    #[arg(long = "smtp-tls", env = "TOLLBOOK_SMTP_TLS", value_enum, default_value = "starttls")]
    pub smtp_tls: notify::mail::TlsMode,
    /// The user name to authenticate to the relay with; the password comes from
    /// `TOLLBOOK_SMTP_PASSWORD` only, so that it shows in no command line.
    #[arg(long = "smtp-username", env = "TOLLBOOK_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    #[arg(skip = std::env::var("TOLLBOOK_SMTP_PASSWORD").ok())]
    pub smtp_password: Option<String>,
    /// A PEM file of certificates to trust for the relay besides the public roots (a
    /// private certificate authority).
    #[arg(long = "smtp-ca-file", env = "TOLLBOOK_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender of alert e-mail: `billing@example.com` or `Billing <billing@example.com>`.
    #[arg(long = "smtp-from", env = "TOLLBOOK_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// How long one exchange with the relay may take, connecting included.
    #[arg(long = "smtp-timeout", env = "TOLLBOOK_SMTP_TIMEOUT", default_value = "30s")]
    pub smtp_timeout: Lifetime,
    /// How long an e-mail the relay does not take (no connection, a 4xx) is retried
    /// before it is marked failed; a 5xx refusal is not retried.
    #[arg(long = "smtp-retry-for", env = "TOLLBOOK_SMTP_RETRY_FOR", default_value = "1h")]
    pub smtp_retry_for: Lifetime,
    /// The first wait between two attempts at an e-mail, in milliseconds; each next wait
    /// doubles, up to ten minutes.
    #[arg(long = "smtp-backoff-ms", env = "TOLLBOOK_SMTP_BACKOFF_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub smtp_backoff_ms: u64,
    /// How long a client may take to send a request's headers; an idle keep-alive
    /// connection is closed after as long. As for `--session-lifetime`.
    #[arg(long = "header-read-timeout", env = "TOLLBOOK_HEADER_READ_TIMEOUT",
          default_value_t = Lifetime(std::time::Duration::from_secs(server::HEADER_READ_TIMEOUT_S)))]
    pub header_read_timeout: Lifetime,
    /// How long a client may take to send a request's body once its headers arrived.
    #[arg(long = "body-read-timeout", env = "TOLLBOOK_BODY_READ_TIMEOUT",
          default_value_t = Lifetime(std::time::Duration::from_secs(server::BODY_READ_TIMEOUT_S)))]
    pub body_read_timeout: Lifetime,
    /// Connections open at once (live streams included); more wait to be accepted.
    #[arg(long = "connections-max", env = "TOLLBOOK_CONNECTIONS_MAX", default_value_t = server::CONNECTIONS_OPEN_MAX,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections_max: u32,
    /// How long a portal login link may be used (once): as for `--session-lifetime`.
    #[arg(long = "login-link-lifetime", env = "TOLLBOOK_LOGIN_LINK_LIFETIME", default_value = "15m")]
    pub login_link_lifetime: Lifetime,
    /// The address customers reach this server at, such as `https://billing.example.com`,
    /// for the URLs of login links. Without it, the address a request for a link was sent to.
    #[arg(long = "public-url", env = "TOLLBOOK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Always mark the portal's session cookie `Secure` (behind a TLS proxy that does not
    /// send `X-Forwarded-Proto`). It is so anyway when the public URL or the request is HTTPS.
    #[arg(long = "secure-cookies", env = "TOLLBOOK_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// How often recurring fees that fell due are charged (and once at start, which
    /// catches up on any downtime): as for `--session-lifetime`.
    #[arg(long = "billing-interval", env = "TOLLBOOK_BILLING_INTERVAL", default_value = "1m")]
    pub billing_interval: Lifetime,
}

/// A duration given as `172800`, `90s`, `30m`, `48h` or `2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime(pub std::time::Duration);

/// The longest lifetime accepted: a year. Longer-lived credentials are API tokens.
const LIFETIME_SECONDS_MAX: u64 = 366 * 24 * 3600;

impl std::fmt::Display for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl std::str::FromStr for Lifetime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, unit_seconds) = match text.char_indices().last() {
            Some((i, 's')) => (&text[..i], 1),
            Some((i, 'm')) => (&text[..i], 60),
            Some((i, 'h')) => (&text[..i], 3600),
            Some((i, 'd')) => (&text[..i], 86_400),
            _ => (text, 1),
        };
        let count: u64 =
            digits.parse().map_err(|_| format!("`{text}` is not a duration such as 3600, 90s, 30m, 48h, 2d"))?;
        let seconds = count.checked_mul(unit_seconds).filter(|s| (1..=LIFETIME_SECONDS_MAX).contains(s));
        seconds
            .map(|s| Lifetime(std::time::Duration::from_secs(s)))
            .ok_or_else(|| format!("`{text}`: between 1 second and 366 days"))
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
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

#[cfg(test)]
mod tests {
    use super::Lifetime;

    #[test]
    fn lifetimes() {
        let seconds = |text: &str| text.parse::<Lifetime>().map(|l| l.0.as_secs());
        assert_eq!(seconds("2d"), Ok(172_800));
        assert_eq!(seconds("48h"), Ok(172_800));
        assert_eq!(seconds("30m"), Ok(1800));
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("3600"), Ok(3600));
        assert!(seconds("0").is_err());
        assert!(seconds("400d").is_err());
        assert!(seconds("2w").is_err());
        assert!(seconds("").is_err());
    }
}
