//! A recording's whole life: start, chunks of both kinds, stop, merge,
//! status from any instance, download with Range and ETag.

use std::time::Duration;

use crate::client::{read, rec_app, rec_app_in, stored_chunks, RecApp};
use crate::helpers::Backend;
use crate::media;

const MERGE_WAIT: Duration = Duration::from_secs(60);

/// Uploads `pieces` in order (alternating instances when given two),
/// stops on the last one, waits for the merge; returns the record id and
/// the final status.
async fn record(apps: &[&RecApp], pieces: Vec<Vec<u8>>) -> (String, serde_json::Value) {
    let started = apps[0].start().await;
    let record = started["record_id"].as_str().unwrap().to_string();
    assert_eq!(started["state"], "recording");
    assert!(started["ws_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/ws/recordings/{record}")));
    let token = started["upload_token"].as_str().unwrap().to_string();
    for (i, piece) in pieces.into_iter().enumerate() {
        let app = apps[i % apps.len()];
        // Upload token and API key both work.
        let (status, body) = if i % 2 == 0 {
            app.chunk_as(&record, &token, piece).await
        } else {
            app.chunk_as(&record, crate::client::API_KEY, piece).await
        };
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["index"], i as u64, "indices start at 0, one per chunk");
    }
    let last = apps[apps.len() - 1];
    let (status, body) = last.stop(&record).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "merging");
    let done = apps[0].finished(&record, MERGE_WAIT).await;
    (record, done)
}

/// Downloads the result and checks it with ffprobe/ffmpeg.
async fn check_result(app: &RecApp, done: &serde_json::Value, expected_s: f64) -> Vec<u8> {
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["error"].is_null());
    let url = done["download_url"].as_str().unwrap();
    let (status, headers, bytes) = app.download(url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "video/webm");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    let file = app.dirs.path().join("downloaded.webm");
    std::fs::write(&file, &bytes).unwrap();
    let duration = media::probe_duration(&file);
    assert!(
        (duration - expected_s).abs() <= 0.1,
        "merged duration {duration} s, expected {expected_s} s"
    );
    let reported = done["duration_s"].as_f64().unwrap();
    assert!(
        (reported - duration).abs() < 0.01,
        "{reported} vs {duration}"
    );
    media::decodes_cleanly(&file).expect("the merged file decodes without errors");
    assert!(media::is_seekable(&file), "the merged file has Cues");
    bytes
}

async fn independent_files_merge_into_one(backend: Backend) {
    let app = rec_app(backend, &[]).await;
    let media_dir = tempfile::tempdir().unwrap();
    let pieces: Vec<Vec<u8>> = media::independent_webms(media_dir.path(), 5, 1.0)
        .iter()
        .map(|p| read(p))
        .collect();
    let bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let mut apps = vec![app];
    if backend != Backend::Memory {
        apps.push(apps[0].sibling().await);
    }
    let refs: Vec<&RecApp> = apps.iter().collect();
    let (record, done) = record(&refs, pieces).await;
    assert_eq!(done["chunks"], 5);
    assert_eq!(done["bytes"], bytes);
    check_result(&apps[0], &done, 5.0).await;
    // The chunks go, and the merge is counted, just after the record says
    // `ready` (the result is stored first).
    let dropped = crate::helpers::eventually(Duration::from_secs(10), || async {
        stored_chunks(&apps[0].chunk_dir(&record)).is_empty()
    })
    .await;
    assert!(dropped, "chunks are removed after a good merge");
    // The instance that took the stop merged; every instance counts what it stored.
    let counted = crate::helpers::eventually(Duration::from_secs(10), || async {
        let merged_on = metrics(apps.last().unwrap()).await;
        merged_on(r#"rtc_recording_merges_total{outcome="ready"}"#) >= 1.0
            && merged_on("rtc_recording_merge_duration_seconds_count") >= 1.0
    })
    .await;
    assert!(counted, "the merge is counted where it ran");
    let mut stored = 0.0;
    for app in &apps {
        stored += metrics(app).await("rtc_recording_chunks_stored_total");
    }
    assert_eq!(stored, 5.0);
}

/// A scrape of `/metrics`, as a lookup of one series' value.
async fn metrics(app: &RecApp) -> impl Fn(&str) -> f64 {
    let scrape = app.app.metrics().await;
    move |series: &str| {
        scrape
            .value(series)
            .unwrap_or_else(|| panic!("{series} missing:\n{}", scrape.0))
    }
}

crate::on_every_backend!(independent_files_merge_into_one);

/// One continuous recording cut at arbitrary byte offsets (only the first
/// piece has a header), as MediaRecorder with a timeslice produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_into_pieces_merges_with_its_duration() {
    let app = rec_app(Backend::Memory, &[("CLEANUP_CHUNKS", "false")]).await;
    let media_dir = tempfile::tempdir().unwrap();
    let source = media::continuous_webm(media_dir.path(), 5.0);
    let expected = media::probe_duration(&source);
    let pieces = media::cut_at_offsets(&source, 7);
    let (record, done) = record(&[&app], pieces.clone()).await;
    check_result(&app, &done, expected).await;
    let kept: Vec<Vec<u8>> = stored_chunks(&app.chunk_dir(&record))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        kept, pieces,
        "CLEANUP_CHUNKS=false keeps every chunk as sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_serve_ranges_and_etags() {
    let app = rec_app(Backend::Memory, &[]).await;
    let media_dir = tempfile::tempdir().unwrap();
    let pieces = media::independent_webms(media_dir.path(), 2, 1.0)
        .iter()
        .map(|p| read(p))
        .collect();
    let (_, done) = record(&[&app], pieces).await;
    let full = check_result(&app, &done, 2.0).await;
    let url = done["download_url"].as_str().unwrap();
    let size = full.len();

    let (status, headers, part) = app.download(url, &[("range", "bytes=10-109")]).await;
    assert_eq!(status, 206);
    assert_eq!(part, &full[10..110]);
    assert_eq!(headers["content-range"], format!("bytes 10-109/{size}"));
    let (status, _, tail) = app.download(url, &[("range", "bytes=-50")]).await;
    assert_eq!((status, tail.as_slice()), (206, &full[size - 50..]));
    let (status, _, rest) = app.download(url, &[("range", "bytes=100-")]).await;
    assert_eq!((status, rest.as_slice()), (206, &full[100..]));

    let beyond = format!("bytes={size}-");
    let (status, headers, body) = app.download(url, &[("range", &beyond)]).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{size}"));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "range_not_satisfiable");

    let (_, headers, _) = app.download(url, &[]).await;
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, body) = app.download(url, &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    // A range with a stale validator gets the whole file.
    let (status, _, body) = app
        .download(url, &[("range", "bytes=0-9"), ("if-range", "\"other\"")])
        .await;
    assert_eq!((status, body.len()), (200, size));

    let res = app.app.client.head(app.app.url(url)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-length"], size.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_without_chunks_fails_with_no_chunks() {
    let app = rec_app(Backend::Memory, &[]).await;
    let record = app.start().await["record_id"].as_str().unwrap().to_string();
    let (status, body) = app.stop(&record).await;
    assert_eq!((status, &body["state"]), (202, &"merging".into()));
    let done = app.finished(&record, MERGE_WAIT).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"], "no_chunks");
    assert_eq!(done["chunks"], 0);
    // A repeated stop answers the state, and starts nothing.
    let (status, body) = app.stop(&record).await;
    assert_eq!((status, &body["state"]), (202, &"failed".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_over_its_timeout_is_killed_and_failed() {
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__MERGE_TIMEOUT_SECONDS", "0.001")],
    )
    .await;
    let media_dir = tempfile::tempdir().unwrap();
    let pieces = media::independent_webms(media_dir.path(), 3, 1.0)
        .iter()
        .map(|p| read(p))
        .collect();
    let (record, done) = record(&[&app], pieces).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"], "merge_timeout");
    assert_eq!(
        stored_chunks(&app.chunk_dir(&record)).len(),
        3,
        "a failed merge keeps the chunks"
    );
    let work = app.dirs.path().join("chunks").join(".merge");
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "the work folder is removed"
    );
}

/// Sets a folder's modification time `hours` back.
fn age_dir(path: &std::path::Path, hours: u64) {
    let then = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(then))
        .unwrap_or_else(|e| panic!("cannot age {}: {e}", path.display()));
}

/// Sets a file's modification time `hours` back.
fn age(path: &std::path::Path, hours: u64) {
    let then = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(then))
        .unwrap_or_else(|e| panic!("cannot age {}: {e}", path.display()));
}

