//! Test media made with ffmpeg's lavfi sources (`testsrc`, `sine`),
//! encoded with libvpx and libopus as browsers do, and checks on merged
//! files. Blocking: call from tests before or after the async part.
//!
//! Included with `#[path = "../harness/media.rs"] mod media;`; standalone.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Cues element id: present only in files a player can seek in cheaply.
const CUES_ID: [u8; 4] = [0x1C, 0x53, 0xBB, 0x6B];
/// The CuePoint element id, the first child of a real Cues element.
const CUE_POINT_ID: u8 = 0xBB;
const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

/// Runs a tool to completion, with a clear panic when it is not installed.
fn output(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                panic!("{tool} not found: install it with apt-get install ffmpeg")
            }
            _ => panic!("cannot run {tool}: {e}"),
        })
}

/// ffmpeg arguments encoding `seconds` of small VP8 + Opus test media.
fn encode_args(seconds: f64, extra: &[&str], out: &Path) -> Vec<String> {
    let inputs = "-hide_banner -nostdin -v error -f lavfi -i testsrc=size=160x120:rate=15 \
                  -f lavfi -i sine=frequency=440";
    let codecs = "-c:v libvpx -b:v 200k -deadline realtime -cpu-used 8 -c:a libopus";
    let mut args: Vec<String> = inputs.split_whitespace().map(String::from).collect();
    args.extend(["-t".to_string(), seconds.to_string()]);
    args.extend(codecs.split_whitespace().map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["-y".to_string(), out.display().to_string()]);
    args
}

fn encode(seconds: f64, extra: &[&str], out: &Path) {
    let args = encode_args(seconds, extra, out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = output("ffmpeg", &args);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success(),
        "ffmpeg could not make {}: {stderr}",
        out.display()
    );
}

/// `count` independent WebM files (each with its own header, Cues and
/// duration), each `seconds` long, encoded in parallel to keep tests quick.
pub fn independent_webms(dir: &Path, count: usize, seconds: f64) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("independent-{i}.webm")))
        .collect();
    std::thread::scope(|s| {
        for file in &files {
            s.spawn(move || encode(seconds, &["-f", "webm"], file));
        }
    });
    files
}

