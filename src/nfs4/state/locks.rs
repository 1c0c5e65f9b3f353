//! Byte-range locks: LOCK, LOCKT, LOCKU and RELEASE_LOCKOWNER, conflicts
//! between owners, and one owner's ranges kept joined. Part of [`State`].

use super::*;

impl State {
    /// The first lock of another owner that conflicts with `want`, with
    /// its lock state.
    pub(super) fn conflict(
        &self,
        fileid: u64,
        owner: &OwnerKey,
        want: &Range,
    ) -> Option<([u8; 12], Denied)> {
        for (other, l) in &self.locks {
            if l.fileid != fileid || l.owner == *owner {
                continue;
            }
            for r in &l.ranges {
                if r.overlaps(want) && (r.write || want.write) {
                    return Some((
                        *other,
                        Denied {
                            offset: r.start,
                            length: if r.end == u64::MAX {
                                u64::MAX
                            } else {
                                r.end - r.start
                            },
                            locktype: if r.write { WRITE_LT } else { READ_LT },
                            clientid: l.owner.clientid,
                            owner: l.owner.owner.clone(),
                        },
                    ));
                }
            }
        }
        None
    }

    /// LOCK: returns the lock stateid, or the conflicting lock.
    #[allow(clippy::too_many_arguments)]
    pub fn lock(
        &mut self,
        locktype: u32,
        reclaim: bool,
        offset: u64,
        length: u64,
        locker: &Locker<'_>,
        fileid: u64,
        now: Instant,
    ) -> Result<StateId, LockError> {
        // Find (or create) the lock state, stepping the right seqid.
        let other = match locker {
            Locker::New {
                open_seqid,
                open_stateid,
                lock_seqid,
                clientid,
                owner,
            } => {
                self.renew(*clientid, now)?;
                let open = self.open_state(open_stateid)?.clone();
                if open.fileid != fileid || open.owner.clientid != *clientid {
                    return Err(Status::BadStateId.into());
                }
                // The seqid is consumed by every error from here on.
                self.step(&open.owner, *open_seqid)?;
                let key = OwnerKey::lock(*clientid, owner);
                self.set_owner(&key, *lock_seqid, true);
                let existing = self
                    .locks
                    .iter()
                    .find(|(_, l)| l.owner == key && l.fileid == fileid)
                    .map(|(k, _)| *k);
                match existing {
                    Some(o) => o,
                    None => {
                        let other = self.new_stateid_other(*clientid);
                        self.locks.insert(
                            other,
                            LockState {
                                seqid: 0,
                                owner: key,
                                fileid,
                                open: open_stateid.other,
                                ranges: Vec::new(),
                            },
                        );
                        other
                    }
                }
            }
            Locker::Existing {
                lock_stateid,
                lock_seqid,
            } => {
                let l = self.lock_state(lock_stateid)?.clone();
                if l.fileid != fileid {
                    return Err(Status::BadStateId.into());
                }
                self.renew(l.owner.clientid, now)?;
                self.step(&l.owner, *lock_seqid)?;
                lock_stateid.other
            }
        };
        // Checks whose errors consume the seqid (RFC 7530 §9.1.7).
        if !(READ_LT..=WRITEW_LT).contains(&locktype) {
            return Err(Status::Inval.into());
        }
        let (start, end) = range_of(offset, length)?;
        let want = Range {
            start,
            end,
            write: is_write_lock(locktype),
        };
        let (owner, open) = {
            let l = &self.locks[&other];
            (l.owner.clone(), l.open)
        };
        self.grace_check(owner.clientid, reclaim, now)?;
        if want.write {
            let o = self.opens.get(&open).ok_or(Status::BadStateId)?;
            if o.access & OPEN4_SHARE_ACCESS_WRITE == 0 {
                return Err(Status::OpenMode.into());
            }
        }
        if let Some(d) = self.live_conflict(fileid, &owner, &want, now) {
            return Err(LockError::Denied(d));
        }
        let l = self.locks.get_mut(&other).ok_or(Status::BadStateId)?;
        // Upgrades and downgrades: the new range replaces what it covers.
        subtract(&mut l.ranges, start, end);
        l.ranges.push(want);
        l.ranges.sort_by_key(|r| r.start);
        coalesce(&mut l.ranges);
        l.seqid = next_seqid(l.seqid);
        Ok(StateId {
            seqid: l.seqid,
            other,
        })
    }