/// Results and abandoned chunks older than the retention are removed (the
/// sweep runs at start-up and then periodically); newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweep_removes_old_results_and_chunks() {
    let retention = [("BROKER__RECORDINGS__RETENTION_HOURS", "1")];
    let app = rec_app(Backend::Memory, &retention).await;
    let media_dir = tempfile::tempdir().unwrap();
    let pieces: Vec<Vec<u8>> = media::independent_webms(media_dir.path(), 2, 1.0)
        .iter()
        .map(|p| read(p))
        .collect();
    let (_, old_done) = record(&[&app], pieces.clone()).await;
    let (_, new_done) = record(&[&app], pieces.clone()).await;
    let abandoned = app.start().await["record_id"].as_str().unwrap().to_string();
    app.chunk(&abandoned, pieces[0].clone()).await;
    let kept = app.start().await["record_id"].as_str().unwrap().to_string();
    app.chunk(&kept, pieces[0].clone()).await;

    let output = |done: &serde_json::Value| {
        let key = done["download_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        app.output_dir().join(format!("{key}.webm"))
    };
    let (old_output, new_output) = (output(&old_done), output(&new_done));
    age(&old_output, 2);
    for entry in std::fs::read_dir(app.chunk_dir(&abandoned)).unwrap() {
        age(&entry.unwrap().path(), 2);
    }
    // What a crash mid-upload or mid-merge leaves: a chunk body and a work
    // folder nothing touched for longer than an upload or merge may take
    // (plus an hour's grace) go; fresh ones may belong to a live instance.
    let root = app.dirs.path().join("chunks");
    let leftovers = [
        root.join(".incoming/crashed"),
        root.join(".merge/crashed/0000000000.webm"),
    ];
    let fresh = [
        root.join(".incoming/live"),
        root.join(".merge/live/0000000000.webm"),
    ];
    for file in leftovers.iter().chain(&fresh) {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"partial").unwrap();
    }
    for file in &leftovers {
        age(file, 2);
    }
    age_dir(&root.join(".merge/crashed"), 2);
    // A restart on the same folders sweeps at once.
    let restarted = rec_app_in(app.dirs.clone(), Backend::Memory, None, &retention).await;
    let swept = crate::helpers::eventually(Duration::from_secs(10), || async {
        !old_output.exists()
            && !app.chunk_dir(&abandoned).exists()
            && !leftovers[0].exists()
            && !root.join(".merge/crashed").exists()
    })
    .await;
    assert!(
        swept,
        "old result, abandoned chunks, old chunk body and work folder removed"
    );
    for file in &fresh {
        assert!(file.exists(), "{} stays", file.display());
    }
    assert!(new_output.exists(), "a newer result stays");
    assert_eq!(
        stored_chunks(&restarted.chunk_dir(&kept)).len(),
        1,
        "newer chunks stay"
    );
}
