//! Who is in a room: joins and leaves of local connections, the room's
//! view of the members present on any instance (so each change reaches the
//! local connections once, and one whose announcement was lost still does,
//! at the next presence refresh), and what a joining socket is sent first.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::{JoinRequest, Joined, Resume, RoomTask};
use crate::rooms::bus::memory::new_epoch;
use crate::rooms::bus::Delivery;
use crate::rooms::conn::Conn;
use crate::rooms::protocol::{render, PresenceKind, Welcome};

impl RoomTask {
    /// Applies a presence change to the room's view of who is present on
    /// any instance, and tells the local connections (but the member's
    /// own) when it changed the view: each change once, however many ways
    /// it arrived (this instance, another's announcement, a refresh).
    pub(super) fn presence_frame(&mut self, kind: PresenceKind, member: &str) {
        // Before the first join there is nobody to tell; the join reads
        // who is there.
        let Some(view) = self.view.as_mut() else {
            return;
        };
        let changed = match kind {
            PresenceKind::Join => view.insert(member.to_string()),
            PresenceKind::Leave => view.remove(member),
        };
        if !changed {
            return;
        }
        let frame = render::presence(kind, member);
        let mut slow = Vec::new();
        for (conn_id, conn) in &mut self.conns {
            if conn.member != member && !conn.send(&frame) {
                slow.push(*conn_id);
            }
        }
        self.drop_slow(slow);
    }

    /// Tells this instance's connections and every other instance about a
    /// presence change.
    async fn announce(&mut self, kind: PresenceKind, member: &str) {
        self.presence_frame(kind, member);
        if let Err(e) = self.bus.announce(&self.id, kind, member).await {
            tracing::debug!(room = %self.id, error = %e, "presence event not sent; local only");
        }
    }

    pub(super) async fn join(&mut self, request: JoinRequest) -> Joined {
        let count = {
            let count = self.members.entry(request.conn.member.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let recorded = self
            .bus
            .presence_join(&self.id, &request.conn.member, count)
            .await;
        let members: Vec<String> = match self.bus.members(&self.id).await {
            Ok(all) => all.into_iter().map(|(m, _)| m).collect(),
            Err(_) => {
                let mut local: Vec<String> = self.members.keys().cloned().collect();
                local.sort();
                local
            }
        };
        // The room's first join (again, after it retired) sees who is there;
        // from then on changes keep the view.
        if self.view.is_none() {
            self.view = Some(members.iter().cloned().collect());
        }
        match recorded {
            Ok(true) => {
                self.announce(PresenceKind::Join, &request.conn.member)
                    .await
            }
            Ok(false) if count == 1 => {
                self.presence_frame(PresenceKind::Join, &request.conn.member)
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(room = %self.id, error = %e, "presence not recorded");
                self.presence_frame(PresenceKind::Join, &request.conn.member);
            }
        }
        let epoch = self.epoch.get_or_insert_with(new_epoch).clone();
        let last = self.last.unwrap_or(0);
        let (recovered, replay, last_sent) =
            self.resume(request.resume.as_ref(), &epoch, last).await;
        let welcome = render::welcome(&Welcome {
            room: self.id.as_str(),
            member_id: &request.conn.member,
            members: &members,
            epoch: &epoch,
            last_id: last,
            recovered,
            expires_at: request.expires_at,
        });
        let mut frames = Vec::with_capacity(1 + replay.len());
        frames.push(welcome);
        frames.extend(
            replay
                .iter()
                .map(|d| render::message(self.id.as_str(), &d.message.from, &d.message.data, d.id)),
        );
        let last_sent = replay.iter().map(|d| d.id).fold(last_sent, u64::max);
        self.conns.insert(
            request.conn_id,
            Conn::new(request.conn, self.queue, last_sent),
        );
        self.shared.connections.fetch_add(1, Ordering::AcqRel);
        Joined { frames }
    }

    /// What a resuming client gets: whether nothing was missed, the missed
    /// messages, and the id it is then at.
    async fn resume(
        &self,
        resume: Option<&Resume>,
        epoch: &str,
        last: u64,
    ) -> (Option<bool>, Vec<Delivery>, u64) {
        let Some(resume) = resume else {
            return (None, Vec::new(), last);
        };
        if resume.epoch != epoch {
            return (Some(false), Vec::new(), last);
        }
        if resume.since >= last {
            return (Some(true), Vec::new(), resume.since);
        }
        match self.bus.history(&self.id, resume.since).await {
            Ok(missed) => {
                // Ids are contiguous within an epoch: history reaches back
                // far enough when it starts right after `since`.
                let whole = missed
                    .first()
                    .is_some_and(|d| d.id == resume.since + 1 && d.epoch == epoch);
                (Some(whole), missed, last)
            }
            Err(e) => {
                tracing::debug!(room = %self.id, error = %e, "history unavailable for a resume");
                (Some(false), Vec::new(), last)
            }
        }
    }

    pub(super) async fn remove(&mut self, conn_id: u64) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        self.emptied = self.conns.is_empty();
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        let remaining = match self.members.get_mut(&conn.member) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => 0,
        };
        if remaining > 0 {
            let _ = self
                .bus
                .presence_join(&self.id, &conn.member, remaining)
                .await;
            return;
        }
        self.members.remove(&conn.member);
        match self.bus.presence_leave(&self.id, &conn.member).await {
            Ok(true) => self.announce(PresenceKind::Leave, &conn.member).await,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(room = %self.id, error = %e, "presence leave not recorded");
                self.presence_frame(PresenceKind::Leave, &conn.member);
            }
        }
    }

    /// Refreshes this instance's presence and announces members that
    /// vanished elsewhere (an instance that died) or reappeared; then
    /// compares the view with everyone present, so a change whose
    /// announcement pub/sub dropped (a failover, a resubscribe) still
    /// reaches the local connections.
    ///
    /// The diff cannot run against an event not yet seen: the room awaits
    /// the refresh inline, so every event it processed before was
    /// published before the refresh ran in Redis, and every later one is
    /// processed after the diff (and deduplicated by the view).
    pub(super) async fn sync_presence(&mut self) {
        let local: Vec<(String, usize)> =
            self.members.iter().map(|(m, c)| (m.clone(), *c)).collect();
        let changes = match self.bus.presence_sync(&self.id, &local).await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::debug!(room = %self.id, error = %e, "presence refresh failed");
                return;
            }
        };
        for member in changes.joined {
            self.announce(PresenceKind::Join, &member).await;
        }
        for member in changes.left {
            self.announce(PresenceKind::Leave, &member).await;
        }
        let Some(all) = changes.all else {
            return;
        };
        let all: HashSet<String> = all.into_iter().collect();
        let view = self.view.clone().unwrap_or_default();
        for gone in view.difference(&all) {
            tracing::debug!(room = %self.id, member = %gone, "left unannounced; telling local members");
            self.presence_frame(PresenceKind::Leave, gone);
        }
        for new in all.difference(&view) {
            self.presence_frame(PresenceKind::Join, new);
        }
    }
}
