//! The victim of the read models' crash test: follows a log that grows all the time and
//! saves the models' snapshot after every chunk, so that a kill lands mid-save more often
//! than not. Usage: `crash_models DATA_DIR`. Runs until killed.

use std::sync::Arc;
use std::time::Duration;

use eventlog::testing::append_synthetic_book;
use eventlog::{EventStore, SledStore};
use projections::{ReadModels, SnapshotPolicy, spawn_projector};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = std::path::PathBuf::from(std::env::args().nth(1).expect("DATA_DIR"));
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(data.join("events")).expect("open store"));
    let models = ReadModels::open(&data.join("views"), store.clone()).expect("open models");
    models.set_snapshot_policy(SnapshotPolicy { events: 1, interval: Duration::ZERO });
    let _projector = spawn_projector(models, store.clone());
    println!("started");
    loop {
        append_synthetic_book(&*store, 500, 2).await;
    }
}
