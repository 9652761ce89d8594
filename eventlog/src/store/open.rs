//! Choosing the event store from configuration (`--store`): one string names the backend
//! and where it is.
//!
//! - `sled:<directory>`: the embedded store in that directory (the default,
//!   [`DEFAULT_STORE_SPEC`]).
//! - a KurrentDB connection string, as the official client takes it:
//!   `kurrentdb://host:2113?tls=false`, `kurrentdb://user:password@a:2113,b:2113,c:2113`,
//!   `kurrentdb+discover://cluster.example:2113`, and the same with the older `esdb` scheme
//!   (also `kurrent` and `kdb`). Needs the `kurrentdb` cargo feature.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::StoreError;
use crate::store::EventStore;
use crate::store::sled::SledStore;

/// The store when none is configured: sled in `./data/events`.
pub const DEFAULT_STORE_SPEC: &str = "sled:./data/events";

const SLED_PREFIX: &str = "sled:";

/// The schemes of KurrentDB connection strings that the client understands.
const KURRENTDB_SCHEMES: [&str; 8] =
    ["kurrentdb", "kurrentdb+discover", "esdb", "esdb+discover", "kurrent", "kurrent+discover", "kdb", "kdb+discover"];

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sled(PathBuf),
    /// A KurrentDB connection string, passed to the client as it is.
    KurrentDb(String),
}

impl StoreSpec {
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        let spec = spec.trim();
        if let Some(path) = spec.strip_prefix(SLED_PREFIX) {
            if path.is_empty() {
                return Err(StoreError::Config("`sled:` needs a directory, e.g. `sled:./data/events`".into()));
            }
            return Ok(StoreSpec::Sled(PathBuf::from(path)));
        }
        let scheme = spec.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme {
            Some(scheme) if KURRENTDB_SCHEMES.contains(&scheme.as_str()) => Ok(StoreSpec::KurrentDb(spec.to_string())),
            _ => Err(StoreError::Config(format!(
                "unknown store `{}`: expected `sled:<directory>` or a KurrentDB connection string such as \
                 `kurrentdb://host:2113?tls=false`",
                redact(spec)
            ))),
        }
    }

    /// Opens the store. A KurrentDB store is connected to and asked for its head, so that
    /// a wrong address fails here.
    pub async fn open(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        match self {
            StoreSpec::Sled(path) => {
                let path = path.clone();
                // Opening sled reads its files: keep that off the async threads.
                let store = tokio::task::spawn_blocking(move || SledStore::open(path))
                    .await
                    .map_err(|e| StoreError::Io(e.to_string()))??;
                Ok(Arc::new(store))
            }
            StoreSpec::KurrentDb(connection) => open_kurrentdb(connection).await,
        }
    }
}

#[cfg(feature = "kurrentdb")]
async fn open_kurrentdb(connection: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    Ok(Arc::new(crate::store::kurrentdb::KurrentDbStore::connect(connection).await?))
}

#[cfg(not(feature = "kurrentdb"))]
async fn open_kurrentdb(connection: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    Err(StoreError::Config(format!(
        "`{}` names a KurrentDB store, but this build of tollbook has no KurrentDB backend: rebuild with \
         `--features kurrentdb` (cargo feature `kurrentdb` of tollbook-eventlog, forwarded by tollbook)",
        redact(connection)
    )))
}

/// Parses `spec` and opens the store it names.
pub async fn open_store(spec: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    StoreSpec::parse(spec)?.open().await
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        StoreSpec::parse(spec)
    }
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec::parse(DEFAULT_STORE_SPEC).expect("the default store spec parses")
    }
}

/// Shown with any password replaced, so that the spec can be logged.
impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sled(path) => write!(f, "{SLED_PREFIX}{}", path.display()),
            StoreSpec::KurrentDb(connection) => f.write_str(&redact(connection)),
        }
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:password@hosts…` with the password replaced by `***`.
fn redact(connection: &str) -> String {
    let Some((scheme, rest)) = connection.split_once("://") else { return connection.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, hosts)) = authority.rsplit_once('@') else { return connection.to_string() };
    let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
    format!("{scheme}://{user}:***@{hosts}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_spec_names_a_directory() {
        assert_eq!(StoreSpec::parse("sled:./data/events").unwrap(), StoreSpec::Sled("./data/events".into()));
        assert_eq!(StoreSpec::default(), StoreSpec::Sled("./data/events".into()));
        assert!(matches!(StoreSpec::parse("sled:"), Err(StoreError::Config(_))));
    }

    #[test]
    fn kurrentdb_connection_strings_are_kept_whole() {
        for spec in [
            "kurrentdb://localhost:2113?tls=false",
            "esdb://admin:changeit@a:2113,b:2113,c:2113?tls=true&nodePreference=leader",
            "kurrentdb+discover://cluster.example:2113",
            "ESDB://localhost:2113?tls=false",
        ] {
            assert_eq!(StoreSpec::parse(spec).unwrap(), StoreSpec::KurrentDb(spec.into()), "{spec}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for spec in ["", "./data", "postgres://localhost/db", "kurrentdb:localhost"] {
            let error = StoreSpec::parse(spec).unwrap_err().to_string();
            assert!(error.contains("sled:<directory>") && error.contains("kurrentdb://"), "{spec}: {error}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let spec = StoreSpec::parse("kurrentdb://tollbook:s3cret@a:2113,b:2113/?tls=true").unwrap();
        assert_eq!(spec.to_string(), "kurrentdb://tollbook:***@a:2113,b:2113/?tls=true");
        assert!(!format!("{spec:?}").contains("s3cret"));
        assert_eq!(redact("esdb://localhost:2113?tls=false"), "esdb://localhost:2113?tls=false");
        let refused = StoreSpec::parse("mongodb://u:s3cret@h").unwrap_err().to_string();
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[cfg(not(feature = "kurrentdb"))]
    #[tokio::test]
    async fn without_the_feature_a_kurrentdb_store_names_the_feature() {
        let error = open_store("kurrentdb://localhost:2113?tls=false").await.err().expect("refused").to_string();
        assert!(error.contains("--features kurrentdb"), "{error}");
    }
}