    pub(super) fn grace_check(
        &self,
        clientid: u64,
        reclaim: bool,
        now: Instant,
    ) -> Result<(), Status> {
        match (reclaim, self.in_grace(now)) {
            (true, _) => self.check_reclaim(clientid, now),
            (false, true) => Err(Status::Grace),
            (false, false) => Ok(()),
        }
    }

    /// LOCKT: is the range free of other owners' conflicting locks?
    #[allow(clippy::too_many_arguments)]
    pub fn lock_test(
        &mut self,
        locktype: u32,
        offset: u64,
        length: u64,
        clientid: u64,
        owner: &[u8],
        fileid: u64,
        now: Instant,
    ) -> Result<(), LockError> {
        if !(READ_LT..=WRITEW_LT).contains(&locktype) {
            return Err(Status::Inval.into());
        }
        let (start, end) = range_of(offset, length)?;
        self.renew(clientid, now)?;
        if self.in_grace(now) {
            return Err(Status::Grace.into());
        }
        let want = Range {
            start,
            end,
            write: is_write_lock(locktype),
        };
        match self.live_conflict(fileid, &OwnerKey::lock(clientid, owner), &want, now) {
            Some(d) => Err(LockError::Denied(d)),
            None => Ok(()),
        }
    }

    /// LOCKU: releases a range (possibly splitting a lock).
    pub fn unlock(
        &mut self,
        seqid: u32,
        stateid: &StateId,
        offset: u64,
        length: u64,
        now: Instant,
    ) -> Result<StateId, Status> {
        let l = self.lock_state(stateid)?.clone();
        self.renew(l.owner.clientid, now)?;
        self.step(&l.owner, seqid)?;
        let (start, end) = range_of(offset, length)?;
        let l = self
            .locks
            .get_mut(&stateid.other)
            .ok_or(Status::BadStateId)?;
        subtract(&mut l.ranges, start, end);
        l.seqid = next_seqid(l.seqid);
        Ok(StateId {
            seqid: l.seqid,
            other: stateid.other,
        })
    }

    /// RELEASE_LOCKOWNER: forgets a lock-owner holding no locks.
    pub fn release_lock_owner(
        &mut self,
        clientid: u64,
        owner: &[u8],
        now: Instant,
    ) -> Result<(), Status> {
        self.renew(clientid, now)?;
        let key = OwnerKey::lock(clientid, owner);
        if self
            .locks
            .values()
            .any(|l| l.owner == key && !l.ranges.is_empty())
        {
            return Err(Status::LocksHeld);
        }
        self.locks.retain(|_, l| l.owner != key);
        self.forget_owner(&key);
        Ok(())
    }
}

/// Joins ranges of one lock state that touch or overlap and have the same
/// type (sorted by start): one owner's locks over [0, 10) and [5, 20) are
/// one lock over [0, 20), which LOCKT and LOCK4denied then report
/// (RFC 7530 §9.2: a lock-owner's locks on a file are one set of ranges).
fn coalesce(ranges: &mut Vec<Range>) {
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(prev) if prev.write == r.write && r.start <= prev.end => {
                prev.end = prev.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Removes [start, end) from a list of ranges, splitting where needed.
fn subtract(ranges: &mut Vec<Range>, start: u64, end: u64) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges.drain(..) {
        if r.end <= start || r.start >= end {
            out.push(r);
            continue;
        }
        if r.start < start {
            out.push(Range { end: start, ..r });
        }
        if r.end > end {
            out.push(Range { start: end, ..r });
        }
    }
    *ranges = out;
}
