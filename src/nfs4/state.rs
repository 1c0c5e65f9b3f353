//! NFSv4.0 client and open state (RFC 7530 §9, §16.33–34), with no I/O: every
//! rule takes the current time as an argument, so it is tested
//! deterministically.
//!
//! Client ids and stateids carry the server's boot instance, so anything
//! handed out before a restart is recognised as stale (STALE_CLIENTID,
//! STALE_STATEID) and the client recovers.

use std::collections::HashMap;
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

#[derive(Debug, Clone)]
struct ClientRecord {
    id: Vec<u8>,
    verifier: [u8; 8],
    principal: String,
    confirm: [u8; 8],
    confirmed: bool,
    last_renew: Instant,
}

#[derive(Debug, Clone)]
struct OpenOwner {
    last_seqid: u32,
    confirmed: bool,
}

#[derive(Debug, Clone)]
struct OpenState {
    seqid: u32,
    owner: (u64, Vec<u8>),
    fileid: u64,
    access: u32,
    deny: u32,
}

/// Counters for tests and the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub clients: usize,
    pub open_owners: usize,
    pub opens: usize,
}

#[derive(Debug)]
pub struct State {
    boot: u32,
    lease: Duration,
    counter: u64,
    clients: HashMap<u64, ClientRecord>,
    owners: HashMap<(u64, Vec<u8>), OpenOwner>,
    opens: HashMap<[u8; 12], OpenState>,
}

fn next_seqid(s: u32) -> u32 {
    // seqid 0 is only ever the first value; after u32::MAX comes 1.
    if s == u32::MAX {
        1
    } else {
        s + 1
    }
}

impl State {
    /// `boot` must differ between server instances (e.g. start time in
    /// seconds).
    pub fn new(boot: u32, lease: Duration) -> State {
        State {
            boot,
            lease,
            counter: 0,
            clients: HashMap::new(),
            owners: HashMap::new(),
            opens: HashMap::new(),
        }
    }

