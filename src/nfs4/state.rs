//! NFSv4.0 state (RFC 7530 §9, §16.33–34): client records, leases, open and
//! lock owners with seqids and replay, share reservations, byte-range locks
//! and the grace period after a restart. No I/O: every rule takes the
//! current time as an argument, so it is tested deterministically.
//!
//! Client ids and stateids carry the server's boot instance, so anything
//! handed out before a restart is recognised as stale (STALE_CLIENTID,
//! STALE_STATEID) and the client recovers. A stateid also carries the low
//! bits of its client id, so one whose lease expired answers EXPIRED.
//!
//! This file holds the types, client records, leases, courtesy clients
//! and seqid replay; opens and share reservations are in `opens.rs`,
//! byte-range locks in `locks.rs` (each an `impl State`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::consts::{
    Status, OPEN4_SHARE_ACCESS_BOTH, OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE,
};

/// stateid4
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateId {
    pub seqid: u32,
    pub other: [u8; 12],
}

impl StateId {
    pub const ANONYMOUS: StateId = StateId {
        seqid: 0,
        other: [0; 12],
    };
    pub const READ_BYPASS: StateId = StateId {
        seqid: u32::MAX,
        other: [0xff; 12],
    };

    pub fn is_special(&self) -> bool {
        *self == Self::ANONYMOUS || *self == Self::READ_BYPASS
    }
}

/// Lock types (nfs_lock_type4); the W forms are blocking requests, which
/// the client retries while they are denied.
pub const READ_LT: u32 = 1;
pub const WRITE_LT: u32 = 2;
pub const READW_LT: u32 = 3;
pub const WRITEW_LT: u32 = 4;

fn is_write_lock(t: u32) -> bool {
    t == WRITE_LT || t == WRITEW_LT
}

/// Open-owners and lock-owners have separate name spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Open,
    Lock,
}

/// Names an open-owner or a lock-owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    pub kind: OwnerKind,
    pub clientid: u64,
    pub owner: Vec<u8>,
}

impl OwnerKey {
    pub fn open(clientid: u64, owner: &[u8]) -> OwnerKey {
        OwnerKey {
            kind: OwnerKind::Open,
            clientid,
            owner: owner.to_vec(),
        }
    }

    pub fn lock(clientid: u64, owner: &[u8]) -> OwnerKey {
        OwnerKey {
            kind: OwnerKind::Lock,
            clientid,
            owner: owner.to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
struct ClientRecord {
    id: Vec<u8>,
    verifier: [u8; 8],
    principal: String,
    confirm: [u8; 8],
    confirmed: bool,
    last_renew: Instant,
}

/// The last reply of an owner, replayed for a retransmitted request.
#[derive(Debug, Clone)]
struct LastReply {
    seqid: u32,
    /// What the request was (see `ops::request_print`): a retransmission
    /// is the same request; another with the same seqid is refused.
    request: u64,
    status: Status,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Owner {
    last_seqid: u32,
    confirmed: bool,
    last_reply: Option<LastReply>,
    /// The open stateid this owner closed last (in `retired_stateids`):
    /// only its last request can be replayed, so one is kept per owner.
    last_closed: Option<[u8; 12]>,
}

#[derive(Debug, Clone)]
struct OpenState {
    seqid: u32,
    owner: OwnerKey,
    fileid: u64,
    access: u32,
    deny: u32,
    /// The share_access and share_deny values the owner's OPENs of the file
    /// asked for (bit n set: value n was asked): OPEN_DOWNGRADE may go back
    /// to one of them only (RFC 7530 §16.19.4).
    accesses_opened: u8,
    denies_opened: u8,
}

/// A locked byte range, `end` exclusive (`u64::MAX` = to end of file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    write: bool,
}

impl Range {
    fn overlaps(&self, o: &Range) -> bool {
        self.start < o.end && o.start < self.end
    }
}

#[derive(Debug, Clone)]
struct LockState {
    seqid: u32,
    owner: OwnerKey,
    fileid: u64,
    /// The open this lock state was derived from.
    open: [u8; 12],
    ranges: Vec<Range>,
}

/// LOCK4denied: the conflicting lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub offset: u64,
    pub length: u64,
    pub locktype: u32,
    pub clientid: u64,
    pub owner: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    Denied(Denied),
    Status(Status),
}

impl From<Status> for LockError {
    fn from(s: Status) -> Self {
        LockError::Status(s)
    }
}

/// Who asks for a lock (locker4).
#[derive(Debug, Clone)]
pub enum Locker<'a> {
    /// First lock of this lock-owner on the file: derived from an open.
    New {
        open_seqid: u32,
        open_stateid: StateId,
        lock_seqid: u32,
        clientid: u64,
        owner: &'a [u8],
    },
    Existing {
        lock_stateid: StateId,
        lock_seqid: u32,
    },
}

/// Counters for tests and the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub clients: usize,
    /// Open-owners with open files.
    pub open_owners: usize,
    pub opens: usize,
    pub lock_owners: usize,
    pub lock_states: usize,
    pub locked_ranges: usize,
    /// Owners kept after their last close so a retransmission is replayed
    /// (bounded).
    pub retired_owners: usize,
}

