//! Opens: OPEN in its two halves, reclaim after a restart, OPEN_CONFIRM,
//! OPEN_DOWNGRADE and CLOSE, share reservations, and the checks READ, WRITE
//! and SETATTR of the size make of a stateid. Part of [`State`].

use super::*;

impl State {
    /// First half of OPEN: checks the client and the open-owner's seqid
    /// and consumes the seqid, so that an OPEN failing afterwards (NOENT,
    /// SHARE_DENIED…) still advances it as RFC 7530 §9.1.7 requires.
    pub fn begin_open(
        &mut self,
        clientid: u64,
        owner: &[u8],
        seqid: u32,
        now: Instant,
    ) -> Result<Begin, Status> {
        self.renew(clientid, now)?;
        let key = OwnerKey::open(clientid, owner);
        // The request itself was compared by the caller (`ops::sequenced`).
        if let Some(replayed) = self.replay(&key, seqid, None) {
            let (status, body) = replayed?;
            return Ok(Begin::Replay(status, body));
        }
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
        self.set_owner(&key, seqid, !confirm_needed);
        Ok(Begin::Proceed { confirm_needed })
    }

    /// Once the grace period is over: the previous instance's clients that
    /// never came back (to forget), once.
    pub fn take_unreclaimed(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self.in_grace(now) || self.reclaimable.is_empty() {
            return Vec::new();
        }
        let back: HashSet<&Vec<u8>> = self
            .clients
            .values()
            .filter(|c| c.confirmed)
            .map(|c| &c.id)
            .collect();
        let gone = self
            .reclaimable
            .iter()
            .filter(|id| !back.contains(id))
            .cloned()
            .collect();
        self.reclaimable.clear();
        gone
    }

    /// Marks an open-owner confirmed without OPEN_CONFIRM: a reclaim
    /// (CLAIM_PREVIOUS) re-establishes an owner the server had confirmed
    /// before the restart, and clients do not confirm it again (Linux sends
    /// no filehandle for it).
    pub fn confirm_open_owner(&mut self, clientid: u64, owner: &[u8]) {
        if let Some(o) = self.owners.get_mut(&OwnerKey::open(clientid, owner)) {
            o.confirmed = true;
        }
    }

    /// Is `clientid` allowed to reclaim (CLAIM_PREVIOUS, reclaim LOCK) now?
    pub fn check_reclaim(&self, clientid: u64, now: Instant) -> Result<(), Status> {
        if !self.in_grace(now) {
            return Err(Status::NoGrace);
        }
        let rec = self.clients.get(&clientid).ok_or(Status::StaleClientId)?;
        if !self.reclaimable.contains(&rec.id) {
            return Err(Status::ReclaimBad);
        }
        Ok(())
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
        now: Instant,
    ) -> Result<StateId, Status> {
        if access == 0 || access > OPEN4_SHARE_ACCESS_BOTH || deny > OPEN4_SHARE_ACCESS_BOTH {
            return Err(Status::Inval);
        }
        let key = OwnerKey::open(clientid, owner);
        let conflicts: Vec<([u8; 12], u64)> = self
            .opens
            .iter()
            .filter(|(_, o)| {
                o.fileid == fileid
                    && o.owner != key
                    && (o.deny & access != 0 || o.access & deny != 0)
            })
            .map(|(k, o)| (*k, o.owner.clientid))
            .collect();
        if conflicts.iter().any(|(_, c)| !self.is_courtesy(*c, now)) {
            return Err(Status::ShareDenied);
        }
        for (other, _) in conflicts {
            self.revoke_open(&other);
        }
        if let Some((other, o)) = self
            .opens
            .iter_mut()
            .find(|(_, o)| o.owner == key && o.fileid == fileid)
        {
            o.access |= access;
            o.deny |= deny;
            o.accesses_opened |= 1 << access;
            o.denies_opened |= 1 << deny;
            o.seqid = next_seqid(o.seqid);
            return Ok(StateId {
                seqid: o.seqid,
                other: *other,
            });
        }
        let other = self.new_stateid_other(clientid);
        self.opens.insert(
            other,
            OpenState {
                seqid: 1,
                owner: key,
                fileid,
                access,
                deny,
                accesses_opened: 1 << access,
                denies_opened: 1 << deny,
            },
        );
        Ok(StateId { seqid: 1, other })
    }

    /// Forgets an open-owner that holds no opens (after a failed first OPEN).
    pub fn forget_idle_owner(&mut self, clientid: u64, owner: &[u8]) {
        let key = OwnerKey::open(clientid, owner);
        let unconfirmed = self.owners.get(&key).is_some_and(|o| !o.confirmed);
        if unconfirmed && !self.opens.values().any(|o| o.owner == key) {
            self.owners.remove(&key);
        }
    }

