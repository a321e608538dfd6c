//! Turns a recording's stored WebM chunks into one seekable WebM file.
//!
//! Chunks come in two kinds, told apart by their first four bytes. One
//! with the EBML header starts a file (an independent recording, or the
//! first blob of a MediaRecorder stream); one without continues the stream
//! before it. MediaRecorder blobs are one stream cut at arbitrary bytes:
//! they are byte-joined and remuxed as one, since the concat demuxer would
//! see non-monotonous timestamps. Independent files need the concat
//! demuxer, which rebases each file's timestamps.
//!
//! ffmpeg always runs with `-c copy`: a remux, never a re-encode, so it is
//! cheap and lossless, and the output is about the input's size, which is
//! why progress is counted in bytes written. The webm muxer writes Cues
//! and the duration when its output is a regular file; MediaRecorder
//! output has neither. All runs of a merge share one timeout, after which
//! the child is killed, and a semaphore caps concurrent merges, each a
//! process busy on disk.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The EBML element id every WebM file starts with.
pub const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

/// How long `-version` may take before a tool counts as unusable.
const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many stderr lines a tool error keeps.
const TAIL_LINES: usize = 5;
const INSTALL_HINT: &str = "install it: apt-get install ffmpeg";

/// Runs ffmpeg and ffprobe for merges, at most `permits` merges at a time.
pub struct Merger {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    timeout: Duration,
    permits: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no chunks to merge")]
    NoChunks,
    #[error("the first chunk is not WebM (no EBML header)")]
    NotWebm,
    #[error("ffmpeg ran longer than {0:?} and was killed")]
    Timeout(Duration),
    /// `detail` holds the exit status and the last stderr lines.
    #[error("{tool} failed: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("merge i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// ffmpeg or ffprobe cannot be used; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The merged file, `work_dir/out.webm`.
pub struct Merged {
    pub path: PathBuf,
    pub duration_s: f64,
    pub size_bytes: u64,
}

/// One input of the final run: a file that starts with a header.
struct Part {
    path: PathBuf,
    bytes: u64,
    /// Byte-joined chunks: no Cues and no duration until remuxed.
    joined: bool,
}

impl Merger {
    /// Checks both tools answer `-version` (spawn with a short timeout, e.g. 10 s); Err when missing.
    /// Done once at startup so a missing ffmpeg is reported up front
    /// rather than on the first recording. `max_concurrent` 0 counts as 1.
    pub async fn detect(
        ffmpeg: &Path,
        ffprobe: &Path,
        timeout: Duration,
        max_concurrent: usize,
    ) -> Result<Self, Unavailable> {
        answers_version("ffmpeg", ffmpeg).await?;
        answers_version("ffprobe", ffprobe).await?;
        let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
        let (ffmpeg, ffprobe) = (ffmpeg.to_path_buf(), ffprobe.to_path_buf());
        Ok(Self {
            ffmpeg,
            ffprobe,
            timeout,
            permits,
        })
    }

    /// Merges `chunks` (local files, already in index order) inside `work_dir` (an existing empty
    /// directory the caller owns and removes afterwards); waits for a semaphore permit first.
    /// `progress` is called with 0..=99 as ffmpeg advances (never 100; the caller says 100 when done),
    /// only when the value changes.
    ///
    /// Chunks are checked before waiting for a permit so bad input fails
    /// at once; the timeout starts once the permit is held.
    pub async fn merge(
        &self,
        chunks: &[PathBuf],
        work_dir: &Path,
        progress: &(dyn Fn(u8) + Send + Sync),
    ) -> Result<Merged, MergeError> {
        let mut heads = Vec::with_capacity(chunks.len());
        let mut sizes = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            heads.push(starts_with_magic(chunk).await?);
            sizes.push(tokio::fs::metadata(chunk).await?.len());
        }
        let groups = group_ranges(&heads)?;
        let closed = |_| MergeError::Io(std::io::Error::other("merge semaphore closed"));
        let _permit = self.permits.acquire().await.map_err(closed)?;
        let mut job = Job {
            merger: self,
            // Absolute paths: ffmpeg reads `x:y` as a protocol, `-x` as an option.
            work_dir: std::path::absolute(work_dir)?,
            deadline: Instant::now() + self.timeout,
            progress: Progress::new(progress, work_bytes(&groups, &sizes)),
        };
        let mut parts = Vec::with_capacity(groups.len());
        for (n, range) in groups.into_iter().enumerate() {
            let bytes = sizes[range.clone()].iter().sum();
            parts.push(job.part(n, &chunks[range], bytes).await?);
        }
        let path = job.combine(parts).await?;
        let size_bytes = tokio::fs::metadata(&path).await?.len();
        let duration_s = self.probe_until(&path, job.deadline).await?;
        Ok(Merged {
            path,
            duration_s,
            size_bytes,
        })
    }

