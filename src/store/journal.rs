//! The on-disk copy of the writes made during a Redis outage.
//!
//! Without it, what an instance acknowledged while serving from memory dies
//! with the instance. With `storage.journal_path` set, every fallback write
//! is appended (one JSON line, written through to the OS before the request
//! is answered, so it survives the process being killed), read back at
//! start-up, replayed, and the file is emptied once Redis has it all.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Key, KeyKind};

/// One journaled write. The key's kind is written beside its name, so the
/// replay applies the kind's rule without guessing from the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    /// The key held `value` until `expires_at_ms` (unix ms).
    Put {
        key: String,
        #[serde(default)]
        kind: Option<KeyKind>,
        value: String,
        expires_at_ms: u64,
    },
    /// The key was deleted at `at_ms` (unix ms).
    Delete {
        key: String,
        #[serde(default)]
        kind: Option<KeyKind>,
        at_ms: u64,
    },
}

impl Record {
    /// The key this record is about. Journals written before kinds were
    /// recorded name the kind by prefix; `None` for a name of no kind.
    pub fn key(&self) -> Option<Key> {
        let (name, kind) = match self {
            Self::Put { key, kind, .. } | Self::Delete { key, kind, .. } => (key, kind),
        };
        let kind = kind.or_else(|| KeyKind::of_legacy_name(name))?;
        Some(Key::restore(name.clone(), kind))
    }
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct DiskJournal {
    path: PathBuf,
    file: Mutex<File>,
}

impl DiskJournal {
    /// Opens (creating it and its folder if needed) and returns what an
    /// earlier run left in it. A torn last line (a crash mid-write, so
    /// never acknowledged) is skipped.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<Record>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut records = Vec::new();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) => records.push(record),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable journal line"),
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        // After a torn write, start the next record on a line of its own.
        let len = file.metadata()?.len();
        if len > 0 && std::fs::read(path)?.last() != Some(&b'\n') {
            file.write_all(b"\n")?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            records,
        ))
    }

    /// Appends one record and hands it to the OS before returning.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)?;
        file.flush()
    }

    /// Empties the file once everything in it is in Redis.
    pub fn clear(&self) -> std::io::Result<()> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.set_len(0)
    }

    /// Where the journal lives, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/journal.jsonl");
        let put = Record::Put {
            key: "rtc:token:a".into(),
            kind: Some(KeyKind::Token),
            value: "v".into(),
            expires_at_ms: 42,
        };
        let del = Record::Delete {
            key: "rtc:token:b".into(),
            kind: Some(KeyKind::Token),
            at_ms: 7,
        };
        {
            let (journal, old) = DiskJournal::open(&path).unwrap();
            assert!(old.is_empty());
            journal.append(&put).unwrap();
            journal.append(&del).unwrap();
        }
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"put\",\"key\":\"x")
            .unwrap();
        let (journal, old) = DiskJournal::open(&path).unwrap();
        assert_eq!(old, vec![put.clone(), del.clone()]);
        // Appending after the torn line does not corrupt the new record.
        journal.append(&put).unwrap();
        let (journal, old) = DiskJournal::open(&path).unwrap();
        assert_eq!(old, vec![put.clone(), del, put]);
        journal.clear().unwrap();
        let (_, old) = DiskJournal::open(&path).unwrap();
        assert!(old.is_empty());
    }

    #[test]
    fn records_carry_their_kind_and_old_ones_get_it_from_the_name() {
        let line = r#"{"op":"put","key":"recording:r:chunk_index","kind":"counter","value":"7","expires_at_ms":1}"#;
        let record: Record = serde_json::from_str(line).unwrap();
        assert_eq!(record.key().unwrap().kind(), KeyKind::Counter);
        let legacy = r#"{"op":"delete","key":"session:{s}","at_ms":1}"#;
        let record: Record = serde_json::from_str(legacy).unwrap();
        assert_eq!(record.key().unwrap().kind(), KeyKind::Session);
        let foreign = r#"{"op":"delete","key":"other:x","at_ms":1}"#;
        let record: Record = serde_json::from_str(foreign).unwrap();
        assert!(record.key().is_none());
    }
}