/// One WebM stream of `seconds` written as MediaRecorder does: `-live 1`
/// leaves out Cues and the duration, clusters of at most a second, and a
/// key frame every second (`-g 15` at 15 fps).
pub fn continuous_webm(dir: &Path, seconds: f64) -> PathBuf {
    let file = dir.join(format!("continuous-{seconds}s-{}.webm", unique()));
    let extra = [
        "-g",
        "15",
        "-f",
        "webm",
        "-live",
        "1",
        "-cluster_time_limit",
        "1000",
    ];
    encode(seconds, &extra, &file);
    file
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The file's bytes cut into `pieces` at deterministic pseudo-random
/// offsets (not on cluster boundaries), like a MediaRecorder timeslice:
/// only the first piece has the EBML header.
pub fn cut_at_offsets(file: &Path, pieces: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    assert!(
        pieces >= 1 && bytes.len() >= pieces * 64,
        "{} too small to cut",
        file.display()
    );
    let share = bytes.len() / pieces;
    let mut seed = bytes.len() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut cuts = vec![0];
    for i in 1..pieces {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Within a quarter share of the even split: ordered and non-empty.
        let jitter = (seed % (share as u64 / 2)) as usize;
        let mut cut = share * i - share / 4 + jitter;
        while bytes[cut..].starts_with(&[0x1F, 0x43, 0xB6, 0x75]) {
            cut += 1; // a Cluster id: move off the boundary
        }
        cuts.push(cut);
    }
    cuts.push(bytes.len());
    let out: Vec<Vec<u8>> = cuts
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect();
    assert!(out.iter().skip(1).all(|p| !p.starts_with(&EBML_MAGIC)));
    out
}

/// The container's duration, or None when it has none (`N/A`).
pub fn format_duration(file: &Path) -> Option<f64> {
    let path = file.display().to_string();
    let args = ["-v", "error", "-show_entries", "format=duration"];
    let args = [
        &args[..],
        &["-of", "default=noprint_wrappers=1:nokey=1", &path],
    ]
    .concat();
    let done = output("ffprobe", &args);
    assert!(
        done.status.success(),
        "ffprobe {path}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8_lossy(&done.stdout).trim().parse().ok()
}

/// The container's duration or, for a stream written without one (like
/// [`continuous_webm`] and MediaRecorder), where its last packet ends: the
/// length a player finds by reading to the end. Checks on merged output
/// want [`format_duration`], which does not fall back.
pub fn probe_duration(file: &Path) -> f64 {
    format_duration(file)
        .or_else(|| packets_end(file))
        .unwrap_or_else(|| panic!("{} has no duration and no packets", file.display()))
}

/// The latest `pts + duration` over all packets.
fn packets_end(file: &Path) -> Option<f64> {
    let path = file.display().to_string();
    let args = [
        "-v",
        "error",
        "-show_entries",
        "packet=pts_time,duration_time",
    ];
    let done = output("ffprobe", &[&args[..], &["-of", "csv=p=0", &path]].concat());
    let listing = String::from_utf8_lossy(&done.stdout);
    let ends = listing.lines().filter_map(|line| {
        let mut fields = line.split(',').map(|f| f.trim().parse::<f64>().ok());
        Some(fields.next()?? + fields.next().flatten().unwrap_or(0.0))
    });
    ends.reduce(f64::max)
}

/// Every packet decodes with no error at all.
pub fn decodes_cleanly(file: &Path) -> Result<(), String> {
    decodes_allowing(file, &[])
}

/// [`decodes_cleanly`], except for ffmpeg messages containing one of
/// `allowed` (e.g. what its null muxer says of a gap in the source's own
/// timestamps, which is not a decoding error).
pub fn decodes_allowing(file: &Path, allowed: &[&str]) -> Result<(), String> {
    let path = file.display().to_string();
    let done = output(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", &path, "-f", "null", "-"],
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !allowed.iter().any(|a| line.contains(a)))
        .collect();
    if done.status.success() && errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{path}: {}: {}", done.status, errors.join("\n")))
    }
}

/// Seekable means both: the file holds a real Cues element (its id
/// followed by a size and a CuePoint; the bare id also appears as the
/// payload of a SeekHead entry, which is not enough), and ffmpeg can seek
/// to half the duration and decode a frame there. ffprobe does not show
/// Cues, and a seek alone also succeeds without them (by scanning), so the
/// byte check is what tells the two apart.
pub fn is_seekable(file: &Path) -> bool {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let has_cues = bytes
        .windows(4)
        .enumerate()
        .any(|(at, w)| w == CUES_ID && next_after_size(&bytes, at + 4) == Some(CUE_POINT_ID));
    let Some(duration) = format_duration(file) else {
        return false;
    };
    let (half, path) = (format!("{:.3}", duration / 2.0), file.display().to_string());
    let args = [
        "-nostdin",
        "-v",
        "error",
        "-ss",
        &half,
        "-i",
        &path,
        "-frames:v",
        "1",
    ];
    let done = output("ffmpeg", &[&args[..], &["-f", "null", "-"]].concat());
    has_cues && done.status.success()
}

/// The byte after the EBML size (a variable-length integer) at `at`.
fn next_after_size(bytes: &[u8], at: usize) -> Option<u8> {
    let first = *bytes.get(at)?;
    let len = first.leading_zeros() as usize + 1; // 1..=8, 9 is invalid
    if len > 8 {
        return None;
    }
    bytes.get(at + len).copied()
}

/// The title a [`tagged_webm`] carries, where [`retag`] writes a number.
const TAG: &[u8] = b"chunk-000000";

/// One short independent WebM whose title is [`TAG`], without CRC-32
/// elements, so [`retag`] can make any number of distinct, valid copies.
pub fn tagged_webm(dir: &Path, seconds: f64) -> Vec<u8> {
    let out = dir.join("tagged.webm");
    let title = format!("title={}", String::from_utf8_lossy(TAG));
    encode(
        seconds,
        &["-metadata", &title, "-write_crc32", "0", "-g", "15"],
        &out,
    );
    let bytes = std::fs::read(&out).expect("tagged file");
    assert!(
        bytes.windows(TAG.len()).any(|w| w == TAG),
        "the title is stored in the file"
    );
    bytes
}

/// A copy of a [`tagged_webm`] with `n` in its title: same size, still a
/// valid WebM, bytes no other copy has.
pub fn retag(template: &[u8], n: u64) -> Vec<u8> {
    let mut bytes = template.to_vec();
    let at = bytes
        .windows(TAG.len())
        .position(|w| w == TAG)
        .expect("a tagged template");
    let number = format!("chunk-{:06}", n % 1_000_000);
    bytes[at..at + TAG.len()].copy_from_slice(number.as_bytes());
    bytes
}