    /// ffprobe's format duration in seconds.
    pub async fn probe_duration(&self, file: &Path) -> Result<f64, MergeError> {
        self.probe_until(file, Instant::now() + self.timeout).await
    }

    async fn probe_until(&self, file: &Path, deadline: Instant) -> Result<f64, MergeError> {
        let mut args = os("-v error -show_entries format=duration");
        args.extend(os("-of default=noprint_wrappers=1:nokey=1"));
        args.push(std::path::absolute(file)?.into());
        let mut out = String::new();
        let mut keep = |line: &str| out.push_str(line.trim());
        let ffprobe = &self.ffprobe;
        self.run("ffprobe", ffprobe, &args, deadline, &mut keep)
            .await?;
        parse_duration(&out).ok_or_else(|| MergeError::Tool {
            tool: "ffprobe",
            detail: format!("no duration for {} (got {out:?})", file.display()),
        })
    }

    /// Runs a tool to completion or until `deadline`, when it is killed and
    /// reaped. Stdout lines go to `on_line`; the stderr tail to the error.
    async fn run(
        &self,
        tool: &'static str,
        program: &Path,
        args: &[OsString],
        deadline: Instant,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), MergeError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut tail = VecDeque::with_capacity(TAIL_LINES + 1);
        let finished = tokio::time::timeout_at(deadline, async {
            let mut keep = |line: &str| push_tail(&mut tail, line);
            let (_, _, status) = tokio::join!(
                for_each_line(stdout, on_line),
                for_each_line(stderr, &mut keep),
                child.wait()
            );
            status
        })
        .await;
        let Ok(status) = finished else {
            let _ = child.kill().await; // kill() also waits: no zombie
            return Err(MergeError::Timeout(self.timeout));
        };
        let status = status?;
        if status.success() {
            return Ok(());
        }
        let lines: Vec<String> = tail.into_iter().collect();
        let detail = format!("{status}: {}", lines.join(" | "));
        Err(MergeError::Tool { tool, detail })
    }
}

/// One merge holding its permit: where it writes, when it must stop, and
/// how far it has got.
struct Job<'a> {
    merger: &'a Merger,
    work_dir: PathBuf,
    deadline: Instant,
    progress: Progress<'a>,
}

impl Job<'_> {
    /// A group's single file as is, or its chunks joined into `part-N.webm`.
    async fn part(&self, n: usize, chunks: &[PathBuf], bytes: u64) -> Result<Part, MergeError> {
        let joined = chunks.len() > 1;
        let path = match chunks {
            [only] => std::path::absolute(only)?,
            _ => self.work_dir.join(format!("part-{n}.webm")),
        };
        if joined {
            tokio::time::timeout_at(self.deadline, concat_bytes(chunks, &path))
                .await
                .map_err(|_| MergeError::Timeout(self.merger.timeout))??;
        }
        Ok(Part {
            path,
            bytes,
            joined,
        })
    }

    /// One part: remux it. Several: remux the joined ones so each has a
    /// duration for the concat demuxer, then concat them all. Writes to a
    /// temporary name so `out.webm` only ever names a complete file.
    async fn combine(&mut self, mut parts: Vec<Part>) -> Result<PathBuf, MergeError> {
        let out_tmp = self.work_dir.join("out.tmp.webm");
        if let [only] = &parts[..] {
            self.ffmpeg(remux_args(&only.path, &out_tmp), only.bytes)
                .await?;
        } else {
            for (n, part) in parts.iter_mut().enumerate().filter(|(_, p)| p.joined) {
                let remuxed = self.work_dir.join(format!("part-{n}.remuxed.webm"));
                self.ffmpeg(remux_args(&part.path, &remuxed), part.bytes)
                    .await?;
                part.path = remuxed;
            }
            let list = self.work_dir.join("list.txt");
            let paths: Vec<&Path> = parts.iter().map(|p| p.path.as_path()).collect();
            tokio::fs::write(&list, concat_list(&paths)?).await?;
            let input = parts.iter().map(|p| p.bytes).sum();
            let args = ffmpeg_args(&os("-f concat -safe 0"), &list, &out_tmp);
            self.ffmpeg(args, input).await?;
        }
        let out = self.work_dir.join("out.webm");
        tokio::fs::rename(&out_tmp, &out).await?;
        Ok(out)
    }

    /// One ffmpeg run expected to write about `bytes`, feeding progress.
    async fn ffmpeg(&mut self, args: Vec<OsString>, bytes: u64) -> Result<(), MergeError> {
        let (merger, deadline) = (self.merger, self.deadline);
        let progress = &mut self.progress;
        let mut on_line = |line: &str| {
            if let Some(written) = parse_total_size(line) {
                progress.update(written.min(bytes));
            }
        };
        let ffmpeg = &merger.ffmpeg;
        merger
            .run("ffmpeg", ffmpeg, &args, deadline, &mut on_line)
            .await?;
        progress.run_done(bytes);
        Ok(())
    }
}

