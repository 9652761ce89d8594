//! Rating through the ledger on the real sled store: the costs a CDR was charged live are
//! exactly what rating it again gives after a restart (the tariff catalog rebuilt from
//! the log), tariff versions included.

use std::sync::Arc;

use commands::{EventStore, Ledger, SledStore};
use domain::cdr::{CdrInput, TariffVersion};
use domain::rating::{CallDirection, Rate, Rounding, RoundingMode, Tariff};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, Currency, Payload, TariffId, Timestamp};
use proptest::prelude::*;

const PREFIXES: [&str; 5] = ["4", "49", "4930", "441", "44"];
/// Calls start over twenty days from here; a tariff's second version starts on day ten.
const DAY0: i64 = 1_767_225_600;

fn rates() -> impl Strategy<Value = Vec<Rate>> {
    let rate =
        (0usize..PREFIXES.len(), 0u32..500, 0u32..30, 0u32..90, prop_oneof![Just(1u32), Just(6), Just(30), Just(60)])
            .prop_map(|(prefix, cents, fee, minimum, increment)| Rate {
                prefix: PREFIXES[prefix].to_owned(),
                price_per_minute: amount(&format!("{}.{:02}", cents / 100, cents % 100)),
                connect_fee: amount(&format!("0.{fee:02}")),
                minimum_seconds: minimum,
                first_increment_seconds: increment,
                next_increment_seconds: increment,
            });
    // "4" always present, so that every call to 4… has a rate.
    prop::collection::vec(rate, 0..5).prop_map(|mut rates| {
        rates.retain(|r| r.prefix != "4");
        rates.push(Rate {
            prefix: "4".into(),
            price_per_minute: amount("0.30"),
            connect_fee: amount("0"),
            minimum_seconds: 0,
            first_increment_seconds: 60,
            next_increment_seconds: 60,
        });
        let mut seen = std::collections::HashSet::new();
        rates.retain(|r| seen.insert(r.prefix.clone()));
        rates
    })
}

fn tariff(id: TariffId, rates: Vec<Rate>, effective_day: i64, decimals: u32) -> Tariff {
    Tariff {
        id,
        name: "t".into(),
        currency: Currency::parse("EUR").unwrap(),
        effective_from: Timestamp::from_seconds(DAY0 + effective_day * 86_400),
        rounding: Rounding { decimals, mode: RoundingMode::HalfUp },
        rates,
    }
}

fn calls() -> impl Strategy<Value = Vec<(usize, u32, i64, bool)>> {
    prop::collection::vec((0usize..PREFIXES.len(), 0u32..3_600, 0i64..20 * 86_400, any::<bool>()), 1..40)
}