    /// Why a stateid names no state: issued by an earlier run (STALE), by
    /// a client whose lease expired or that rebooted (EXPIRED), or never
    /// issued / malformed (BAD). A client told STALE starts reboot recovery,
    /// so only a stateid of an earlier run gets it.
    pub(super) fn stale_or_expired(&self, other: &[u8; 12]) -> Status {
        let boot = u32::from_be_bytes([other[0], other[1], other[2], other[3]]);
        if boot != self.boot {
            return if self.earlier_boots.contains(&boot) {
                Status::StaleStateId
            } else {
                Status::BadStateId
            };
        }
        let lo = u32::from_be_bytes([other[4], other[5], other[6], other[7]]);
        let clientid = ((self.boot as u64) << 32) | lo as u64;
        if self.expired.contains(&clientid) || self.rebooted.contains(&clientid) {
            Status::Expired
        } else {
            Status::BadStateId
        }
    }

    pub(super) fn open_state(&self, stateid: &StateId) -> Result<&OpenState, Status> {
        let Some(o) = self.opens.get(&stateid.other) else {
            return Err(self.stale_or_expired(&stateid.other));
        };
        current_generation(stateid, o.seqid)?;
        Ok(o)
    }

    pub(super) fn lock_state(&self, stateid: &StateId) -> Result<&LockState, Status> {
        let Some(l) = self.locks.get(&stateid.other) else {
            return Err(self.stale_or_expired(&stateid.other));
        };
        current_generation(stateid, l.seqid)?;
        Ok(l)
    }

    /// Checks and advances the open-owner seqid of the owner of `stateid`.
    pub(super) fn open_owner_step(&mut self, stateid: &StateId, seqid: u32) -> Result<(), Status> {
        let owner = self.open_state(stateid)?.owner.clone();
        self.step(&owner, seqid)
    }

    pub fn open_confirm(&mut self, stateid: &StateId, seqid: u32) -> Result<StateId, Status> {
        // Confirmed already: a second OPEN_CONFIRM (not a retransmission,
        // which is replayed before this) names no open awaiting one
        // (RFC 7530 §16.18.5). BAD_STATEID leaves the seqid as it was.
        let owner = self.open_state(stateid)?.owner.clone();
        if self.owners.get(&owner).is_some_and(|o| o.confirmed) {
            return Err(Status::BadStateId);
        }
        self.open_owner_step(stateid, seqid)?;
        let owner = self.open_state(stateid)?.owner.clone();
        if let Some(o) = self.owners.get_mut(&owner) {
            o.confirmed = true;
        }
        self.bump_open(stateid)
    }

    pub(super) fn bump_open(&mut self, stateid: &StateId) -> Result<StateId, Status> {
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
        self.open_owner_step(stateid, seqid)?;
        let o = self.open_state(stateid)?;
        let opened = |mask: u8, v: u32| v <= OPEN4_SHARE_ACCESS_BOTH && mask & (1 << v) != 0;
        if access == 0
            || access & !o.access != 0
            || deny & !o.deny != 0
            || !opened(o.accesses_opened, access)
            || !opened(o.denies_opened, deny)
        {
            return Err(Status::Inval);
        }
        let o = self
            .opens
            .get_mut(&stateid.other)
            .ok_or(Status::BadStateId)?;
        o.access = access;
        o.deny = deny;
        self.bump_open(stateid)
    }

    /// CLOSE: the open goes, and with it the lock state derived from it.
    pub fn close(&mut self, stateid: &StateId, seqid: u32) -> Result<StateId, Status> {
        self.open_owner_step(stateid, seqid)?;
        let next = self.bump_open(stateid)?;
        self.drop_open(&stateid.other);
        Ok(next)
    }

    pub(super) fn drop_open(&mut self, other: &[u8; 12]) {
        let Some(o) = self.opens.remove(other) else {
            return;
        };
        let dropped: Vec<OwnerKey> = self
            .locks
            .values()
            .filter(|l| l.open == *other)
            .map(|l| l.owner.clone())
            .collect();
        self.locks.retain(|_, l| l.open != *other);
        if let Some(owner) = self.owners.get_mut(&o.owner) {
            if let Some(before) = owner.last_closed.replace(*other) {
                self.retired_stateids.remove(&before);
            }
            self.retired_stateids.insert(*other, o.owner.clone());
        }
        self.retire_if_idle(o.owner);
        for k in dropped {
            self.retire_if_idle(k);
        }
    }