async fn answers_version(name: &str, path: &Path) -> Result<(), Unavailable> {
    let status = Command::new(path)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let problem = match tokio::time::timeout(DETECT_TIMEOUT, status).await {
        Ok(Ok(s)) if s.success() => return Ok(()),
        Ok(Ok(s)) => format!("`-version` gave {s}"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => "not found".to_owned(),
        Ok(Err(e)) => format!("cannot run: {e}"),
        Err(_) => format!("no answer to `-version` in {DETECT_TIMEOUT:?}"),
    };
    let shown = path.display();
    Err(Unavailable(format!(
        "{name} at {shown}: {problem} ({INSTALL_HINT})"
    )))
}

/// Reads only the first four bytes: chunks may be tens of MB.
async fn starts_with_magic(path: &Path) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(4);
    let file = tokio::fs::File::open(path).await?;
    file.take(4).read_to_end(&mut head).await?;
    Ok(head == EBML_MAGIC)
}

/// Streams the chunks one after another into `out`.
async fn concat_bytes(chunks: &[PathBuf], out: &Path) -> std::io::Result<()> {
    let mut dst = tokio::fs::File::create(out).await?;
    for chunk in chunks {
        let mut src = tokio::fs::File::open(chunk).await?;
        tokio::io::copy(&mut src, &mut dst).await?;
    }
    dst.flush().await
}

/// Calls `f` with each line (lossy UTF-8, no line end) until EOF or error.
async fn for_each_line<R: AsyncRead + Unpin>(reader: Option<R>, f: &mut (dyn FnMut(&str) + Send)) {
    let Some(reader) = reader else { return };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    while let Ok(1..) = reader.read_until(b'\n', &mut buf).await {
        f(String::from_utf8_lossy(&buf).trim_end());
        buf.clear();
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.to_owned());
}

/// Index ranges of the chunks that form one file each: a group starts at
/// every chunk with a header. `heads[i]` says whether chunk i has one.
fn group_ranges(heads: &[bool]) -> Result<Vec<Range<usize>>, MergeError> {
    match heads.first() {
        None => return Err(MergeError::NoChunks),
        Some(false) => return Err(MergeError::NotWebm),
        Some(true) => {}
    }
    let mut starts: Vec<usize> = (0..heads.len()).filter(|&i| heads[i]).collect();
    starts.push(heads.len());
    Ok(starts.windows(2).map(|w| w[0]..w[1]).collect())
}

/// `total_size=<bytes>` from ffmpeg's `-progress` output (`N/A` early on).
fn parse_total_size(line: &str) -> Option<u64> {
    line.trim().strip_prefix("total_size=")?.parse().ok()
}

fn parse_duration(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0)
}

/// `done` of `total` as a percent, capped at 99: 100 is the caller's to say.
fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    (u128::from(done) * 100 / u128::from(total)).min(99) as u8
}

/// The concat demuxer's script: `file '<path>'` lines, where a `'` is
/// closed, escaped and reopened. Paths are written as raw bytes; a line
/// break cannot be expressed in the script, so such a path is refused.
fn concat_list(paths: &[&Path]) -> std::io::Result<Vec<u8>> {
    let mut list = Vec::new();
    for path in paths {
        let bytes = path.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            let msg = format!("line break in path {}", path.display());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
        list.extend_from_slice(b"file '");
        for &b in bytes {
            match b {
                b'\'' => list.extend_from_slice(b"'\\''"),
                _ => list.push(b),
            }
        }
        list.extend_from_slice(b"'\n");
    }
    Ok(list)
}

/// Whitespace-separated arguments (none of ours contains a space).
fn os(args: &str) -> Vec<OsString> {
    args.split_whitespace().map(OsString::from).collect()
}

