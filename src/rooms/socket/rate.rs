//! The per-connection frame limit as two token buckets, measured on the
//! frames as the client sends them: `rooms.messages_per_second` tokens a
//! second with a burst of one second's worth (over it: the error frame
//! `rate_limited`), and twice that (over it: close 1008).
//!
//! A bucket only measures the client: the socket reads continuously and
//! never waits on Redis while reading, so frames arrive as they were sent,
//! and a stall of the broker's own (a failover) shows up at most as a burst
//! the one-second allowance absorbs, never as a client over its rate.

use std::time::Instant;

/// What a frame costs the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Over the rate: refuse this frame.
    Over,
    /// Over twice the rate: close the socket.
    Abusive,
}

pub struct Rate {
    per_second: f32,
    /// Tokens of the refusal bucket (capacity `per_second`).
    tokens: f32,
    /// Tokens of the close bucket (capacity and refill twice as much).
    abuse: f32,
    at: Instant,
}

impl Rate {
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1) as f32;
        Self {
            per_second,
            tokens: per_second,
            abuse: 2.0 * per_second,
            at: Instant::now(),
        }
    }

    pub fn hit(&mut self) -> Verdict {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f32();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        let cap = 2.0 * self.per_second;
        self.abuse = (self.abuse + elapsed * cap).min(cap);
        if self.abuse < 1.0 {
            return Verdict::Abusive;
        }
        self.abuse -= 1.0;
        if self.tokens < 1.0 {
            return Verdict::Over;
        }
        self.tokens -= 1.0;
        Verdict::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_steady_client_at_the_limit_is_never_refused() {
        let start = Instant::now();
        let mut rate = Rate::new(50);
        for i in 0..5_000u32 {
            let at = start + Duration::from_millis(20) * i;
            assert_eq!(rate.hit_at(at), Verdict::Ok, "frame {i}");
        }
    }

    #[test]
    fn a_second_of_burst_is_allowed_then_refused_then_closed() {
        let at = Instant::now();
        let mut rate = Rate::new(5);
        for _ in 0..5 {
            assert_eq!(rate.hit_at(at), Verdict::Ok);
        }
        for _ in 0..5 {
            assert_eq!(rate.hit_at(at), Verdict::Over);
        }
        assert_eq!(rate.hit_at(at), Verdict::Abusive);
        // Refilled after a quiet second.
        assert_eq!(rate.hit_at(at + Duration::from_secs(1)), Verdict::Ok);
    }

    #[test]
    fn one_and_a_half_times_the_rate_is_refused_in_part_but_not_closed() {
        let start = Instant::now();
        let mut rate = Rate::new(50);
        let (mut over, mut ok) = (0, 0);
        for i in 0..3_000u32 {
            match rate.hit_at(start + Duration::from_micros(13_333) * i) {
                Verdict::Ok => ok += 1,
                Verdict::Over => over += 1,
                Verdict::Abusive => panic!("closed at frame {i}"),
            }
        }
        assert!(over > 900 && ok > 1_900, "ok {ok}, over {over}");
    }
}