    /// An owner with no state left is kept (bounded) so a retransmission
    /// of its last request is replayed, then forgotten.
    pub(super) fn retire_if_idle(&mut self, key: OwnerKey) {
        let busy = self.opens.values().any(|x| x.owner == key)
            || self.locks.values().any(|l| l.owner == key);
        if busy {
            return;
        }
        for old in self.retired.retire(key, RETIRED_LIMIT) {
            self.forget_owner(&old);
        }
    }

    /// Drops an open without a seqid step (an OPEN that failed after the
    /// open was recorded, e.g. its truncation failed).
    pub fn close_unchecked(&mut self, stateid: &StateId) -> Result<(), Status> {
        if !self.opens.contains_key(&stateid.other) {
            return Err(Status::BadStateId);
        }
        self.drop_open(&stateid.other);
        Ok(())
    }

    /// May `stateid` do I/O (`access`: OPEN4_SHARE_ACCESS_READ or _WRITE)
    /// on `fileid`, asked on the connection at `peer`? The special stateids
    /// (anonymous, and all-ones, which RFC 7530 §9.1.4.3 lets a WRITE or
    /// SETATTR use as the anonymous one) go unless an open denies that
    /// access; an all-ones READ bypasses share reservations. Lock stateids
    /// act for their open. A connection that acted as other clients only
    /// may not use this client's stateid: NFS4ERR_ACCESS (see
    /// `spoke_for`; a connection that has not said whom it acts for is not
    /// refused: in NFSv4.0 nothing else tells a client's calls apart, as
    /// the Mac's AUTH_SYS names no machine, `kext/nfs_subs.c`
    /// `nfsm_rpchead2`, and a client that reconnects goes straight back to
    /// its WRITEs).
    pub fn check_io(
        &mut self,
        stateid: &StateId,
        fileid: u64,
        access: u32,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(), Status> {
        if stateid.is_special() {
            if *stateid == StateId::READ_BYPASS && access == OPEN4_SHARE_ACCESS_READ {
                return Ok(());
            }
            return self.share_allows(fileid, access);
        }
        let o = self.open_for_io(stateid)?;
        if o.fileid != fileid {
            return Err(Status::BadStateId);
        }
        if o.access & access == 0 {
            return Err(Status::OpenMode);
        }
        let owner = o.owner.clientid;
        if let Some(ids) = peer.and_then(|p| self.speakers.get(&p)) {
            if !ids.contains(&owner) {
                return Err(Status::Access);
            }
        }
        self.renew_by_stateid(&stateid.other, now);
        Ok(())
    }

    /// [`State::check_io`] for a WRITE, on no particular connection (the
    /// state tests' shorthand).
    #[cfg(test)]
    pub fn check_write(
        &mut self,
        stateid: &StateId,
        fileid: u64,
        now: Instant,
    ) -> Result<(), Status> {
        self.check_io(stateid, fileid, OPEN4_SHARE_ACCESS_WRITE, None, now)
    }

    /// [`State::check_io`] for a READ, on no particular connection (the
    /// state tests' shorthand).
    #[cfg(test)]
    pub fn check_read(
        &mut self,
        stateid: &StateId,
        fileid: u64,
        now: Instant,
    ) -> Result<(), Status> {
        self.check_io(stateid, fileid, OPEN4_SHARE_ACCESS_READ, None, now)
    }

    /// The open behind an open or lock stateid used for I/O.
    pub(super) fn open_for_io(&self, stateid: &StateId) -> Result<&OpenState, Status> {
        if let Some(l) = self.locks.get(&stateid.other) {
            return self.opens.get(&l.open).ok_or(Status::BadStateId);
        }
        self.open_state(stateid)
    }

    /// I/O without an open (`access`: read or write) is refused with
    /// LOCKED where an open of the file denies it (RFC 7530 §9.9).
    pub(super) fn share_allows(&self, fileid: u64, access: u32) -> Result<(), Status> {
        let denied = self
            .opens
            .values()
            .any(|o| o.fileid == fileid && o.deny & access != 0);
        if denied {
            Err(Status::Locked)
        } else {
            Ok(())
        }
    }

    /// Is `fileid` open by anyone?
    pub fn is_open(&self, fileid: u64) -> bool {
        self.opens.values().any(|o| o.fileid == fileid)
    }

    /// The file an open stateid refers to.
    pub fn file_of(&self, stateid: &StateId) -> Option<u64> {
        self.opens.get(&stateid.other).map(|o| o.fileid)
    }
}

/// A stateid's seqid against its state's: an older one is OLD_STATEID, a
/// newer one BAD_STATEID; seqid 0 counts as the current one.
fn current_generation(stateid: &StateId, current: u32) -> Result<(), Status> {
    if stateid.seqid < current && stateid.seqid != 0 {
        return Err(Status::OldStateId);
    }
    if stateid.seqid > current {
        return Err(Status::BadStateId);
    }
    Ok(())
}
