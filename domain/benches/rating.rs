//! Rating throughput: a 50,000-prefix tariff pricing varied CDRs on one core.
//!
//! `cargo bench -p tollbook-domain --bench rating -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::rating::{Rate, Rounding, RoundingMode, Tariff};
use domain::rating_engine::CompiledTariff;
use domain::{Amount, Currency, TariffId, Timestamp};
use rust_decimal::Decimal;

const PREFIXES: usize = 50_000;
const CDRS: usize = 1 << 20;
const BATCH: usize = 4096;

/// A small deterministic generator, so every run rates the same calls.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, out: &mut String, count: usize) {
        for _ in 0..count {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

fn tariff(rng: &mut Lcg) -> Tariff {
    let increments = [(60, 60), (30, 6), (1, 1)];
    let mut seen = std::collections::HashSet::new();
    let mut rates = Vec::with_capacity(PREFIXES);
    // Single digits first so that every callee has some rate, as in real A-Z tariffs.
    let mut candidates: Vec<String> = (1..=9).map(|d| d.to_string()).collect();
    while rates.len() < PREFIXES {
        let prefix = candidates.pop().unwrap_or_else(|| {
            // Country-code-like start, then 1-6 more digits: a realistic, shared trie.
            let mut p = (1 + rng.below(9)).to_string();
            let extra = 1 + rng.below(7) as usize;
            rng.digits(&mut p, extra);
            p
        });
        if !seen.insert(prefix.clone()) {
            continue;
        }
        let (first, next) = increments[rng.below(3) as usize];
        rates.push(Rate {
            prefix,
            price_per_minute: Amount(Decimal::new(rng.below(50_000) as i64, 5)),
            connect_fee: Amount(Decimal::new(if rng.below(4) == 0 { rng.below(1000) as i64 } else { 0 }, 4)),
            minimum_seconds: if rng.below(5) == 0 { 30 } else { 0 },
            first_increment_seconds: first,
            next_increment_seconds: next,
        });
    }
    Tariff {
        id: TariffId::new(),
        name: "bench A-Z".to_owned(),
        currency: Currency::parse("USD").unwrap(),
        effective_from: Timestamp::from_seconds(0),
        rounding: Rounding { decimals: 5, mode: RoundingMode::Up },
        rates,
    }
}

struct Cdr {
    callee: String,
    billable: u32,
    answered: bool,
}

fn cdrs(rng: &mut Lcg, tariff: &Tariff) -> Vec<Cdr> {
    (0..CDRS)
        .map(|_| {
            // A rate's prefix plus subscriber digits up to an E.164-like 11-13 digits.
            let mut callee = String::with_capacity(16);
            callee.push('+');
            callee.push_str(&tariff.rates[rng.below(tariff.rates.len() as u64) as usize].prefix);
            let rest = (11 + rng.below(3) as usize).saturating_sub(callee.len() - 1);
            rng.digits(&mut callee, rest);
            let answered = rng.below(10) != 0;
            Cdr { callee, billable: if answered { rng.below(900) as u32 } else { 0 }, answered }
        })
        .collect()
}

fn rate_all(compiled: &CompiledTariff, cdrs: &[Cdr]) -> Decimal {
    let mut total = Decimal::ZERO;
    for cdr in cdrs {
        let rating =
            compiled.rate(black_box(&cdr.callee), cdr.billable, cdr.answered).expect("every callee has a rate");
        total += rating.cost.0;
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut rng = Lcg(0x5eed);
    let tariff = tariff(&mut rng);
    let started = Instant::now();
    let compiled = CompiledTariff::compile(&tariff).unwrap();
    println!("compiled {} prefixes in {:?}", compiled.len(), started.elapsed());
    let cdrs = cdrs(&mut rng, &tariff);

    // One plain timed pass over all CDRs, printed as CDRs/s.
    let _ = rate_all(&compiled, &cdrs);
    let started = Instant::now();
    let total = black_box(rate_all(&compiled, &cdrs));
    let elapsed = started.elapsed();
    println!(
        "rated {CDRS} CDRs in {elapsed:?}: {:.0} CDRs/s (total cost {total})",
        CDRS as f64 / elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("rating");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut offset = 0;
    group.bench_function("50k_prefixes", |b| {
        b.iter(|| {
            // Walk through all CDRs batch by batch so the caches see varied callees.
            let batch = &cdrs[offset..offset + BATCH];
            offset = (offset + BATCH) % CDRS;
            rate_all(&compiled, batch)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
