//! An instance's open sockets (rooms, recordings), by connection and by
//! the token ids (`jti`) they were opened or refreshed with, so that a
//! revocation reaches every live socket of that token (SPEC section 6:
//! 4003 within a second), and a drain reaches them all. `H` is the wing's
//! handle for closing one socket.
//!
//! A plain map under a lock: it is touched when a socket opens, refreshes
//! or closes and when a token is revoked, never per message.

use std::collections::HashMap;
use std::sync::Mutex;

struct Entry<H> {
    link: H,
    jtis: Vec<String>,
}

struct Index<H> {
    by_conn: HashMap<u64, Entry<H>>,
    by_jti: HashMap<String, Vec<u64>>,
}

/// See the module doc.
pub struct LiveTokens<H> {
    index: Mutex<Index<H>>,
}

impl<H> Default for LiveTokens<H> {
    fn default() -> Self {
        Self {
            index: Mutex::new(Index {
                by_conn: HashMap::new(),
                by_jti: HashMap::new(),
            }),
        }
    }
}

impl<H: Clone> LiveTokens<H> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index<H>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket opened with the token `jti`.
    pub fn add(&self, conn_id: u64, link: H, jti: &str) {
        let mut index = self.lock();
        index.by_conn.insert(
            conn_id,
            Entry {
                link,
                jtis: Vec::new(),
            },
        );
        index.add_jti(conn_id, jti);
    }

    /// The socket was refreshed with the token `jti` (the old ones still
    /// count: revoking any of them closes it).
    pub fn add_jti(&self, conn_id: u64, jti: &str) {
        self.lock().add_jti(conn_id, jti);
    }

    pub fn remove(&self, conn_id: u64) {
        let mut index = self.lock();
        let Some(entry) = index.by_conn.remove(&conn_id) else {
            return;
        };
        for jti in entry.jtis {
            if let Some(conns) = index.by_jti.get_mut(&jti) {
                conns.retain(|c| *c != conn_id);
                if conns.is_empty() {
                    index.by_jti.remove(&jti);
                }
            }
        }
    }

    /// The handles of every socket opened or refreshed with one of `jtis`.
    pub fn revoked(&self, jtis: &[String]) -> Vec<H> {
        let index = self.lock();
        let mut hit = Vec::new();
        for jti in jtis {
            for conn_id in index.by_jti.get(jti).into_iter().flatten() {
                if let Some(entry) = index.by_conn.get(conn_id) {
                    hit.push(entry.link.clone());
                }
            }
        }
        hit
    }

    /// Every open socket's handle, oldest connection first.
    pub fn links(&self) -> Vec<H> {
        let index = self.lock();
        let mut all: Vec<(u64, H)> = index
            .by_conn
            .iter()
            .map(|(id, e)| (*id, e.link.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, link)| link).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().by_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<H> Index<H> {
    fn add_jti(&mut self, conn_id: u64, jti: &str) {
        let Some(entry) = self.by_conn.get_mut(&conn_id) else {
            return;
        };
        if entry.jtis.iter().any(|j| j == jti) {
            return;
        }
        entry.jtis.push(jti.to_string());
        self.by_jti
            .entry(jti.to_string())
            .or_default()
            .push(conn_id);
    }
}

#[cfg(test)]
mod tests {
    use super::LiveTokens;

    #[test]
    fn a_revocation_reaches_the_sockets_of_that_token_only() {
        let sockets = LiveTokens::default();
        sockets.add(1, "a", "j1");
        sockets.add(2, "b", "j2");
        sockets.add_jti(2, "j3");
        sockets.add(3, "c", "j3");
        assert_eq!(sockets.revoked(&["j3".into()]), vec!["b", "c"]);
        sockets.remove(1);
        assert!(sockets.revoked(&["j1".into()]).is_empty());
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets.links(), vec!["b", "c"]);
        sockets.remove(2);
        assert_eq!(sockets.revoked(&["j3".into()]), vec!["c"]);
    }
}