    pub fn counts(&self) -> StateCounts {
        StateCounts {
            clients: self.clients.len(),
            open_owners: self.owners.len(),
            opens: self.opens.len(),
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn new_clientid(&mut self) -> u64 {
        ((self.boot as u64) << 32) | (self.next() & 0xffff_ffff)
    }

    fn new_stateid_other(&mut self) -> [u8; 12] {
        let mut o = [0u8; 12];
        o[..4].copy_from_slice(&self.boot.to_be_bytes());
        o[4..].copy_from_slice(&self.next().to_be_bytes());
        o
    }

    fn is_this_boot(&self, clientid: u64) -> bool {
        (clientid >> 32) as u32 == self.boot
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
        let clientid = match &confirmed {
            Some((_, c)) if c.principal != principal && self.holds_state(id) => {
                return Err(Status::ClidInUse)
            }
            // Same incarnation (a callback update): keep the clientid.
            Some((k, c)) if c.verifier == verifier => *k,
            // New client or a rebooted one: a new clientid; the old state
            // goes when the new one is confirmed.
            _ => self.new_clientid(),
        };
        let mut confirm = [0u8; 8];
        confirm.copy_from_slice(&self.next().to_be_bytes());
        confirm[0] ^= (self.boot & 0xff) as u8;
        let record = ClientRecord {
            id: id.to_vec(),
            verifier,
            principal: principal.to_string(),
            confirm,
            confirmed: false,
            last_renew: now,
        };
        match confirmed {
            Some((k, _)) if k == clientid => {
                // Keep the confirmed record in place; remember the pending
                // confirm value on it.
                if let Some(c) = self.clients.get_mut(&k) {
                    c.confirm = confirm;
                    c.principal = principal.to_string();
                }
            }
            _ => {
                self.clients.insert(clientid, record);
            }
        }
        Ok((clientid, confirm))
    }

    fn holds_state(&self, id: &[u8]) -> bool {
        self.clients
            .iter()
            .filter(|(_, c)| c.id == id)
            .any(|(k, _)| self.owners.keys().any(|(cid, _)| cid == k))
    }

    /// SETCLIENTID_CONFIRM.
    pub fn confirm_client_id(
        &mut self,
        clientid: u64,
        confirm: [u8; 8],
        now: Instant,
    ) -> Result<(), Status> {
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
            self.release_client(k);
        }
        if let Some(rec) = self.clients.get_mut(&clientid) {
            rec.confirmed = true;
            rec.last_renew = now;
        }
        Ok(())
    }

    fn release_client(&mut self, clientid: u64) {
        self.clients.remove(&clientid);
        self.owners.retain(|(cid, _), _| *cid != clientid);
        self.opens.retain(|_, o| o.owner.0 != clientid);
    }

    /// Checks that `clientid` is a live, confirmed client and renews it.
    pub fn renew(&mut self, clientid: u64, now: Instant) -> Result<(), Status> {
        if !self.is_this_boot(clientid) {
            return Err(Status::StaleClientId);
        }
        let holds_state = self.owners_of(clientid);
        let lease = self.lease;
        match self.clients.get_mut(&clientid) {
            Some(c) if c.confirmed => {
                if now.duration_since(c.last_renew) > lease * 2 && !holds_state {
                    // Long gone and holding nothing: treat as expired.
                    return Err(Status::Expired);
                }
                c.last_renew = now;
                Ok(())
            }
            _ => Err(Status::StaleClientId),
        }
    }

    fn owners_of(&self, clientid: u64) -> bool {
        self.owners.keys().any(|(cid, _)| *cid == clientid)
    }

    /// First half of OPEN: checks the client and the open-owner's seqid
    /// and consumes the seqid, so that an OPEN failing afterwards (NOENT,
    /// SHARE_DENIED…) still advances it as RFC 7530 §9.1.7 requires.
    /// Returns whether the owner still has to be confirmed.
    pub fn begin_open(
        &mut self,
        clientid: u64,
        owner: &[u8],
        seqid: u32,
        now: Instant,
    ) -> Result<bool, Status> {
        self.renew(clientid, now)?;
        let key = (clientid, owner.to_vec());
        let confirm_needed = match self.owners.get(&key) {
            Some(o) if o.confirmed => {
                if seqid != next_seqid(o.last_seqid) {
                    return Err(Status::BadSeqId);
                }
                false
            }
            // New or unconfirmed owner: the client starts over with this seqid.
            _ => true,
        };
        self.owners.insert(
            key,
            OpenOwner {
                last_seqid: seqid,
                confirmed: !confirm_needed,
            },
        );
        Ok(confirm_needed)
    }

    /// Second half of OPEN: checks share reservations and records the open;
    /// an existing open of the same owner and file is upgraded.
    pub fn open(
        &mut self,
        clientid: u64,
        owner: &[u8],
        fileid: u64,
        access: u32,
        deny: u32,
    ) -> Result<StateId, Status> {
        if access == 0 || access > OPEN4_SHARE_ACCESS_BOTH || deny > OPEN4_SHARE_ACCESS_BOTH {
            return Err(Status::Inval);
        }
        let key = (clientid, owner.to_vec());
        let conflict = self.opens.values().any(|o| {
            o.fileid == fileid && o.owner != key && (o.deny & access != 0 || o.access & deny != 0)
        });
        if conflict {
            return Err(Status::ShareDenied);
        }
        if let Some((other, o)) = self
            .opens
            .iter_mut()
            .find(|(_, o)| o.owner == key && o.fileid == fileid)
        {
            o.access |= access;
            o.deny |= deny;
            o.seqid = next_seqid(o.seqid);
            return Ok(StateId {
                seqid: o.seqid,
                other: *other,
            });
        }
        let other = self.new_stateid_other();
        self.opens.insert(
            other,
            OpenState {
                seqid: 1,
                owner: key,
                fileid,
                access,
                deny,
            },
        );
        Ok(StateId { seqid: 1, other })
    }

    /// Forgets an open-owner that holds no opens (after a failed first OPEN).
    pub fn forget_idle_owner(&mut self, clientid: u64, owner: &[u8]) {
        let key = (clientid, owner.to_vec());
        let unconfirmed = self.owners.get(&key).is_some_and(|o| !o.confirmed);
        if unconfirmed && !self.opens.values().any(|o| o.owner == key) {
            self.owners.remove(&key);
        }
    }

    fn open_state(&self, stateid: &StateId) -> Result<&OpenState, Status> {
        if stateid.other[..4] != self.boot.to_be_bytes() {
            return Err(Status::StaleStateId);
        }
        let o = self.opens.get(&stateid.other).ok_or(Status::BadStateId)?;
        if stateid.seqid < o.seqid && stateid.seqid != 0 {
            return Err(Status::OldStateId);
        }
        if stateid.seqid > o.seqid {
            return Err(Status::BadStateId);
        }
        Ok(o)
    }

    /// Checks and advances the open-owner seqid of the owner of `stateid`.
    fn owner_step(&mut self, stateid: &StateId, seqid: u32) -> Result<(), Status> {
        let owner = self.open_state(stateid)?.owner.clone();
        let o = self.owners.get_mut(&owner).ok_or(Status::BadStateId)?;
        if seqid != next_seqid(o.last_seqid) {
            return Err(Status::BadSeqId);
        }
        o.last_seqid = seqid;
        Ok(())
    }

    pub fn open_confirm(&mut self, stateid: &StateId, seqid: u32) -> Result<StateId, Status> {
        self.owner_step(stateid, seqid)?;
        let owner = self.open_state(stateid)?.owner.clone();
        if let Some(o) = self.owners.get_mut(&owner) {
            o.confirmed = true;
        }
        self.bump(stateid)
    }

    fn bump(&mut self, stateid: &StateId) -> Result<StateId, Status> {
        let o = self
            .opens
            .get_mut(&stateid.other)
            .ok_or(Status::BadStateId)?;
        o.seqid = next_seqid(o.seqid);
        Ok(StateId {
            seqid: o.seqid,
            other: stateid.other,
        })
    }

    pub fn open_downgrade(
        &mut self,
        stateid: &StateId,
        seqid: u32,
        access: u32,
        deny: u32,
    ) -> Result<StateId, Status> {
        self.owner_step(stateid, seqid)?;
        let o = self.open_state(stateid)?;
        if access == 0 || access & !o.access != 0 || deny & !o.deny != 0 {
            return Err(Status::Inval);
        }
        let o = self
            .opens
            .get_mut(&stateid.other)
            .ok_or(Status::BadStateId)?;
        o.access = access;
        o.deny = deny;
        self.bump(stateid)
    }

    pub fn close(&mut self, stateid: &StateId, seqid: u32) -> Result<StateId, Status> {
        self.owner_step(stateid, seqid)?;
        let next = self.bump(stateid)?;
        if let Some(o) = self.opens.remove(&stateid.other) {
            // An owner with no opens left is forgotten once confirmed state
            // no longer needs its seqid (keeps state bounded).
            if !self.opens.values().any(|x| x.owner == o.owner) {
                self.owners.remove(&o.owner);
            }
        }
        Ok(next)
    }

    /// Drops an open without a seqid step (an OPEN that failed after the
    /// open was recorded, e.g. its truncation failed).
    pub fn close_unchecked(&mut self, stateid: &StateId) -> Result<(), Status> {
        let o = self
            .opens
            .remove(&stateid.other)
            .ok_or(Status::BadStateId)?;
        if !self.opens.values().any(|x| x.owner == o.owner) {
            if let Some(owner) = self.owners.get(&o.owner) {
                if !owner.confirmed {
                    self.owners.remove(&o.owner);
                }
            }
        }
        Ok(())
    }

    /// May `stateid` write `fileid`? The anonymous stateid may (subject to
    /// share reservations); READ-bypass may not.
    pub fn check_write(&self, stateid: &StateId, fileid: u64) -> Result<(), Status> {
        if *stateid == StateId::ANONYMOUS {
            let denied = self
                .opens
                .values()
                .any(|o| o.fileid == fileid && o.deny & OPEN4_SHARE_ACCESS_WRITE != 0);
            return if denied { Err(Status::Locked) } else { Ok(()) };
        }
        if *stateid == StateId::READ_BYPASS {
            return Err(Status::BadStateId);
        }
        let o = self.open_state(stateid)?;
        if o.fileid != fileid {
            return Err(Status::BadStateId);
        }
        if o.access & OPEN4_SHARE_ACCESS_WRITE == 0 {
            return Err(Status::OpenMode);
        }
        Ok(())
    }

    /// Is `fileid` open by anyone?
    pub fn is_open(&self, fileid: u64) -> bool {
        self.opens.values().any(|o| o.fileid == fileid)
    }

    /// The file an open stateid refers to.
    pub fn file_of(&self, stateid: &StateId) -> Option<u64> {
        self.opens.get(&stateid.other).map(|o| o.fileid)
    }

    /// May `stateid` read `fileid`?
    pub fn check_read(&self, stateid: &StateId, fileid: u64) -> Result<(), Status> {
        if stateid.is_special() {
            return Ok(());
        }
        let o = self.open_state(stateid)?;
        if o.fileid != fileid {
            return Err(Status::BadStateId);
        }
        if o.access & OPEN4_SHARE_ACCESS_READ == 0 {
            return Err(Status::OpenMode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn open(
        st: &mut State,
        cid: u64,
        owner: &[u8],
        seqid: u32,
        fileid: u64,
        access: u32,
        deny: u32,
    ) -> Result<(StateId, bool), Status> {
        let now = Instant::now();
        let confirm = st.begin_open(cid, owner, seqid, now)?;
        Ok((st.open(cid, owner, fileid, access, deny)?, confirm))
    }

    fn confirmed(st: &mut State, id: &[u8], now: Instant) -> u64 {
        let (cid, conf) = st.set_client_id(id, [1; 8], "sys:0@a", now).unwrap();
        st.confirm_client_id(cid, conf, now).unwrap();
        cid
    }

    #[test]
    fn client_handshake_and_stale_ids() {
        let now = Instant::now();
        let mut st = State::new(7, Duration::from_secs(90));
        let (cid, conf) = st.set_client_id(b"linux", [1; 8], "sys:0@a", now).unwrap();
        assert_eq!(st.renew(cid, now), Err(Status::StaleClientId));
        assert_eq!(
            st.confirm_client_id(cid, [9; 8], now),
            Err(Status::StaleClientId)
        );
        st.confirm_client_id(cid, conf, now).unwrap();
        st.renew(cid, now).unwrap();
        // A clientid from another boot is stale.
        let other = State::new(8, Duration::from_secs(90));
        let mut other = other;
        assert_eq!(other.renew(cid, now), Err(Status::StaleClientId));
        // Retransmitted confirm is fine.
        st.confirm_client_id(cid, conf, now).unwrap();
    }

    #[test]
    fn rebooted_client_loses_old_state() {
        let now = Instant::now();
        let mut st = State::new(7, Duration::from_secs(90));
        let cid = confirmed(&mut st, b"mac", now);
        open(&mut st, cid, b"o", 1, 42, 1, 0).unwrap();
        assert_eq!(st.counts().opens, 1);
        let (cid2, conf2) = st.set_client_id(b"mac", [2; 8], "sys:0@a", now).unwrap();
        assert_ne!(cid, cid2);
        st.confirm_client_id(cid2, conf2, now).unwrap();
        assert_eq!(st.counts().opens, 0);
        assert_eq!(st.renew(cid, now), Err(Status::StaleClientId));
    }

    #[test]
    fn open_confirm_read_close_cycle_leaves_no_state() {
        let now = Instant::now();
        let mut st = State::new(7, Duration::from_secs(90));
        let cid = confirmed(&mut st, b"c", now);
        let (g, confirm) = open(&mut st, cid, b"owner", 5, 42, 1, 0).unwrap();
        assert!(confirm);
        assert_eq!(st.open_confirm(&g, 5), Err(Status::BadSeqId));
        let s = st.open_confirm(&g, 6).unwrap();
        assert_eq!(s.seqid, 2);
        st.check_read(&s, 42).unwrap();
        assert_eq!(st.check_read(&s, 43), Err(Status::BadStateId));
        assert_eq!(st.check_read(&g, 42), Err(Status::OldStateId));
        let (g2, confirm) = open(&mut st, cid, b"owner", 7, 43, 1, 0).unwrap();
        assert!(!confirm);
        assert_eq!(
            open(&mut st, cid, b"owner", 7, 44, 1, 0),
            Err(Status::BadSeqId)
        );
        // A failed OPEN (say NOENT) still consumes its seqid.
        st.begin_open(cid, b"owner", 8, now).unwrap();
        st.close(&s, 9).unwrap();
        st.close(&g2, 10).unwrap();
        assert_eq!(st.counts().opens, 0);
        assert_eq!(st.counts().open_owners, 0);
        let mut stale = s;
        stale.other[0] ^= 1;
        assert_eq!(st.check_read(&stale, 42), Err(Status::StaleStateId));
        st.check_read(&StateId::ANONYMOUS, 42).unwrap();
        st.check_read(&StateId::READ_BYPASS, 42).unwrap();
        st.check_write(&StateId::ANONYMOUS, 42).unwrap();
        assert_eq!(
            st.check_write(&StateId::READ_BYPASS, 42),
            Err(Status::BadStateId)
        );
    }

    #[test]
    fn share_deny_conflicts_between_owners() {
        let now = Instant::now();
        let mut st = State::new(7, Duration::from_secs(90));
        let cid = confirmed(&mut st, b"c", now);
        // owner a reads and denies writers
        open(&mut st, cid, b"a", 1, 42, 1, 2).unwrap();
        // owner b wants to write: denied
        assert_eq!(
            open(&mut st, cid, b"b", 1, 42, 2, 0),
            Err(Status::ShareDenied)
        );
        st.forget_idle_owner(cid, b"b");
        // reading is fine, writing through the read open is not
        let (b, _) = open(&mut st, cid, b"b", 2, 42, 1, 0).unwrap();
        assert_eq!(st.counts().opens, 2);
        assert_eq!(st.check_write(&b, 42), Err(Status::OpenMode));
        // anonymous writes respect the deny
        assert_eq!(st.check_write(&StateId::ANONYMOUS, 42), Err(Status::Locked));
        assert!(st.is_open(42) && !st.is_open(43));
    }
}
