//! Recording from the console (the canvas, the fake camera, the fake
//! screen of headless Chromium): the page streams real MediaRecorder pieces
//! (1 s timeslice: one WebM stream, only the first piece with a header)
//! over the recording WebSocket, stops, follows the merge to `ready` and
//! plays the result. The test then downloads the file from the page's
//! download link and checks it: its duration against the time the page
//! recorded, a clean decode, and every chunk the page saw acknowledged
//! stored by the broker.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::browser::{Browser, Page};
use crate::client::{rec_app, stored_chunks, RecApp, API_KEY};
use crate::helpers::Backend;
use crate::media;
use crate::ui::{self, TokenForm};

/// The EBML header that starts a WebM file.
const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
/// What ffmpeg's null muxer says of a gap in a source's audio timestamps.
const AUDIO_GAP: &str = "non monotonically increasing dts to muxer";
/// The page's recording state.
const STATE: &str = "rtcConsole.recording.state";
/// How far the merged file's duration may be from the recorded time.
const DURATION_TOLERANCE_S: f64 = 0.5;

/// A recording app whose chunks stay on disk after the merge (to look at
/// them), with an allowed-origin list that does not name the console: its
/// own origin is always allowed.
async fn app() -> RecApp {
    rec_app(
        Backend::Memory,
        &[
            ("CLEANUP_CHUNKS", "false"),
            ("BROKER__CORS__ALLOWED_ORIGINS", "https://app.example.com"),
        ],
    )
    .await
}

/// Records `seconds` of `source` through the page; returns the page's
/// `rtcConsole.recording` once the recording is ready and playing.
async fn record(page: &Page, source: &str, seconds: u64) -> Value {
    page.fill("api-key", API_KEY).await;
    page.select("record-source", source).await;
    page.click("start-recording").await;
    let state = ui::settled(page, "the recorder to start", STATE, &["idle", "starting"]).await;
    assert_eq!(state, "recording", "{}", page.text("recording-state").await);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    page.click("stop-recording").await;
    let on_the_way = ["recording", "stopping", "merging"];
    let state = ui::settled(page, "the merged recording", STATE, &on_the_way).await;
    assert_eq!(state, "ready", "{}", page.text("recording-state").await);
    page.wait_for(
        "the player to show the merged file",
        "document.getElementById('player').readyState >= 2",
    )
    .await;
    page.eval("rtcConsole.recording").await
}

/// The file behind the page's download link, fetched over HTTP.
async fn download(rec: &RecApp, page: &Page, dir: &Path) -> std::path::PathBuf {
    let href = page
        .eval("document.getElementById('download-link').href")
        .await;
    let href = href.as_str().expect("a download link").to_string();
    assert!(href.starts_with(&rec.app.address), "{href}");
    let response = rec.app.client.get(&href).send().await.expect("download");
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].clone();
    assert_eq!(kind, "video/webm");
    let bytes = response.bytes().await.expect("the file");
    let file = dir.join("downloaded.webm");
    std::fs::write(&file, &bytes).expect("write the download");
    file
}

/// What the merged file's duration is held to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// The time the page recorded, within [`DURATION_TOLERANCE_S`].
    AsRecorded,
    /// At most that: a still screen gives MediaRecorder no new frames, so
    /// the file ends with the last change on the screen.
    UpToRecorded,
}

/// Every chunk the page saw acknowledged is stored, and only the first
/// starts with a WebM header (timeslice pieces of one stream).
async fn check_chunks(rec: &RecApp, shown: &Value, min_chunks: u64) {
    let record = shown["recordId"].as_str().expect("record id");
    let acked = shown["chunksAcked"].as_u64().unwrap_or(0);
    assert_eq!(Some(acked), shown["chunksSent"].as_u64(), "{shown}");
    assert!(acked >= min_chunks, "only {acked} chunks: {shown}");
    let (code, status) = rec.status(record).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["chunks"], acked, "{status}");
    assert_eq!(status["state"], "ready", "{status}");
    let chunks = stored_chunks(&rec.chunk_dir(record));
    assert_eq!(chunks.len() as u64, acked);
    let headed: Vec<u64> = chunks
        .iter()
        .filter(|(_, bytes)| bytes.starts_with(&EBML_MAGIC))
        .map(|(index, _)| *index)
        .collect();
    assert_eq!(headed, vec![0], "pieces with a header");
}

