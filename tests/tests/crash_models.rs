//! Crash test of the read models' snapshots: a process follows a growing log and saves a
//! snapshot after every chunk; it is killed with SIGKILL at random moments, many of them
//! in the middle of writing a snapshot. After every kill the models reopen from whatever
//! the kill left, catch up with the log, and must equal models built from the whole log
//! in one go, byte for byte.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::{EventStore, READ_EVENTS_MAX, SledStore};
use projections::{ReadModels, spawn_projector};

const KILL_CYCLES: usize = 12;

/// A pseudo-random delay, different every cycle, without a dependency.
fn kill_delay(cycle: usize) -> Duration {
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ (cycle as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let jitter = seed.wrapping_mul(6364136223846793005).rotate_left(17) % 500;
    Duration::from_millis(250 + jitter + (cycle as u64 % 4) * 61)
}

/// The models built from the whole durable log of `store` in one chunk at a time.
async fn built_in_one_go(store: &Arc<dyn EventStore>, dir: &std::path::Path) -> Vec<u8> {
    let models = ReadModels::open(dir, store.clone()).unwrap();
    let mut from = 1;
    loop {
        let chunk = store.read_all(from, READ_EVENTS_MAX).await.unwrap();
        let Some(last) = chunk.last() else { break };
        from = last.position + 1;
        models.apply_chunk(&chunk).unwrap();
    }
    let encoded = models.encoded();
    std::fs::remove_dir_all(dir).unwrap();
    encoded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_reopen_equal_to_the_log_after_sigkill_mid_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut resumed_from_snapshot, mut partial_left_behind) = (0, 0);
    for cycle in 0..KILL_CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_models"))
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the projector");
        tokio::time::sleep(kill_delay(cycle)).await;
        assert!(child.try_wait().unwrap().is_none(), "the projector died on its own in cycle {cycle}");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();

        let views = data.join("views");
        if views.join("models.partial").exists() {
            partial_left_behind += 1;
        }
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(data.join("events")).expect("store reopens"));
        let models = ReadModels::open(&views, store.clone()).expect("models reopen after a kill");
        if models.position() > 0 {
            resumed_from_snapshot += 1;
        }
        let head = store.head().await.unwrap();
        let projector = spawn_projector(models.clone(), store.clone());
        models.wait_for(head - 1, Duration::from_secs(30)).await.unwrap();
        projector.stop().await.unwrap();
        let expected = built_in_one_go(&store, &dir.path().join("fresh")).await;
        assert!(models.encoded() == expected, "cycle {cycle}: the reopened models differ from the log's");
    }
    // The kills did land where they matter: some restarts resumed from a snapshot, and
    // some kills cut a snapshot short.
    assert!(resumed_from_snapshot >= KILL_CYCLES / 2, "only {resumed_from_snapshot} restarts used a snapshot");
    assert!(partial_left_behind > 0, "no kill landed while a snapshot was being written");
}