/// Most retired owners (and their last replies) kept for replay.
const RETIRED_LIMIT: usize = 1024;
/// Most expired client ids remembered to answer EXPIRED.
const EXPIRED_LIMIT: usize = 4096;
/// Most connections remembered as speaking for clients (see
/// `State::spoke_for`); past it the record starts again, which only
/// loosens the check for a while.
const SPEAKERS_LIMIT: usize = 16384;
/// Most client ids one connection is remembered speaking for.
const CLIENTS_PER_SPEAKER: usize = 4;

/// What `begin_open` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    Proceed {
        confirm_needed: bool,
    },
    /// A retransmission: answer with the recorded reply.
    Replay(Status, Vec<u8>),
}

#[derive(Debug)]
pub struct State {
    boot: u32,
    lease: Duration,
    counter: u32,
    clients: HashMap<u64, ClientRecord>,
    owners: HashMap<OwnerKey, Owner>,
    opens: HashMap<[u8; 12], OpenState>,
    locks: HashMap<[u8; 12], LockState>,
    /// Owners with no state left, kept for replay.
    retired: Retired,
    /// The last closed open stateid of each owner → the owner, for a
    /// replayed CLOSE (see `Owner::last_closed`).
    retired_stateids: HashMap<[u8; 12], OwnerKey>,
    expired: VecDeque<u64>,
    /// Client ids released because their client rebooted (bounded).
    rebooted: VecDeque<u64>,
    /// Boot instances of earlier runs (see `with_earlier_boots`).
    earlier_boots: HashSet<u32>,
    grace_until: Instant,
    /// Client ids (nfs_client_id4.id) that held state before the restart.
    reclaimable: HashSet<Vec<u8>>,
    last_sweep: Option<Instant>,
    /// How long a client whose lease ran out keeps its opens and locks
    /// while nobody conflicts with them (a "courteous" server): a Mac that
    /// slept past the lease finds its files as it left them.
    courtesy: Duration,
    /// The clients each connection (by its peer address) confirmed,
    /// renewed or opened as: I/O on that connection with a stateid of
    /// another client is refused (see `check_speaker`).
    speakers: HashMap<SocketAddr, Vec<u64>>,
}

fn next_seqid(s: u32) -> u32 {
    // seqid 0 is only ever the first value; after u32::MAX comes 1.
    if s == u32::MAX {
        1
    } else {
        s + 1
    }
}

/// Errors after which an open- or lock-owner's seqid does not advance
/// (RFC 7530 §9.1.7).
pub fn seqid_unchanged(s: Status) -> bool {
    matches!(
        s,
        Status::StaleClientId
            | Status::StaleStateId
            | Status::BadStateId
            | Status::BadSeqId
            | Status::BadXdr
            | Status::Resource
            | Status::NoFileHandle
    )
}

fn range_of(offset: u64, length: u64) -> Result<(u64, u64), Status> {
    if length == 0 {
        return Err(Status::Inval);
    }
    if length == u64::MAX {
        return Ok((offset, u64::MAX));
    }
    match offset.checked_add(length) {
        Some(end) => Ok((offset, end)),
        None => Err(Status::Inval),
    }
}

impl State {
    /// `boot` must differ between server instances. `reclaimable` lists the
    /// clients of the previous instance: while it is not empty, the grace
    /// period (`grace`) lets them reclaim and holds back new state.
    pub fn new(
        boot: u32,
        lease: Duration,
        grace: Duration,
        reclaimable: HashSet<Vec<u8>>,
        now: Instant,
    ) -> State {
        let grace_until = if reclaimable.is_empty() {
            now
        } else {
            now + grace
        };
        State {
            boot,
            lease,
            counter: 0,
            clients: HashMap::new(),
            owners: HashMap::new(),
            opens: HashMap::new(),
            locks: HashMap::new(),
            retired: Retired::default(),
            retired_stateids: HashMap::new(),
            expired: VecDeque::new(),
            rebooted: VecDeque::new(),
            earlier_boots: HashSet::new(),
            grace_until,
            reclaimable,
            last_sweep: None,
            courtesy: Duration::ZERO,
            speakers: HashMap::new(),
        }
    }

