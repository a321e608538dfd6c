//! [`ObjectStore`] on a local directory (or a volume several instances
//! mount). Objects are files under the root named by their key; whole
//! objects appear atomically: a chunk by a hard link from a synced temp
//! file (the link fails if the name exists, so two instances can never
//! write one index), a result by rename. Temp files live in `<root>/.tmp`
//! so links and renames stay on one file system.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::TryStreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::{ByteStream, ObjectKey, ObjectMeta, ObjectStore, StorageResult};

/// A directory holding objects; see the module doc.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    scratch: PathBuf,
}

impl LocalDir {
    /// Creates the root (and its temp folder) when missing.
    pub fn open(root: &Path) -> io::Result<Self> {
        let scratch = root.join(".tmp");
        std::fs::create_dir_all(&scratch)?;
        Ok(Self {
            root: root.to_path_buf(),
            scratch,
        })
    }

    /// The root folder, for the files the service writes before a put.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn temp_name(&self) -> PathBuf {
        self.scratch.join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A copy of `from` in the temp folder, synced (for a source on another
    /// file system, where neither link nor rename works).
    async fn copy_in(&self, from: &Path) -> io::Result<PathBuf> {
        let temp = self.temp_name();
        tokio::fs::copy(from, &temp).await?;
        sync_file(&temp).await?;
        Ok(temp)
    }
}

/// How often a publish retries when the destination folder vanished under
/// it (a concurrent delete removes folders it emptied).
const FOLDER_RACE_ATTEMPTS: usize = 8;

/// Runs `op` (a link or rename into `dest`) after creating `dest`'s folder
/// (keys are one level deep: the root always exists), again when the folder
/// was removed in between.
async fn into_folder<F, Fut>(dest: &Path, mut op: F) -> io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let mut attempt = 0;
    loop {
        if let Some(dir) = dest.parent() {
            // Not create_dir_all: it re-checks an existing folder with
            // is_dir(), and a concurrent delete removing it in between
            // turns into an AlreadyExists error. A folder that vanishes
            // after this is seen by `op` (NotFound) and retried.
            match tokio::fs::create_dir(dir).await {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        match op().await {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < FOLDER_RACE_ATTEMPTS => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn sync_file(path: &Path) -> io::Result<()> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await?
        .sync_all()
        .await
}

/// Makes a new name in `dir` durable (the entry, not just the data).
async fn sync_dir(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent().map(Path::to_path_buf) else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

fn is_cross_device(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::CrossesDevices
}

#[async_trait]
impl ObjectStore for LocalDir {
    async fn put_new(&self, key: &ObjectKey, from: &Path) -> StorageResult<bool> {
        let dest = self.path(key);
        sync_file(from).await?;
        let (source, copied) = match into_folder(&dest, || tokio::fs::hard_link(from, &dest)).await
        {
            Ok(()) => (from.to_path_buf(), false),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) if is_cross_device(&e) => {
                let temp = self.copy_in(from).await?;
                match into_folder(&dest, || tokio::fs::hard_link(&temp, &dest)).await {
                    Ok(()) => (temp, true),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&temp).await;
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            return Ok(false);
                        }
                        return Err(e.into());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        sync_dir(&dest).await?;
        let _ = tokio::fs::remove_file(&source).await;
        if copied {
            let _ = tokio::fs::remove_file(from).await;
        }
        Ok(true)
    }

    async fn put(&self, key: &ObjectKey, from: &Path) -> StorageResult<()> {
        let dest = self.path(key);
        sync_file(from).await?;
        match into_folder(&dest, || tokio::fs::rename(from, &dest)).await {
            Ok(()) => {}
            Err(e) if is_cross_device(&e) => {
                let temp = self.copy_in(from).await?;
                into_folder(&dest, || tokio::fs::rename(&temp, &dest)).await?;
                let _ = tokio::fs::remove_file(from).await;
            }
            Err(e) => return Err(e.into()),
        }
        sync_dir(&dest).await?;
        Ok(())
    }

    async fn put_bytes(&self, key: &ObjectKey, bytes: &[u8]) -> StorageResult<()> {
        let temp = self.temp_name();
        tokio::fs::write(&temp, bytes).await?;
        let dest = self.path(key);
        if let Err(e) = into_folder(&dest, || tokio::fs::rename(&temp, &dest)).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn stat(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: meta.len(),
                modified: meta.modified()?,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_range(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
    ) -> StorageResult<ByteStream> {
        let mut file = tokio::fs::File::open(self.path(key)).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Box::pin(stream.map_err(io::Error::other)))
    }

    async fn fetch_to(&self, key: &ObjectKey, dest: &Path) -> StorageResult<()> {
        let source = self.path(key);
        match tokio::fs::hard_link(&source, dest).await {
            Ok(()) => Ok(()),
            Err(e) if is_cross_device(&e) => {
                tokio::fs::copy(&source, dest).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // An emptied folder goes too (fails harmlessly when not empty).
        if let Some(dir) = path.parent().filter(|d| *d != self.root) {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }

    async fn list(&self, prefix: &ObjectKey) -> StorageResult<Vec<ObjectMeta>> {
        let dir = self.path(prefix);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(key) = ObjectKey::from_listed(&format!("{}{name}", prefix.as_str())) else {
                continue;
            };
            let meta = match entry.metadata().await {
                Ok(meta) if meta.is_file() => meta,
                _ => continue, // folders, or removed meanwhile
            };
            found.push(ObjectMeta {
                key,
                size: meta.len(),
                modified: meta.modified()?,
            });
        }
        found.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        Ok(found)
    }

    async fn prefixes(&self) -> StorageResult<Vec<ObjectKey>> {
        let mut entries = tokio::fs::read_dir(&self.root).await?;
        let mut found = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| is_dir && !n.starts_with('.')) else {
                continue;
            };
            if let Some(key) = ObjectKey::from_listed(name) {
                found.push(ObjectKey(format!("{}/", key.0)));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    /// Leases come and go in one folder from many uploads at once; each
    /// delete may remove the emptied folder while another put goes in. No
    /// put may fail for it (this once answered a chunk with 500).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_survive_concurrent_deletes_emptying_their_folder() {
        let root = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalDir::open(root.path()).unwrap());
        let record = Id::parse("r1").unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, record) = (store.clone(), record.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..300 {
                    let lease = ObjectKey::lease(&record, &Id::generate());
                    store.put_bytes(&lease, b"").await?;
                    store.delete(&lease).await?;
                }
                Ok::<(), super::super::StorageError>(())
            }));
        }
        for task in tasks {
            task.await
                .unwrap()
                .expect("no put fails because a folder vanished");
        }
        assert!(store
            .list(&ObjectKey::leases_of(&record))
            .await
            .unwrap()
            .is_empty());
    }
}
