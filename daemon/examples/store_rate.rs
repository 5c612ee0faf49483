//! Rough figures for the store and the engine on this machine (not the
//! project's benchmark, which compares against raw baselines):
//! `cargo run --release -p orgsync-daemon --example store_rate`
//!
//! 1. local writes per second with N concurrent writers of one change each
//!    (group commit shares flushes);
//! 2. the same with writers of 100-change batches.

use std::time::Instant;

use orgsync_daemon::store::{Edit, Store, StoreOptions};
use orgsync_protocol::model::{Kind, ObjectId, Value};

fn contact(i: u64) -> Edit {
    Edit::new(ObjectId::new_v7(1_700_000_000_000 + i), Kind::Contact)
        .set_std("first_name", Value::Text(format!("First{i}")))
        .set_std("last_name", Value::Text("Lastname-of-a-contact".into()))
        .set_std("email", Value::Text(format!("person{i}@example.org")))
        .set_std("phone", Value::Text("+33 1 23 45 67 89".into()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (writers, per_write, total) in [(1u64, 1u64, 2_000u64), (64, 1, 20_000), (8, 100, 100_000)]
    {
        let dir = tempfile::tempdir()?;
        let store = Store::open_with(dir.path(), StoreOptions::default())?;
        let flushes0 = store.flush_count();
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut i = w * 1_000_000_000;
                    for _ in 0..total / writers / per_write {
                        let edits = (0..per_write).map(|k| contact(i + k)).collect();
                        i += per_write;
                        store.write(edits).await?;
                    }
                    Ok::<_, orgsync_daemon::store::StoreError>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{writers:>3} writers x {per_write:>3} changes/write: {:>8.0} changes/s, {} flushes for {} writes",
            store.log_head() as f64 / secs,
            store.flush_count() - flushes0,
            store.log_head() / per_write,
        );
    }
    Ok(())
}