    /// Keeps expired clients' state for up to `courtesy` past their lease,
    /// until another client's request conflicts with it (then only the
    /// conflicting open or lock goes).
    /// Boot instances of earlier runs: their stateids are STALE, others
    /// this run never issued BAD.
    pub fn with_earlier_boots(mut self, boots: HashSet<u32>) -> State {
        self.earlier_boots = boots;
        self
    }

    pub fn with_courtesy(mut self, courtesy: Duration) -> State {
        self.courtesy = courtesy;
        self
    }

    /// A confirmed client past its lease, kept for courtesy: its state
    /// gives way to any conflicting request.
    fn is_courtesy(&self, clientid: u64, now: Instant) -> bool {
        self.clients
            .get(&clientid)
            .is_some_and(|c| c.confirmed && now.duration_since(c.last_renew) > self.lease)
    }

    /// Drops an open of a courtesy client that stands in another client's
    /// way, with the locks that derive from it.
    fn revoke_open(&mut self, other: &[u8; 12]) {
        if let Some(o) = self.opens.remove(other) {
            tracing::info!(
                clientid = o.owner.clientid,
                fileid = o.fileid,
                "an expired client's open gave way to another client"
            );
        }
        self.locks.retain(|_, l| l.open != *other);
    }

    /// Drops a lock state of a courtesy client that stands in another
    /// client's way.
    fn revoke_lock(&mut self, other: &[u8; 12]) {
        if let Some(l) = self.locks.remove(other) {
            tracing::info!(
                clientid = l.owner.clientid,
                fileid = l.fileid,
                "an expired client's lock gave way to another client"
            );
        }
    }

    /// The first conflicting lock of another owner, after dropping those
    /// of courtesy clients in the way.
    fn live_conflict(
        &mut self,
        fileid: u64,
        owner: &OwnerKey,
        want: &Range,
        now: Instant,
    ) -> Option<Denied> {
        loop {
            let (other, denied) = self.conflict(fileid, owner, want)?;
            if !self.is_courtesy(denied.clientid, now) {
                return Some(denied);
            }
            self.revoke_lock(&other);
        }
    }

    pub fn counts(&self) -> StateCounts {
        let live = |kind: OwnerKind| {
            self.owners
                .keys()
                .filter(|k| k.kind == kind && !self.retired.contains(k))
                .count()
        };
        StateCounts {
            clients: self.clients.len(),
            open_owners: live(OwnerKind::Open),
            opens: self.opens.len(),
            lock_owners: live(OwnerKind::Lock),
            lock_states: self.locks.len(),
            locked_ranges: self.locks.values().map(|l| l.ranges.len()).sum(),
            retired_owners: self.retired.len(),
        }
    }

    pub fn in_grace(&self, now: Instant) -> bool {
        now < self.grace_until
    }

    fn next(&mut self) -> u32 {
        self.counter = self.counter.wrapping_add(1);
        self.counter
    }

    fn new_clientid(&mut self) -> u64 {
        ((self.boot as u64) << 32) | self.next() as u64
    }

    fn new_stateid_other(&mut self, clientid: u64) -> [u8; 12] {
        let mut o = [0u8; 12];
        o[..4].copy_from_slice(&self.boot.to_be_bytes());
        o[4..8].copy_from_slice(&(clientid as u32).to_be_bytes());
        o[8..].copy_from_slice(&self.next().to_be_bytes());
        o
    }

    fn is_this_boot(&self, clientid: u64) -> bool {
        (clientid >> 32) as u32 == self.boot
    }

