//! The drill's report: what happened around the trigger and what was lost.
//! A table for people (default), JSON for machines (`--json`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::load::Sample;

/// Everything the drill measured and verified.
#[derive(Debug, Serialize)]
pub struct Report {
    pub duration_s: f64,
    pub trigger: String,
    /// Seconds since the start.
    pub triggered_at_s: f64,
    /// Trigger to the sentinels agreeing on a new master; `None` if they never did.
    pub promotion_s: Option<f64>,
    pub old_master: Option<String>,
    pub new_master: Option<String>,
    pub operations: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Per broker: first and last failed write, seconds relative to the trigger.
    pub write_failure_windows: Vec<Window>,
    pub latency_ms: Phases,
    pub verified: Verified,
    pub timeline: Vec<Second>,
    /// True when something acknowledged was lost (exit status 1).
    pub lost_anything: bool,
}

#[derive(Debug, Serialize)]
pub struct Window {
    pub broker: String,
    pub failed_writes: u64,
    pub from_s: Option<f64>,
    pub to_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Phases {
    pub before: Percentiles,
    pub during: Percentiles,
    pub after: Percentiles,
}

#[derive(Debug, Serialize, Default)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
}

/// The verification of every acknowledged write.
#[derive(Debug, Serialize, Default)]
pub struct Verified {
    pub tokens_acknowledged: u64,
    pub tokens_missing: u64,
    pub tokens_different: u64,
    pub sessions_acknowledged: u64,
    pub sessions_missing: u64,
    pub chunks_acknowledged: u64,
    pub chunk_indices_duplicated: u64,
    pub chunks_missing: u64,
    pub room_messages_published: u64,
    pub room_members: u64,
    /// (message, member) pairs not delivered.
    pub room_messages_missing: u64,
    pub room_messages_duplicated: u64,
    pub room_publishes_refused: u64,
    pub websockets_dropped: u64,
}

impl Verified {
    /// Acknowledged writes lost or damaged. Room deliveries a refusal
    /// explains are not losses (the publisher was told).
    pub fn lost(&self) -> bool {
        let rooms_lost =
            self.room_messages_missing > self.room_publishes_refused * self.room_members.max(1);
        self.tokens_missing + self.tokens_different + self.sessions_missing > 0
            || self.chunk_indices_duplicated + self.chunks_missing > 0
            || rooms_lost
    }
}

/// One second of the timeline.
#[derive(Debug, Serialize)]
pub struct Second {
    pub t: u64,
    pub ops: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

fn percentiles(mut latencies: Vec<Duration>) -> Percentiles {
    latencies.sort();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Percentiles {
        samples: latencies.len(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Latencies before the trigger, from it until `settled`, and after.
pub fn phases(samples: &[Sample], trigger: Duration, settled: Duration) -> Phases {
    let pick = |f: &dyn Fn(&Sample) -> bool| {
        percentiles(samples.iter().filter(|s| f(s)).map(|s| s.latency).collect())
    };
    Phases {
        before: pick(&|s| s.at < trigger),
        during: pick(&|s| s.at >= trigger && s.at < settled),
        after: pick(&|s| s.at >= settled),
    }
}

pub fn timeline(samples: &[Sample], seconds: u64) -> Vec<Second> {
    (0..seconds)
        .map(|t| {
            let in_second: Vec<&Sample> = samples.iter().filter(|s| s.at.as_secs() == t).collect();
            Second {
                t,
                ops: in_second.len() as u64,
                errors: in_second.iter().filter(|s| s.error.is_some()).count() as u64,
                p99_ms: percentiles(in_second.iter().map(|s| s.latency).collect()).p99,
            }
        })
        .collect()
}

pub fn windows(samples: &[Sample], brokers: &[String], trigger: Duration) -> Vec<Window> {
    let rel = |d: Duration| d.as_secs_f64() - trigger.as_secs_f64();
    brokers
        .iter()
        .enumerate()
        .map(|(i, broker)| {
            let failed: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.broker == i && s.write && s.error.is_some())
                .collect();
            Window {
                broker: broker.clone(),
                failed_writes: failed.len() as u64,
                from_s: failed.first().map(|s| rel(s.at)),
                to_s: failed.iter().map(|s| s.at).max().map(rel),
            }
        })
        .collect()
}

pub fn errors_by_kind(samples: &[Sample]) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for s in samples {
        if let Some(e) = &s.error {
            *kinds.entry(format!("{} {e}", s.kind)).or_insert(0) += 1;
        }
    }
    kinds
}

impl Report {
    /// The human table.
    pub fn print(&self) {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "failover drill, {:.0} s, trigger {} at {:.1} s",
            self.duration_s, self.trigger, self.triggered_at_s
        );
        println!(
            "  master {} -> {}, promotion {} s",
            self.old_master.as_deref().unwrap_or("?"),
            self.new_master.as_deref().unwrap_or("?"),
            opt(self.promotion_s)
        );
        println!("  operations {}, errors {}", self.operations, self.errors);
        for (kind, n) in &self.errors_by_kind {
            println!("    {kind}: {n}");
        }
        println!("  write failures per broker (s from the trigger):");
        for w in &self.write_failure_windows {
            println!(
                "    {}: {} failed, {} .. {}",
                w.broker,
                w.failed_writes,
                opt(w.from_s),
                opt(w.to_s)
            );
        }
        let l = &self.latency_ms;
        println!("  latency ms    p50      p99");
        for (name, p) in [
            ("before", &l.before),
            ("during", &l.during),
            ("after", &l.after),
        ] {
            println!(
                "    {name:<8} {:>8.2} {:>8.2}  ({} ops)",
                p.p50, p.p99, p.samples
            );
        }
        let v = &self.verified;
        println!("  verified:");
        println!(
            "    tokens      {} acknowledged, {} missing, {} different",
            v.tokens_acknowledged, v.tokens_missing, v.tokens_different
        );
        println!(
            "    sessions    {} acknowledged, {} missing",
            v.sessions_acknowledged, v.sessions_missing
        );
        println!(
            "    chunks      {} acknowledged, {} indices duplicated, {} missing",
            v.chunks_acknowledged, v.chunk_indices_duplicated, v.chunks_missing
        );
        println!(
            "    rooms       {} published to {} members, {} deliveries missing, {} duplicated, {} refused",
            v.room_messages_published, v.room_members, v.room_messages_missing, v.room_messages_duplicated, v.room_publishes_refused
        );
        println!("    websockets  {} dropped", v.websockets_dropped);
        println!(
            "  result: {}",
            if self.lost_anything {
                "LOSS: something acknowledged was lost"
            } else {
                "nothing acknowledged was lost"
            }
        );
    }
}
