//! Loads the read models' snapshot of a data directory and prints the time it took and
//! the process's memory before and after: the models' memory cost, apart from the server.
//!
//! cargo run --release -p tollbook-projections --example load_models -- DATA_DIR

use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM")).collect::<Vec<_>>().join(", ")
}

#[tokio::main]
async fn main() {
    let data = std::path::PathBuf::from(std::env::args().nth(1).expect("DATA_DIR"));
    let store: Arc<dyn eventlog::EventStore> =
        Arc::new(eventlog::SledStore::open(data.join("events")).expect("an event log in DATA_DIR/events"));
    println!("store open: {}", memory());
    let started = std::time::Instant::now();
    let models = projections::ReadModels::open(&data.join("views"), store).expect("the read models");
    println!("models at position {} loaded in {:.2?}: {}", models.position(), started.elapsed(), memory());
}
