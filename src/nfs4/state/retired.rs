//! Owners kept after their last open or lock went, so that a
//! retransmission of their last request is replayed (RFC 7530 §9.1.7),
//! oldest forgotten first past a limit. Every call that steps an owner's
//! seqid asks whether it was retired and takes it back: with a client that
//! uses a new open-owner per open (libnfs), that is every OPEN, CLOSE and
//! OPEN_CONFIRM, so membership, taking back and retiring cost O(1) here
//! rather than a scan of up to the limit under the state lock.

use std::collections::{HashMap, VecDeque};

use super::OwnerKey;

#[derive(Debug, Default)]
pub(super) struct Retired {
    /// Each retired owner, with the number of its turn in `order`.
    turns: HashMap<OwnerKey, u64>,
    /// Retired owners, oldest first, by turn; an entry whose owner has
    /// been taken back (or retired again later) is stale and skipped.
    order: VecDeque<(u64, OwnerKey)>,
    next_turn: u64,
}

impl Retired {
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn contains(&self, key: &OwnerKey) -> bool {
        self.turns.contains_key(key)
    }

    /// Retires `key` (once); returns the owners past `limit`, oldest
    /// first, that are forgotten now.
    pub fn retire(&mut self, key: OwnerKey, limit: usize) -> Vec<OwnerKey> {
        if self.turns.contains_key(&key) {
            return Vec::new();
        }
        let turn = self.next_turn;
        self.next_turn += 1;
        self.turns.insert(key.clone(), turn);
        self.order.push_back((turn, key));
        let mut forgotten = Vec::new();
        while self.turns.len() > limit {
            let Some((turn, key)) = self.order.pop_front() else {
                break;
            };
            if self.turns.get(&key) == Some(&turn) {
                self.turns.remove(&key);
                forgotten.push(key);
            }
        }
        self.compact();
        forgotten
    }

    /// `key` has state again, or is gone: it is no longer retired.
    pub fn take_back(&mut self, key: &OwnerKey) {
        if self.turns.remove(key).is_some() {
            self.compact();
        }
    }

    /// Forgets every retired owner of `clientid`.
    pub fn release_client(&mut self, clientid: u64) {
        self.turns.retain(|k, _| k.clientid != clientid);
        self.order.retain(|(_, k)| k.clientid != clientid);
    }

    /// Drops stale entries once they outnumber the live ones: `order`
    /// stays within twice the retired owners (plus a little), at an
    /// amortised O(1) a call.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.turns.len() + 64 {
            let turns = &self.turns;
            self.order.retain(|(t, k)| turns.get(k) == Some(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> OwnerKey {
        OwnerKey::open(1, &n.to_be_bytes())
    }

    #[test]
    fn the_oldest_retired_owners_are_forgotten_past_the_limit() {
        let mut r = Retired::default();
        assert!(r.retire(key(1), 2).is_empty());
        assert!(r.retire(key(2), 2).is_empty());
        assert!(r.retire(key(1), 2).is_empty(), "retired once only");
        assert_eq!(r.retire(key(3), 2), vec![key(1)]);
        assert!(!r.contains(&key(1)));
        assert!(r.contains(&key(2)) && r.contains(&key(3)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn an_owner_taken_back_and_retired_again_counts_from_its_new_turn() {
        let mut r = Retired::default();
        r.retire(key(1), 2);
        r.retire(key(2), 2);
        r.take_back(&key(1));
        assert!(!r.contains(&key(1)));
        r.retire(key(1), 2);
        // key(1)'s first turn is stale: key(2) is now the oldest.
        assert_eq!(r.retire(key(3), 2), vec![key(2)]);
        assert!(r.contains(&key(1)));
    }

    #[test]
    fn stale_turns_do_not_pile_up() {
        let mut r = Retired::default();
        for round in 0..10_000u32 {
            r.retire(key(round % 3), 1024);
            r.take_back(&key(round % 3));
        }
        assert_eq!(r.len(), 0);
        assert!(
            r.order.len() <= 64 + 1,
            "{} stale turns kept",
            r.order.len()
        );
    }

    #[test]
    fn releasing_a_client_forgets_its_owners_only() {
        let mut r = Retired::default();
        r.retire(OwnerKey::open(1, b"a"), 8);
        r.retire(OwnerKey::open(2, b"a"), 8);
        r.release_client(1);
        assert!(!r.contains(&OwnerKey::open(1, b"a")));
        assert!(r.contains(&OwnerKey::open(2, b"a")));
        assert_eq!(r.len(), 1);
    }
}