    /// Releases the state of clients whose lease ran out (so others can
    /// proceed) and forgets stale unconfirmed records. Runs at most once a
    /// second; returns the ids of the clients that expired.
    pub fn expire(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let lease = self.lease;
        let kept_until = lease + self.courtesy;
        let gone: Vec<(u64, bool)> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_renew) > lease)
            .map(|(k, c)| (*k, c.confirmed, now.duration_since(c.last_renew)))
            .filter(|(k, confirmed, silent)| {
                // A courtesy client keeps its state while it has any.
                !(*confirmed && *silent <= kept_until && self.holds_state(*k))
            })
            .map(|(k, confirmed, _)| (k, confirmed))
            .collect();
        let mut ids = Vec::new();
        for (k, confirmed) in gone {
            if let Some(rec) = self.clients.get(&k) {
                tracing::debug!(
                    clientid = k,
                    confirmed,
                    silent_for = ?now.duration_since(rec.last_renew),
                    id = %String::from_utf8_lossy(&rec.id),
                    "lease expired"
                );
                if confirmed {
                    ids.push(rec.id.clone());
                }
            }
            self.release_client(k);
            if confirmed {
                self.remember_expired(k);
            }
        }
        ids
    }

    /// SETCLIENTID: returns (clientid, setclientid_confirm).
    pub fn set_client_id(
        &mut self,
        id: &[u8],
        verifier: [u8; 8],
        principal: &str,
        now: Instant,
    ) -> Result<(u64, [u8; 8]), Status> {
        let confirmed = self
            .clients
            .iter()
            .find(|(_, c)| c.confirmed && c.id == id)
            .map(|(k, c)| (*k, c.clone()));
        // Forget earlier unconfirmed attempts of this client.
        self.clients.retain(|_, c| c.confirmed || c.id != id);
        if let Some((k, c)) = &confirmed {
            if c.principal != principal && self.holds_state(*k) {
                return Err(Status::ClidInUse);
            }
        }
        let clientid = match &confirmed {
            // Same incarnation (a callback update): keep the clientid.
            Some((k, c)) if c.verifier == verifier => *k,
            // New client or a rebooted one: a new clientid; the old state
            // goes when the new one is confirmed.
            _ => self.new_clientid(),
        };
        let mut confirm = [0u8; 8];
        confirm[..4].copy_from_slice(&self.boot.to_be_bytes());
        confirm[4..].copy_from_slice(&self.next().to_be_bytes());
        match confirmed {
            Some((k, _)) if k == clientid => {
                if let Some(c) = self.clients.get_mut(&k) {
                    c.confirm = confirm;
                    c.principal = principal.to_string();
                    c.last_renew = now;
                }
            }
            _ => {
                self.clients.insert(
                    clientid,
                    ClientRecord {
                        id: id.to_vec(),
                        verifier,
                        principal: principal.to_string(),
                        confirm,
                        confirmed: false,
                        last_renew: now,
                    },
                );
            }
        }
        Ok((clientid, confirm))
    }

    fn holds_state(&self, clientid: u64) -> bool {
        self.opens.values().any(|o| o.owner.clientid == clientid)
            || self.locks.values().any(|l| l.owner.clientid == clientid)
    }

    /// SETCLIENTID_CONFIRM. Returns the client's id string (to record it
    /// for reclaim after a restart).
    pub fn confirm_client_id(
        &mut self,
        clientid: u64,
        confirm: [u8; 8],
        now: Instant,
    ) -> Result<Vec<u8>, Status> {
        let Some(rec) = self.clients.get(&clientid) else {
            return Err(Status::StaleClientId);
        };
        if rec.confirm != confirm {
            return Err(Status::StaleClientId);
        }
        let id = rec.id.clone();
        // A confirmed record of the same client under another clientid is
        // a previous incarnation: release its state.
        let old: Vec<u64> = self
            .clients
            .iter()
            .filter(|(k, c)| **k != clientid && c.id == id)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            // The rebooted client's old stateids now answer EXPIRED (its
            // old client id, unknown from here, STALE_CLIENTID).
            self.release_client(k);
            push_bounded(&mut self.rebooted, k);
        }
        if let Some(rec) = self.clients.get_mut(&clientid) {
            rec.confirmed = true;
            rec.last_renew = now;
        }
        Ok(id)
    }

    /// A client id whose state is gone: its stateids answer EXPIRED
    /// (the newest EXPIRED_LIMIT remembered).
    fn remember_expired(&mut self, clientid: u64) {
        push_bounded(&mut self.expired, clientid);
    }

    fn release_client(&mut self, clientid: u64) {
        self.clients.remove(&clientid);
        self.owners.retain(|k, _| k.clientid != clientid);
        self.opens.retain(|_, o| o.owner.clientid != clientid);
        self.locks.retain(|_, l| l.owner.clientid != clientid);
        self.retired.release_client(clientid);
        self.retired_stateids.retain(|_, k| k.clientid != clientid);
        self.speakers.retain(|_, ids| {
            ids.retain(|c| *c != clientid);
            !ids.is_empty()
        });
    }

    /// The connection at `peer` acted as `clientid` (a SETCLIENTID_CONFIRM,
    /// RENEW or OPEN of it succeeded there).
    pub fn spoke_for(&mut self, peer: Option<SocketAddr>, clientid: u64) {
        let Some(peer) = peer else {
            return;
        };
        if self.speakers.len() >= SPEAKERS_LIMIT && !self.speakers.contains_key(&peer) {
            self.speakers.clear();
        }
        let ids = self.speakers.entry(peer).or_default();
        if !ids.contains(&clientid) {
            if ids.len() == CLIENTS_PER_SPEAKER {
                ids.remove(0);
            }
            ids.push(clientid);
        }
    }

    /// Checks that `clientid` is a live, confirmed client and renews its
    /// lease (RENEW, and implicitly every stateful operation).
    pub fn renew(&mut self, clientid: u64, now: Instant) -> Result<(), Status> {
        if !self.is_this_boot(clientid) {
            return Err(Status::StaleClientId);
        }
        match self.clients.get_mut(&clientid) {
            Some(c) if c.confirmed => {
                c.last_renew = now;
                Ok(())
            }
            _ if self.expired.contains(&clientid) => Err(Status::Expired),
            _ => Err(Status::StaleClientId),
        }
    }

    /// Renews the client a stateid belongs to.
    fn renew_by_stateid(&mut self, other: &[u8; 12], now: Instant) {
        let lo = u32::from_be_bytes([other[4], other[5], other[6], other[7]]);
        let clientid = ((self.boot as u64) << 32) | lo as u64;
        if let Some(c) = self.clients.get_mut(&clientid) {
            c.last_renew = now;
        }
    }

    /// The recorded reply if `seqid` retransmits the owner's last request
    /// (`request`: what it is, or None not to compare). A different request
    /// reusing that seqid is BAD_SEQID, not the other request's reply.
    pub fn replay(
        &self,
        key: &OwnerKey,
        seqid: u32,
        request: Option<u64>,
    ) -> Option<Result<(Status, Vec<u8>), Status>> {
        let o = self.owners.get(key)?;
        match &o.last_reply {
            Some(r) if r.seqid == seqid && o.last_seqid == seqid => {
                if request.is_some_and(|q| q != r.request) {
                    Some(Err(Status::BadSeqId))
                } else {
                    Some(Ok((r.status, r.body.clone())))
                }
            }
            _ => None,
        }
    }

    /// Records an owner's reply to `request` for replay.
    pub fn remember(
        &mut self,
        key: &OwnerKey,
        seqid: u32,
        request: u64,
        status: Status,
        body: Vec<u8>,
    ) {
        if seqid_unchanged(status) {
            return;
        }
        if let Some(o) = self.owners.get_mut(key) {
            if o.last_seqid == seqid {
                o.last_reply = Some(LastReply {
                    seqid,
                    request,
                    status,
                    body,
                });
            }
        }
    }

    /// The owner a stateid's seqid-bearing request is sequenced by (its
    /// open-owner for an open stateid, its lock-owner for a lock stateid),
    /// also for a stateid closed a moment ago.
    pub fn owner_of(&self, stateid: &StateId) -> Option<OwnerKey> {
        if let Some(o) = self.opens.get(&stateid.other) {
            return Some(o.owner.clone());
        }
        if let Some(l) = self.locks.get(&stateid.other) {
            return Some(l.owner.clone());
        }
        self.retired_stateids.get(&stateid.other).cloned()
    }

    /// Checks and advances an owner's seqid.
    fn step(&mut self, key: &OwnerKey, seqid: u32) -> Result<(), Status> {
        let o = self.owners.get_mut(key).ok_or(Status::BadStateId)?;
        if seqid != next_seqid(o.last_seqid) {
            return Err(Status::BadSeqId);
        }
        o.last_seqid = seqid;
        o.last_reply = None;
        self.retired.take_back(key);
        Ok(())
    }

    /// Records an owner's latest seqid (a new owner, or one starting over),
    /// keeping what it closed last.
    fn set_owner(&mut self, key: &OwnerKey, last_seqid: u32, confirmed: bool) {
        let last_closed = self.owners.get(key).and_then(|o| o.last_closed);
        self.owners.insert(
            key.clone(),
            Owner {
                last_seqid,
                confirmed,
                last_reply: None,
                last_closed,
            },
        );
        self.retired.take_back(key);
    }

    /// Forgets an owner, with the stateid it closed last.
    fn forget_owner(&mut self, key: &OwnerKey) {
        if let Some(closed) = self.owners.remove(key).and_then(|o| o.last_closed) {
            self.retired_stateids.remove(&closed);
        }
        self.retired.take_back(key);
    }
}

/// Appends a client id to a list kept to the newest EXPIRED_LIMIT.
fn push_bounded(ids: &mut VecDeque<u64>, clientid: u64) {
    ids.push_back(clientid);
    if ids.len() > EXPIRED_LIMIT {
        ids.pop_front();
    }
}

mod locks;
mod opens;
mod retired;

use retired::Retired;

#[cfg(test)]
mod tests;