/// The downloaded file: its duration, a clean decode, seeking, and what
/// the page's player makes of it.
async fn check_file(rec: &RecApp, page: &Page, shown: &Value, timing: Timing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = download(rec, page, dir.path()).await;
    // Chromium's fake microphone, starved of CPU, can skip a 20 ms buffer;
    // ffmpeg's null muxer then reports that gap in the browser's own audio
    // timestamps (the raw chunks have it too). Video-only files get none.
    let audio = shown["mimeType"]
        .as_str()
        .unwrap_or_default()
        .contains("opus");
    let allowed: &[&str] = if audio { &[AUDIO_GAP] } else { &[] };
    let (duration, decoded, seekable) = crate::harness::blocking(move || {
        let duration = media::format_duration(&file);
        let decoded = media::decodes_allowing(&file, allowed);
        (duration, decoded, media::is_seekable(&file))
    })
    .await;
    let duration = duration.expect("the merged file has a duration");
    let recorded = shown["recordedSeconds"].as_f64().expect("recorded time");
    let late = shown["startDelaySeconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}: {} chunks, recorded {recorded:.3} s (start event {late:.3} s late), \
         merged {duration:.3} s",
        shown["recordId"], shown["chunksAcked"]
    );
    let fits = match timing {
        Timing::AsRecorded => (duration - recorded).abs() <= DURATION_TOLERANCE_S,
        Timing::UpToRecorded => duration > 0.0 && duration <= recorded + DURATION_TOLERANCE_S,
    };
    assert!(fits, "merged {duration:.3} s, recorded {recorded:.3} s");
    decoded.expect("the merged file decodes without errors");
    assert!(seekable, "the merged file is seekable");
    let player = page
        .eval("document.getElementById('player').duration")
        .await;
    let player = player.as_f64().unwrap_or(f64::NAN);
    assert!(
        (player - duration).abs() <= DURATION_TOLERANCE_S,
        "the player says {player} s, ffprobe {duration} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canvas_recording_is_merged_played_and_downloaded() {
    let rec = app().await;
    let browser = Browser::launch().await;
    let page = ui::open(&browser, &rec.app).await;
    // A room in use too, so the screenshot shows the whole console.
    let form = TokenForm {
        api_key: API_KEY,
        session_id: "console-demo",
        identity: "alice",
        room: "demo-room",
        ttl: "600",
    };
    ui::issue_token(&page, &form).await;
    ui::join(&page).await;
    ui::send(&page, "recording the canvas now").await;
    ui::wait_message(&page, "recording the canvas now").await;
    let shown = record(&page, "canvas", 5).await;
    assert_eq!(shown["mimeType"], "video/webm;codecs=vp8", "{shown}");
    let percent = page.text("merge-percent").await;
    assert_eq!(percent, "100 %");
    let shot = ui::artifacts_dir().join("console-recording.png");
    page.screenshot(&shot).await;
    check_chunks(&rec, &shown, 5).await;
    check_file(&rec, &page, &shown, Timing::AsRecorded).await;
    ui::assert_clean_log(&page);
}

/// Records `seconds` of `source` on a fresh app and browser, and checks it.
async fn record_source(source: &str, seconds: u64, mime_type: &str, timing: Timing) {
    let rec = app().await;
    let browser = Browser::launch().await;
    let page = ui::open(&browser, &rec.app).await;
    let shown = record(&page, source, seconds).await;
    assert_eq!(shown["mimeType"], mime_type, "{shown}");
    let shot = ui::artifacts_dir().join(format!("console-{source}.png"));
    page.screenshot(&shot).await;
    // A still screen may fill a second's piece with nothing (not sent).
    let min_chunks = if timing == Timing::AsRecorded {
        seconds
    } else {
        1
    };
    check_chunks(&rec, &shown, min_chunks).await;
    check_file(&rec, &page, &shown, timing).await;
    ui::assert_clean_log(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_camera_recording_with_sound_is_merged_too() {
    record_source(
        "camera",
        3,
        "video/webm;codecs=vp8,opus",
        Timing::AsRecorded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_recording_is_merged_too() {
    record_source("screen", 3, "video/webm;codecs=vp8", Timing::UpToRecorded).await;
}
