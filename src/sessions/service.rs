use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Map, Value};

use super::{Member, SessionError, SessionRecord};
use crate::clock::unix_now;
use crate::domain::{Id, Ttl};
use crate::store::{keys, Store};

/// How often an update retries when another writer changed the record
/// between its read and its write (with a short jittered pause between
/// attempts so contending writers spread out).
const MAX_UPDATE_ATTEMPTS: u32 = 64;

/// A validated request to create a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: Option<Id>,
    pub ttl: Option<Ttl>,
    pub metadata: Map<String, Value>,
}

/// A validated request to add a member.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub member_id: Id,
    pub display_name: Option<String>,
    pub role: Option<String>,
}

/// Creates, reads and updates session records with a sliding TTL. Every
/// update is an optimistic read-modify-compare-and-swap on the one stored
/// value, so concurrent writers on any instance never lose each other's
/// changes. Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn Store>,
    default_ttl: Ttl,
    max_metadata_bytes: usize,
    max_members: usize,
}

impl SessionService {
    /// `max_metadata_bytes` and `max_members` bound how large one record can grow.
    pub fn new(
        store: Arc<dyn Store>,
        default_ttl: Ttl,
        max_metadata_bytes: usize,
        max_members: usize,
    ) -> Self {
        Self {
            store,
            default_ttl,
            max_metadata_bytes,
            max_members,
        }
    }

    /// Creates a record; 409 semantics when the id is taken.
    #[tracing::instrument(skip_all)]
    pub async fn create(&self, req: NewSession) -> Result<SessionRecord, SessionError> {
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        let now = unix_now();
        let record = SessionRecord {
            session_id: req.session_id.unwrap_or_else(Id::generate),
            created_at: now,
            updated_at: now,
            expires_at: now + ttl.secs(),
            ttl_seconds: ttl.secs(),
            metadata: req.metadata,
            members: Vec::new(),
        };
        self.check_size(&record)?;
        let value = encode(&record)?;
        let written = self
            .store
            .set_if_absent(&keys::session(&record.session_id), &value, ttl.duration())
            .await?;
        if written {
            Ok(record)
        } else {
            Err(SessionError::Exists)
        }
    }

    /// The record as stored; no TTL change (only writes slide it).
    pub async fn get(&self, id: &Id) -> Result<SessionRecord, SessionError> {
        let raw = self.read(id).await?;
        decode(&raw)
    }

    /// Shallow-merges metadata (`null` removes a key).
    pub async fn patch(
        &self,
        id: &Id,
        patch: Map<String, Value>,
    ) -> Result<SessionRecord, SessionError> {
        self.update(id, |record| {
            record.merge_metadata(patch.clone());
            Ok(())
        })
        .await
    }

    /// Adds a member (409 if present, or if the session is full); slides the TTL.
    pub async fn add_member(
        &self,
        id: &Id,
        member: NewMember,
    ) -> Result<SessionRecord, SessionError> {
        self.update(id, |record| {
            if record
                .members
                .iter()
                .any(|m| m.member_id == member.member_id)
            {
                return Err(SessionError::MemberExists);
            }
            if record.members.len() >= self.max_members {
                return Err(SessionError::Full(self.max_members));
            }
            record.members.push(Member {
                member_id: member.member_id.clone(),
                display_name: member
                    .display_name
                    .clone()
                    .unwrap_or_else(|| member.member_id.to_string()),
                role: member
                    .role
                    .clone()
                    .unwrap_or_else(|| "participant".to_string()),
                joined_at: unix_now(),
            });
            Ok(())
        })
        .await
    }

    /// Removes a member (404 if absent); slides the TTL.
    pub async fn remove_member(
        &self,
        id: &Id,
        member_id: &Id,
    ) -> Result<SessionRecord, SessionError> {
        self.update(id, |record| {
            let before = record.members.len();
            record.members.retain(|m| &m.member_id != member_id);
            if record.members.len() == before {
                return Err(SessionError::MemberNotFound);
            }
            Ok(())
        })
        .await
    }

    /// Fails with `NotFound` unless the record exists (or, during a
    /// fallback, `OnlyInRedis` when it may exist only there).
    pub async fn ensure_exists(&self, id: &Id) -> Result<(), SessionError> {
        self.read_for_write(id).await.map(|_| ())
    }

    /// Deletes the record. The caller revokes the session's token first:
    /// if that fails the record stays, so a retry of the whole end finds
    /// the session and finishes the job instead of answering 404.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn end(&self, id: &Id) -> Result<(), SessionError> {
        self.read_for_write(id).await?;
        if self.store.delete(&keys::session(id)).await? {
            Ok(())
        } else {
            Err(SessionError::NotFound)
        }
    }

    /// Read-modify-write with compare-and-swap; the write slides the TTL.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    async fn update(
        &self,
        id: &Id,
        change: impl Fn(&mut SessionRecord) -> Result<(), SessionError>,
    ) -> Result<SessionRecord, SessionError> {
        let key = keys::session(id);
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            if attempt > 0 {
                let cap = 2u64.pow(attempt.min(5));
                let pause = rand::rng().random_range(0..=cap);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let raw = self.read_for_write(id).await?;
            let mut record = decode(&raw)?;
            change(&mut record)?;
            record.touch(unix_now());
            self.check_size(&record)?;
            let value = encode(&record)?;
            let ttl = Duration::from_secs(record.ttl_seconds.max(1));
            if self
                .store
                .compare_and_swap(&key, &raw, Some(&value), ttl)
                .await?
            {
                return Ok(record);
            }
        }
        Err(SessionError::Contended)
    }

    /// Reads a record a write needs. While the store serves from a
    /// fallback, a miss may be a record only Redis holds: refuse (503)
    /// rather than answer 404 or invent one.
    async fn read_for_write(&self, id: &Id) -> Result<String, SessionError> {
        match self.read(id).await {
            Err(SessionError::NotFound) if !self.store.authoritative() => {
                Err(SessionError::OnlyInRedis)
            }
            other => other,
        }
    }

    async fn read(&self, id: &Id) -> Result<String, SessionError> {
        self.store
            .get(&keys::session(id))
            .await?
            .ok_or(SessionError::NotFound)
    }

    fn check_size(&self, record: &SessionRecord) -> Result<(), SessionError> {
        let size = serde_json::to_vec(&record.metadata).map_or(usize::MAX, |v| v.len());
        if size > self.max_metadata_bytes {
            return Err(SessionError::TooLarge(self.max_metadata_bytes));
        }
        Ok(())
    }
}

fn encode(record: &SessionRecord) -> Result<String, SessionError> {
    serde_json::to_string(record).map_err(|e| SessionError::Corrupt(e.to_string()))
}

fn decode(raw: &str) -> Result<SessionRecord, SessionError> {
    serde_json::from_str(raw).map_err(|e| SessionError::Corrupt(e.to_string()))
}
