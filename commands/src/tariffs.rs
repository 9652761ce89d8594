//! The ledger-wide tariff catalog: every version of every published tariff, compiled
//! for rating. A tariff lives in the book that published it (the operator's, or a
//! partner's retail list), but calls of other books are priced with it (a partner's
//! wholesale tariff is the operator's), so rating looks tariffs up here rather than in
//! one book's state. Rebuilt from the log at start and kept current by the writers'
//! commit hook, like the account index.

use std::collections::HashMap;
use std::sync::Arc;

use domain::cdr::TariffVersion;
use domain::rating::Tariff;
use domain::{BookId, Payload, RecordedEvent, TariffId, Timestamp};

/// A tariff's versions, oldest first, and the book that published it.
#[derive(Clone, Debug)]
pub struct TariffHistory {
    pub book: BookId,
    pub versions: Vec<Arc<TariffVersion>>,
}

impl TariffHistory {
    /// The version in force at `at`: the latest that took effect at or before it.
    pub fn in_force(&self, at: Timestamp) -> Option<&Arc<TariffVersion>> {
        self.versions.iter().rev().find(|v| v.tariff.effective_from <= at)
    }

    pub fn current(&self) -> &Tariff {
        &self.versions.last().expect("a history has at least one version").tariff
    }
}

#[derive(Clone, Debug, Default)]
pub struct TariffCatalog {
    tariffs: HashMap<TariffId, TariffHistory>,
}

impl TariffCatalog {
    pub(crate) fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) {
        for recorded in events {
            let Payload::TariffPublished(published) = &recorded.event.payload else { continue };
            // The book's rules compiled this tariff before accepting it; one that no
            // longer compiles (a stricter rule in a later release) cannot rate calls,
            // and the calls it would rate are refused with `no_tariff` instead.
            let Ok(version) = TariffVersion::new(published.tariff.clone()) else {
                tracing::warn!(tariff = %published.tariff.id, "a published tariff no longer compiles");
                continue;
            };
            let history = self
                .tariffs
                .entry(published.tariff.id)
                .or_insert_with(|| TariffHistory { book: recorded.event.envelope.book, versions: Vec::new() });
            history.versions.push(Arc::new(version));
        }
    }

    /// Every published version of every tariff, per tariff oldest first, with its book:
    /// what [`TariffCatalog::from_published`] rebuilds the catalog from.
    pub fn published(&self) -> Vec<(BookId, Vec<Tariff>)> {
        self.tariffs.values().map(|h| (h.book, h.versions.iter().map(|v| v.tariff.clone()).collect())).collect()
    }

    /// The catalog of these published versions, compiled again (a version that no longer
    /// compiles is left out, as [`TariffCatalog::apply`] leaves it out).
    pub fn from_published(published: Vec<(BookId, Vec<Tariff>)>) -> Self {
        let mut catalog = TariffCatalog::default();
        for (book, versions) in published {
            for tariff in versions {
                let Ok(version) = TariffVersion::new(tariff) else { continue };
                let history = catalog
                    .tariffs
                    .entry(version.tariff.id)
                    .or_insert_with(|| TariffHistory { book, versions: Vec::new() });
                history.versions.push(Arc::new(version));
            }
        }
        catalog
    }

    pub fn get(&self, id: TariffId) -> Option<&TariffHistory> {
        self.tariffs.get(&id)
    }

    /// Every tariff's history, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &TariffHistory> {
        self.tariffs.values()
    }
}
