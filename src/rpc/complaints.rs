//! Warnings about what clients send (records that cannot be read or
//! answered, calls refused for their shape), rate-limited per client
//! address and kind: the first in each interval is logged, the rest are
//! counted and the count goes with the next line logged for them. A client
//! sending junk in a loop costs the log one line a minute, not one a record.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One line per address per interval.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Addresses remembered; past it, the oldest are forgotten (a flood from
/// many addresses then logs a little more, never holds more memory).
const ADDRESSES: usize = 4096;

struct Seen {
    /// When the line last logged for this address went out.
    logged: Instant,
    /// Complaints held back since.
    held_back: u64,
}

/// Per-address state of the complaints log.
pub struct Complaints {
    seen: Mutex<HashMap<(Option<IpAddr>, &'static str), Seen>>,
    interval: Duration,
}

impl Complaints {
    pub fn new(interval: Duration) -> Complaints {
        Complaints {
            seen: Mutex::new(HashMap::new()),
            interval,
        }
    }

    /// The server's complaints log.
    pub fn global() -> &'static Complaints {
        static LOG: OnceLock<Complaints> = OnceLock::new();
        LOG.get_or_init(|| Complaints::new(INTERVAL))
    }

    /// Whether a complaint of kind `what` about `peer` is logged now, and
    /// how many were held back before it; None when it is held back.
    pub fn admit(&self, peer: Option<IpAddr>, what: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        let key = (peer, what);
        if let Some(s) = seen.get_mut(&key) {
            if now.duration_since(s.logged) < self.interval {
                s.held_back += 1;
                return None;
            }
            let held = s.held_back;
            *s = Seen {
                logged: now,
                held_back: 0,
            };
            return Some(held);
        }
        if seen.len() >= ADDRESSES {
            let oldest = seen.iter().min_by_key(|(_, s)| s.logged).map(|(k, _)| *k);
            if let Some(k) = oldest {
                seen.remove(&k);
            }
        }
        seen.insert(
            key,
            Seen {
                logged: now,
                held_back: 0,
            },
        );
        Some(0)
    }

    /// Logs `what` (with `detail`) about `peer` at WARN, if its turn.
    pub fn warn(&self, peer: Option<IpAddr>, what: &'static str, detail: &dyn Display) {
        if let Some(held_back) = self.admit(peer, what, Instant::now()) {
            let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
            tracing::warn!(
                %peer,
                detail = %detail,
                held_back,
                "{what} (at most one such line per client address a minute; held_back: since the last)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_per_interval_with_the_count_held_back() {
        let log = Complaints::new(Duration::from_secs(60));
        let a = Some("10.0.0.5".parse().unwrap());
        let b = Some("10.0.0.6".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(log.admit(a, "junk", t0), Some(0));
        for i in 1..=99 {
            assert_eq!(log.admit(a, "junk", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            log.admit(b, "junk", t0),
            Some(0),
            "another address has its own"
        );
        assert_eq!(
            log.admit(a, "too big", t0),
            Some(0),
            "another kind has its own"
        );
        assert_eq!(log.admit(a, "junk", t0 + Duration::from_secs(61)), Some(99));
        assert_eq!(log.admit(a, "junk", t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let log = Complaints::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(ADDRESSES as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            log.admit(Some(ip), "junk", t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(log.seen.lock().len(), ADDRESSES);
    }
}