/// A `-c copy` run of `input` (with `input_opts` before it) into a WebM `out`.
fn ffmpeg_args(input_opts: &[OsString], input: &Path, out: &Path) -> Vec<OsString> {
    let mut args = os("-hide_banner -nostdin -v error");
    args.extend_from_slice(input_opts);
    args.extend([OsStr::new("-i").into(), input.into()]);
    args.extend(os("-map 0 -c copy -progress pipe:1 -nostats -f webm -y"));
    args.push(out.into());
    args
}

/// `+genpts`: MediaRecorder output may lack timestamps ffmpeg can use.
fn remux_args(input: &Path, out: &Path) -> Vec<OsString> {
    ffmpeg_args(&os("-fflags +genpts"), input, out)
}

/// Bytes all runs of a merge write: every part once in the final run,
/// plus the joined parts once more when they are remuxed first.
fn work_bytes(groups: &[Range<usize>], sizes: &[u64]) -> u64 {
    let input: u64 = sizes.iter().sum();
    if groups.len() == 1 {
        return input;
    }
    let joined = groups.iter().filter(|g| g.len() > 1);
    input
        + joined
            .map(|g| sizes[g.clone()].iter().sum::<u64>())
            .sum::<u64>()
}

/// Maps bytes written over all runs of one merge to monotonic percents.
struct Progress<'a> {
    report: &'a (dyn Fn(u8) + Send + Sync),
    /// Bytes all runs together are expected to write.
    total: u64,
    /// Bytes of the runs already finished.
    base: u64,
    last: Option<u8>,
}

impl<'a> Progress<'a> {
    fn new(report: &'a (dyn Fn(u8) + Send + Sync), total: u64) -> Self {
        Self {
            report,
            total,
            base: 0,
            last: None,
        }
    }

    /// The current run has written `written` bytes.
    fn update(&mut self, written: u64) {
        let now = percent(self.base.saturating_add(written), self.total);
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
            (self.report)(now);
        }
    }

    fn run_done(&mut self, bytes: u64) {
        self.base = self.base.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn groups_start_at_every_header() {
        assert!(matches!(group_ranges(&[]), Err(MergeError::NoChunks)));
        assert!(matches!(
            group_ranges(&[false, true]),
            Err(MergeError::NotWebm)
        ));
        assert_eq!(
            group_ranges(&[true, true, true]).unwrap(),
            vec![0..1, 1..2, 2..3]
        );
        assert_eq!(group_ranges(&[true, false, false]).unwrap(), vec![0..3]);
        let restarted = group_ranges(&[true, false, true, false, false, true]).unwrap();
        assert_eq!(restarted, vec![0..2, 2..5, 5..6]);
    }

    #[test]
    fn progress_lines_and_durations_parse() {
        assert_eq!(parse_total_size("total_size=107546"), Some(107546));
        assert_eq!(parse_total_size("total_size=N/A"), None);
        assert_eq!(parse_total_size("out_time_us=5001000"), None);
        assert_eq!(parse_duration("5.021000\n"), Some(5.021));
        assert_eq!(parse_duration("N/A"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn percent_caps_at_99_and_never_goes_back() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(300, 200), 99);
        assert_eq!(percent(u64::MAX, 1), 99);
        let seen = Mutex::new(Vec::new());
        let report = |p: u8| seen.lock().unwrap().push(p);
        let mut progress = Progress::new(&report, 200);
        for written in [0, 0, 20, 10, 100] {
            progress.update(written);
        }
        progress.run_done(100);
        for written in [0, 50, 100, 100] {
            progress.update(written);
        }
        assert_eq!(*seen.lock().unwrap(), vec![0, 10, 50, 75, 99]);
    }

    #[test]
    fn joined_parts_count_twice_when_remuxed_before_the_concat() {
        assert_eq!(work_bytes(std::slice::from_ref(&(0..3)), &[10, 20, 30]), 60);
        assert_eq!(work_bytes(&[0..1, 1..2], &[10, 20]), 30);
        assert_eq!(work_bytes(&[0..2, 2..3], &[10, 20, 30]), 90);
    }

    #[test]
    fn concat_list_escapes_quotes_and_refuses_line_breaks() {
        let paths = [Path::new("/w/part-0.webm"), Path::new("/w/it's.webm")];
        let list = concat_list(&paths).unwrap();
        assert_eq!(list, b"file '/w/part-0.webm'\nfile '/w/it'\\''s.webm'\n");
        assert!(concat_list(&[Path::new("/w/a\nb.webm")]).is_err());
    }

    #[test]
    fn merge_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let merger = Merger {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            timeout: Duration::from_secs(1),
            permits: Arc::new(Semaphore::new(1)),
        };
        let report = |_: u8| {};
        assert_send(&merger.merge(&[], Path::new("."), &report));
    }
}
