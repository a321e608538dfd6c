//! Where chunks and finished recordings are kept, behind a trait shaped
//! like an object store (put from a file, ranged read, delete, list by
//! prefix) so S3-like storage fits later without touching the service.
//! [`local::LocalDir`] is a directory, safe on a volume several instances
//! share: a chunk is published with an exclusive create (never overwritten)
//! and every object appears whole (temp file, then link or rename).
//!
//! Keys are built only by [`ObjectKey`]'s constructors from validated ids,
//! so no request can name a path outside the storage root.

pub mod local;

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::domain::Id;

/// A stored object's bytes, streamed.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Why storage could not serve an operation (always our side: 500/503).
#[derive(Debug, thiserror::Error)]
#[error("recording storage: {0}")]
pub struct StorageError(#[from] pub io::Error);

pub type StorageResult<T> = Result<T, StorageError>;

/// A relative object name of id segments joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// Width of a chunk's index in its name, so names sort in index order.
const INDEX_WIDTH: usize = 10;

impl ObjectKey {
    /// Chunk `index` of a recording.
    pub fn chunk(record: &Id, index: u64) -> Self {
        Self(format!("{record}/{index:0INDEX_WIDTH$}"))
    }

    /// Everything stored for a recording's chunks (the prefix of [`Self::chunk`]).
    pub fn chunks_of(record: &Id) -> Self {
        Self(format!("{record}/"))
    }

    /// An upload in flight (a lease a stop waits for).
    pub fn lease(record: &Id, lease: &Id) -> Self {
        Self(format!("{record}.uploads/{lease}"))
    }

    /// The leases of a recording (the prefix of [`Self::lease`]).
    pub fn leases_of(record: &Id) -> Self {
        Self(format!("{record}.uploads/"))
    }

    /// The recording a [`Self::chunks_of`] prefix (as `prefixes` lists
    /// them) belongs to; `None` for any other key.
    pub fn chunks_record(&self) -> Option<Id> {
        let id = self.0.strip_suffix('/')?;
        if id.contains('/') || id.ends_with(".uploads") {
            return None;
        }
        Id::parse(id).ok()
    }

    /// The top level of a store (finished recordings are kept there).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// A finished recording, by its download key.
    pub fn output(download_key: &Id) -> Self {
        Self(format!("{download_key}.webm"))
    }

    /// Rebuilds a key a listing returned; `None` for a name no constructor
    /// makes (foreign files in the directory are ignored, never served).
    fn from_listed(name: &str) -> Option<Self> {
        let valid = name.split('/').all(|segment| Id::parse(segment).is_ok());
        (valid && !name.is_empty()).then(|| Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The chunk index when this is a chunk key.
    pub fn chunk_index(&self) -> Option<u64> {
        let (_, last) = self.0.rsplit_once('/')?;
        (last.len() == INDEX_WIDTH && last.bytes().all(|b| b.is_ascii_digit()))
            .then(|| last.parse().ok())
            .flatten()
    }
}

/// What a listing or a stat tells about an object.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub modified: SystemTime,
}

/// The operations recordings need from storage; see the module doc.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores the file at `from` under `key` unless `key` exists: false
    /// then, and `from` is left in place. On true `from` is consumed.
    async fn put_new(&self, key: &ObjectKey, from: &Path) -> StorageResult<bool>;

    /// Stores the file at `from` under `key`, replacing any object there
    /// atomically (readers see the old or the new one whole).
    async fn put(&self, key: &ObjectKey, from: &Path) -> StorageResult<()>;

    /// Stores a small object from memory (leases).
    async fn put_bytes(&self, key: &ObjectKey, bytes: &[u8]) -> StorageResult<()>;

    async fn stat(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>>;

    /// `len` bytes from `offset`, streamed.
    async fn read_range(&self, key: &ObjectKey, offset: u64, len: u64)
        -> StorageResult<ByteStream>;

    /// A local file with the object's bytes at `dest`, for ffmpeg.
    async fn fetch_to(&self, key: &ObjectKey, dest: &Path) -> StorageResult<()>;

    /// Removes the object; removing a missing one is not an error.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()>;

    /// Every object whose key starts with `prefix` (a `.../` prefix lists
    /// one level), in key order.
    async fn list(&self, prefix: &ObjectKey) -> StorageResult<Vec<ObjectMeta>>;

    /// The prefixes one level below the top (`<record>/`, `<record>.uploads/`),
    /// like an object store's listing with a delimiter.
    async fn prefixes(&self) -> StorageResult<Vec<ObjectKey>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_sort_by_index_and_parse_back() {
        let r = Id::parse("rec-1").unwrap();
        assert_eq!(ObjectKey::chunk(&r, 7).as_str(), "rec-1/0000000007");
        assert!(ObjectKey::chunk(&r, 9).as_str() < ObjectKey::chunk(&r, 10).as_str());
        assert_eq!(ObjectKey::chunk(&r, 42).chunk_index(), Some(42));
        assert_eq!(ObjectKey::lease(&r, &r).chunk_index(), None);
        assert_eq!(ObjectKey::output(&r).as_str(), "rec-1.webm");
        assert_eq!(ObjectKey::chunks_of(&r).chunks_record(), Some(r.clone()));
        assert_eq!(ObjectKey::leases_of(&r).chunks_record(), None);
        assert_eq!(ObjectKey::chunk(&r, 1).chunks_record(), None);
        assert_eq!(ObjectKey::output(&r).chunks_record(), None);
    }

    #[test]
    fn listed_names_outside_the_key_forms_are_ignored() {
        for bad in ["", "../x", "a/../b", "a//b", "a/b c", "/abs"] {
            assert!(ObjectKey::from_listed(bad).is_none(), "{bad}");
        }
        assert!(ObjectKey::from_listed("rec-1/0000000007").is_some());
    }
}
