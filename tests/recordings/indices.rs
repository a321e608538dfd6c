//! Chunk indices: one counter for every instance, every chunk once, and the
//! repair when the counter goes backwards.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::client::{rec_app, stored_chunks, RecApp};
use crate::harness;
use crate::helpers::Backend;

/// A chunk nobody else sends: its number and random bytes.
fn unique_chunk(n: usize) -> Vec<u8> {
    let mut bytes = format!("chunk {n} ").into_bytes();
    bytes.extend((0..512 + n % 997).map(|_| rand::random::<u8>()));
    bytes
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `uploaders` tasks, spread over `apps`, send `total` chunks to one
/// recording; returns index -> digest of what each answer acknowledged.
async fn upload_concurrently(
    apps: &[Arc<RecApp>],
    record: &str,
    uploaders: usize,
    total: usize,
) -> BTreeMap<u64, [u8; 32]> {
    let mut tasks = Vec::new();
    for u in 0..uploaders {
        let app = apps[u % apps.len()].clone();
        let record = record.to_string();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in (u..total).step_by(uploaders) {
                let chunk = unique_chunk(n);
                let index = app.chunk(&record, chunk.clone()).await;
                acked.push((index, digest(&chunk)));
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for (index, hash) in task.await.expect("uploader") {
            assert!(
                acked.insert(index, hash).is_none(),
                "index {index} given twice"
            );
        }
    }
    acked
}

/// The stored files are exactly the acknowledged chunks.
fn assert_stored(app: &RecApp, record: &str, acked: &BTreeMap<u64, [u8; 32]>) {
    let stored: BTreeMap<u64, [u8; 32]> = stored_chunks(&app.chunk_dir(record))
        .into_iter()
        .map(|(i, b)| (i, digest(&b)))
        .collect();
    assert_eq!(
        &stored, acked,
        "every acknowledged chunk stored, byte for byte"
    );
}

async fn indices_never_collide(backend: Backend) {
    let first = Arc::new(rec_app(backend, &[]).await);
    let mut apps = vec![first.clone()];
    if backend != Backend::Memory {
        apps.push(Arc::new(first.sibling().await));
    }
    let record = first.start().await["record_id"]
        .as_str()
        .unwrap()
        .to_string();
    let total = 400;
    let acked = upload_concurrently(&apps, &record, 8, total).await;
    let indices: HashSet<u64> = acked.keys().copied().collect();
    assert_eq!(
        indices,
        (0..total as u64).collect::<HashSet<u64>>(),
        "indices exactly 0..{total}, each once"
    );
    assert_stored(&first, &record, &acked);
    let (_, status) = first.status(&record).await;
    assert_eq!(status["chunks"], total as u64);
}

crate::on_every_backend!(indices_never_collide);

/// The counter set back behind the stored chunks (as a failover that lost
/// the last increments leaves it): the next chunk meets a stored index,
/// the counter is moved past the highest one, nothing is overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_went_backwards_is_repaired() {
    let app = rec_app(Backend::Single, &[]).await;
    let record = app.start().await["record_id"].as_str().unwrap().to_string();
    let mut acked = BTreeMap::new();
    for n in 0..5 {
        let chunk = unique_chunk(n);
        acked.insert(app.chunk(&record, chunk.clone()).await, digest(&chunk));
    }
    let counter = format!("{}recording:{record}:chunk_index", app.app.prefix);
    let redis = &harness::shared_single().node;
    assert_eq!(redis.cli(&["GET", &counter]).trim(), "5");
    redis.cli(&["SET", &counter, "2", "KEEPTTL"]);

    let chunk = unique_chunk(100);
    let index = app.chunk(&record, chunk.clone()).await;
    assert_eq!(index, 5, "a fresh index past the highest stored one");
    acked.insert(index, digest(&chunk));
    assert_eq!(redis.cli(&["GET", &counter]).trim(), "6");
    assert_stored(&app, &record, &acked);
    let (_, health) = app.app.get("/api/health").await;
    assert_eq!(
        health["recordings"]["index_collisions_repaired"], 1,
        "{health}"
    );
    // And it keeps counting from there.
    assert_eq!(app.chunk(&record, unique_chunk(101)).await, 6);
}

/// The counter and the record live `recordings.retention_hours` in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_and_the_record_expire_with_the_retention() {
    let app = rec_app(
        Backend::Single,
        &[("BROKER__RECORDINGS__RETENTION_HOURS", "2")],
    )
    .await;
    let record = app.start().await["record_id"].as_str().unwrap().to_string();
    app.chunk(&record, unique_chunk(0)).await;
    let prefix = &app.app.prefix;
    let retention_ms = 2 * 3600 * 1000;
    for key in [
        format!("{prefix}recording:{record}:chunk_index"),
        format!("{prefix}rec:{{{record}}}"),
    ] {
        let ttl = app.app.key_ttl_ms(&key).await;
        assert!(
            (retention_ms - 60_000..=retention_ms).contains(&ttl),
            "{key}: PTTL {ttl}"
        );
    }
}
