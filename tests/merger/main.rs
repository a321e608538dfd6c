//! The recording merger (SPEC section 7) with the real ffmpeg: independent
//! files, one MediaRecorder-like stream cut at arbitrary bytes, a recorder
//! restarted mid-way, bad input, the timeout and progress. Merged files
//! must have the right duration, decode without errors and be seekable.

#[path = "../harness/media.rs"]
mod media;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rtc_broker::recording::merger::{MergeError, Merged, Merger, EBML_MAGIC};

async fn merger(timeout: Duration) -> Merger {
    let (ffmpeg, ffprobe) = (Path::new("ffmpeg"), Path::new("ffprobe"));
    match Merger::detect(ffmpeg, ffprobe, timeout, 2).await {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

/// Writes pieces as chunk files `chunk-<n>` in `dir`, numbered from `first`.
fn write_chunks(dir: &Path, first: usize, pieces: &[Vec<u8>]) -> Vec<PathBuf> {
    let chunks: Vec<PathBuf> = (first..)
        .take(pieces.len())
        .map(|n| dir.join(format!("chunk-{n}")))
        .collect();
    for (path, bytes) in chunks.iter().zip(pieces) {
        std::fs::write(path, bytes).unwrap();
    }
    chunks
}

/// A fresh empty work directory inside `root`, as the caller provides one.
fn work_dir(root: &Path) -> PathBuf {
    let dir = root.join("work");
    std::fs::create_dir(&dir).unwrap();
    dir
}

async fn merge(chunks: &[PathBuf], work: &Path) -> Merged {
    let merged = merger(Duration::from_secs(60))
        .await
        .merge(chunks, work, &|_| {})
        .await;
    merged.unwrap_or_else(|e| panic!("merge failed: {e}"))
}

/// A container duration within 0.1 s, clean decode, Cues, and the
/// reported facts.
fn assert_good(merged: &Merged, expected_s: f64) {
    let probed = media::format_duration(&merged.path).expect("the merged file has a duration");
    assert!(
        (probed - expected_s).abs() <= 0.1,
        "duration {probed}, expected {expected_s}"
    );
    assert!(
        (merged.duration_s - probed).abs() < 1e-6,
        "reported {}",
        merged.duration_s
    );
    assert_eq!(
        merged.size_bytes,
        std::fs::metadata(&merged.path).unwrap().len()
    );
    assert_eq!(merged.path.file_name().unwrap(), "out.webm");
    media::decodes_cleanly(&merged.path).unwrap();
    assert!(
        media::is_seekable(&merged.path),
        "{} has no Cues",
        merged.path.display()
    );
}

#[tokio::test]
async fn independent_files_are_joined_by_the_concat_demuxer() {
    let root = tempfile::tempdir().unwrap();
    let chunks = media::independent_webms(root.path(), 5, 1.0);
    let work = work_dir(root.path());
    let merged = merge(&chunks, &work).await;
    assert_good(&merged, 5.0);
    assert!(work.join("list.txt").exists());
}

#[tokio::test]
async fn one_stream_cut_anywhere_is_byte_joined_then_remuxed() {
    let root = tempfile::tempdir().unwrap();
    let source = media::continuous_webm(root.path(), 5.0);
    // Like MediaRecorder output, the source has neither a duration nor
    // Cues; its length is where its last packet ends.
    assert_eq!(media::format_duration(&source), None);
    assert!(!media::is_seekable(&source));
    let expected = media::probe_duration(&source);
    assert!((expected - 5.0).abs() <= 0.1, "source lasts {expected}");
    let pieces = media::cut_at_offsets(&source, 7);
    assert_eq!(pieces.len(), 7);
    let chunks = write_chunks(root.path(), 0, &pieces);
    let work = work_dir(root.path());
    let merged = merge(&chunks, &work).await;
    assert_good(&merged, expected);
    // Not the concat demuxer over the pieces (that gives non-monotonous
    // timestamps): one byte-joined part, equal to the source, one remux.
    assert!(!work.join("list.txt").exists());
    assert_eq!(
        std::fs::read(work.join("part-0.webm")).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

/// Two 2-second streams, each cut into 3 pieces, one after the other (a
/// MediaRecorder stopped and started again).
fn restarted_recorder(root: &Path) -> Vec<PathBuf> {
    let (a, b) = (
        media::continuous_webm(root, 2.0),
        media::continuous_webm(root, 2.0),
    );
    let mut chunks = write_chunks(root, 0, &media::cut_at_offsets(&a, 3));
    chunks.extend(write_chunks(root, 3, &media::cut_at_offsets(&b, 3)));
    chunks
}

#[tokio::test]
async fn a_restarted_recorder_gives_one_part_per_stream() {
    let root = tempfile::tempdir().unwrap();
    let chunks = restarted_recorder(root.path());
    let work = work_dir(root.path());
    let merged = merge(&chunks, &work).await;
    assert_good(&merged, 4.0);
    for part in ["part-0.remuxed.webm", "part-1.remuxed.webm", "list.txt"] {
        assert!(work.join(part).exists(), "no {part}");
    }
}

#[tokio::test]
async fn bad_input_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let work = work_dir(root.path());
    let m = merger(Duration::from_secs(60)).await;
    let empty = m.merge(&[], &work, &|_| {}).await;
    assert!(
        matches!(empty, Err(MergeError::NoChunks)),
        "{:?}",
        empty.err()
    );
    let source = media::continuous_webm(root.path(), 1.0);
    let pieces = media::cut_at_offsets(&source, 3);
    let headless = write_chunks(root.path(), 0, &pieces[1..]);
    let r = m.merge(&headless, &work, &|_| {}).await;
    assert!(matches!(r, Err(MergeError::NotWebm)), "{:?}", r.err());
    let tiny = write_chunks(root.path(), 10, &[EBML_MAGIC[..2].to_vec()]);
    let r = m.merge(&tiny, &work, &|_| {}).await;
    assert!(matches!(r, Err(MergeError::NotWebm)), "{:?}", r.err());
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "work dir touched"
    );
    // A header and then garbage gets as far as ffmpeg, whose words are kept.
    let garbage = write_chunks(root.path(), 20, &[[&EBML_MAGIC[..], b"garbage"].concat()]);
    match m.merge(&garbage, &work, &|_| {}).await {
        Err(MergeError::Tool {
            tool: "ffmpeg",
            detail,
        }) => assert!(detail.contains("chunk-20"), "{detail}"),
        other => panic!("expected a Tool error, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_timeout_kills_ffmpeg_and_leaves_no_process() {
    let root = tempfile::tempdir().unwrap();
    let chunks = media::independent_webms(root.path(), 5, 1.0);
    let work = work_dir(root.path());
    let m = merger(Duration::from_millis(1)).await;
    let r = m.merge(&chunks, &work, &|_| {}).await;
    match r {
        Err(MergeError::Timeout(d)) => assert_eq!(d, Duration::from_millis(1)),
        other => panic!("expected Timeout, got {:?}", other.err()),
    }
    let needle = work.display().to_string();
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    assert!(!work.join("out.webm").exists());
}

/// Command lines in /proc that contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

#[tokio::test]
async fn progress_rises_within_0_to_99() {
    let root = tempfile::tempdir().unwrap();
    let chunks = restarted_recorder(root.path());
    let work = work_dir(root.path());
    let seen = Mutex::new(Vec::new());
    let report = |p: u8| seen.lock().unwrap().push(p);
    let m = merger(Duration::from_secs(60)).await;
    m.merge(&chunks, &work, &report).await.unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(!seen.is_empty(), "no progress reported");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not rising: {seen:?}");
    assert!(seen.iter().all(|&p| p <= 99), "out of range: {seen:?}");
}

#[tokio::test]
async fn a_missing_ffmpeg_says_how_to_install_it() {
    let missing = Path::new("/nonexistent/bin/ffmpeg");
    let r = Merger::detect(missing, Path::new("ffprobe"), Duration::from_secs(5), 1).await;
    let Err(e) = r else {
        panic!("detect accepted a missing ffmpeg")
    };
    let msg = e.to_string();
    assert!(msg.contains("apt-get install ffmpeg"), "{msg}");
    assert!(msg.contains("/nonexistent/bin/ffmpeg"), "{msg}");
}
