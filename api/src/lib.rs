//! tollbook's HTTP API, its server and its command-line tasks, as a library: the
//! `tollbook` binary is a thin command line over it, and tests can run the server's
//! parts in process.

use std::net::SocketAddr;
use std::path::PathBuf;

mod auth;
mod body;
mod csv_out;
pub mod dataset;
mod error;
mod flush;
pub mod import;
pub mod invoicing;
mod links;
pub mod maintenance;
mod metrics;
mod notify;
mod openapi;
pub mod plans_cli;
mod portal;
mod query;
mod routes;
pub mod server;
mod service;
mod state;
mod write;

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
    /// Writer tasks the books are spread over (each decides its books' commands in
    /// rounds, one append per round); by default one per two cores.
    #[arg(long = "writer-shards", env = "TOLLBOOK_WRITER_SHARDS",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub writer_shards: Option<u16>,
}

impl ServeArgs {
    /// `serve`'s arguments from its flags (without the `serve` itself), with the
    /// environment and defaults filling the rest, as the command line would: for tests
    /// and programs that open the server in process ([`server::Running`]).
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{Args as _, FromArgMatches as _};
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let flags = std::iter::once(std::ffi::OsString::from("serve")).chain(flags.into_iter().map(Into::into));
        ServeArgs::from_arg_matches(&command.try_get_matches_from(flags)?)
    }
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