fn cdr(index: usize, (prefix, seconds, offset, answered): (usize, u32, i64, bool)) -> CdrInput {
    let start = Timestamp::from_seconds(DAY0 + offset);
    CdrInput {
        id: format!("cdr-{index}"),
        account: "C-1".into(),
        caller: "1".into(),
        callee: format!("{}{index:05}", PREFIXES[prefix]),
        start,
        answer: answered.then_some(start),
        end: start.add_seconds(i64::from(seconds)),
        billable_seconds: if answered { seconds } else { 0 },
        hangup_cause: 16,
        direction: CallDirection::Outbound,
        cost: None,
        partner_cost: None,
        hangup_cause_raw: None,
        hangup_cause_flag: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn live_and_replayed_rating_agree(
        retail in rates(), retail_next in rates(), wholesale in rates(), decimals in 0u32..6, calls in calls(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
            let (partner, customer) = (AccountId::new(), AccountId::new());
            let (retail_id, wholesale_id) = (TariffId::new(), TariffId::new());
            let cdrs: Vec<CdrInput> = calls.into_iter().enumerate().map(|(i, c)| cdr(i, c)).collect();
            let versions = [
                TariffVersion::new(tariff(retail_id, retail.clone(), 0, decimals)).unwrap(),
                TariffVersion::new(tariff(retail_id, retail_next.clone(), 10, decimals)).unwrap(),
            ];
            let live = {
                let ledger = Ledger::open(store.clone()).await.unwrap();
                ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
                ledger.execute(open_customer(customer, Some(partner), "C-1", "0"), meta()).await.unwrap();
                ledger.publish_tariff(BookId::OPERATOR, tariff(wholesale_id, wholesale, 0, decimals), meta()).await.unwrap();
                ledger.publish_tariff(BookId::of_partner(partner), tariff(retail_id, retail, 0, decimals), meta()).await.unwrap();
                ledger.publish_tariff(BookId::of_partner(partner), tariff(retail_id, retail_next, 10, decimals), meta()).await.unwrap();
                ledger.assign_tariff(partner, Some(wholesale_id), meta()).await.unwrap();
                ledger.assign_tariff(customer, Some(retail_id), meta()).await.unwrap();
                let outcomes = ledger.charge_cdrs(cdrs.clone(), &meta()).await;
                let charged: Vec<_> = outcomes
                    .into_iter()
                    .map(|o| match &o.unwrap().events[0].event.payload {
                        Payload::CallCharged(call) => call.clone(),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                ledger.shutdown().await;
                charged
            };
            // A fresh ledger over the same log: the catalog and assignments come from events.
            let ledger = Ledger::open(store).await.unwrap();
            for (cdr, charged) in cdrs.iter().zip(&live) {
                let again = ledger.rate(cdr).unwrap();
                prop_assert_eq!(again.customer_cost, charged.customer_cost);
                prop_assert_eq!(again.partner_cost, charged.partner_cost);
                prop_assert_eq!(&again.cdr, &charged.cdr);
                // The version in force at the call's start priced it.
                let day = (cdr.start.micros() / 1_000_000 - DAY0) / 86_400;
                if cdr.charged() {
                    let version = &versions[usize::from(day >= 10)];
                    let expected = version.compiled.rate(&cdr.callee, cdr.billable_seconds, true).unwrap();
                    prop_assert_eq!(charged.customer_cost, expected.cost);
                    prop_assert_eq!(charged.cdr.customer_tariff, Some(retail_id));
                } else {
                    prop_assert_eq!(charged.customer_cost, amount("0"));
                }
            }
            Ok(())
        })?;
    }
}

/// A CDR id already charged stays a duplicate when it can no longer be rated (its
/// customer's tariff unassigned since): a rerun of an old file is answered "duplicate",
/// with the first charge, and charges nothing.
#[tokio::test]
async fn a_charged_cdr_that_can_no_longer_be_rated_is_still_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let ledger = Ledger::open(store.clone()).await.unwrap();
    let customer = AccountId::new();
    ledger.execute(open_customer(customer, None, "C-1", "0"), meta()).await.unwrap();
    let retail = TariffId::new();
    let rates = vec![Rate {
        prefix: "4".into(),
        price_per_minute: amount("0.60"),
        connect_fee: amount("0"),
        minimum_seconds: 0,
        first_increment_seconds: 1,
        next_increment_seconds: 1,
    }];
    ledger.publish_tariff(BookId::OPERATOR, tariff(retail, rates, 0, 2), meta()).await.unwrap();
    ledger.assign_tariff(customer, Some(retail), meta()).await.unwrap();
    let call = cdr(7, (0, 90, 3_600, true));
    let first = ledger.charge_cdr(&call, meta()).await.unwrap();
    assert!(!first.repeated);

    ledger.assign_tariff(customer, None, meta()).await.unwrap();
    let unknown = cdr(8, (0, 90, 3_600, true));
    assert!(ledger.charge_cdr(&unknown, meta()).await.is_err(), "a new CDR without a tariff is refused");
    let head = store.head().await.unwrap();
    let again = ledger.charge_cdr(&call, meta()).await.unwrap();
    assert!(again.repeated);
    // A duplicate CDR answers with its charge (not the alert the charge also raised).
    assert_eq!(again.events, first.events[..1]);
    assert_eq!(store.head().await.unwrap(), head, "nothing charged twice");
}
