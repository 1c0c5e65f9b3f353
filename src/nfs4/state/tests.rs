use super::*;

const LEASE: Duration = Duration::from_secs(90);

fn fresh(now: Instant) -> State {
    State::new(7, LEASE, Duration::from_secs(30), HashSet::new(), now)
}

fn confirmed(st: &mut State, id: &[u8], now: Instant) -> u64 {
    let (cid, conf) = st.set_client_id(id, [1; 8], "sys:0@a", now).unwrap();
    st.confirm_client_id(cid, conf, now).unwrap();
    cid
}

/// OPEN (both halves) + OPEN_CONFIRM when needed; returns the stateid.
#[allow(clippy::too_many_arguments)]
fn open(
    st: &mut State,
    cid: u64,
    owner: &[u8],
    seqid: &mut u32,
    fileid: u64,
    access: u32,
    deny: u32,
    now: Instant,
) -> Result<StateId, Status> {
    let begin = st.begin_open(cid, owner, *seqid, now)?;
    *seqid += 1;
    let Begin::Proceed { confirm_needed } = begin else {
        panic!("unexpected replay")
    };
    let s = st.open(cid, owner, fileid, access, deny, now)?;
    if confirm_needed {
        let s = st.open_confirm(&s, *seqid)?;
        *seqid += 1;
        return Ok(s);
    }
    Ok(s)
}

#[test]
fn client_handshake_and_stale_ids() {
    let now = Instant::now();
    let mut st = fresh(now);
    let (cid, conf) = st.set_client_id(b"linux", [1; 8], "sys:0@a", now).unwrap();
    assert_eq!(st.renew(cid, now), Err(Status::StaleClientId));
    assert_eq!(
        st.confirm_client_id(cid, [9; 8], now),
        Err(Status::StaleClientId)
    );
    st.confirm_client_id(cid, conf, now).unwrap();
    st.renew(cid, now).unwrap();
    // A clientid from another boot is stale.
    let mut other = State::new(8, LEASE, Duration::ZERO, HashSet::new(), now);
    assert_eq!(other.renew(cid, now), Err(Status::StaleClientId));
    // Retransmitted confirm is fine.
    st.confirm_client_id(cid, conf, now).unwrap();
    // A callback update (same verifier) keeps the clientid.
    let (cid2, conf2) = st.set_client_id(b"linux", [1; 8], "sys:0@a", now).unwrap();
    assert_eq!(cid, cid2);
    st.confirm_client_id(cid2, conf2, now).unwrap();
}

#[test]
fn rebooted_client_loses_old_state_and_other_principals_are_refused() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"mac", now);
    let mut seq = 1;
    open(&mut st, cid, b"o", &mut seq, 42, 1, 0, now).unwrap();
    assert_eq!(st.counts().opens, 1);
    // Another principal claiming the same client string while it holds state.
    assert_eq!(
        st.set_client_id(b"mac", [2; 8], "sys:501@evil", now),
        Err(Status::ClidInUse)
    );
    // The same principal with a new verifier: a reboot of the client.
    let (cid2, conf2) = st.set_client_id(b"mac", [2; 8], "sys:0@a", now).unwrap();
    assert_ne!(cid, cid2);
    st.confirm_client_id(cid2, conf2, now).unwrap();
    assert_eq!(st.counts().opens, 0);
    assert_eq!(st.renew(cid, now), Err(Status::StaleClientId));
}

#[test]
fn open_confirm_read_close_cycle() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let Begin::Proceed { confirm_needed } = st.begin_open(cid, b"owner", 5, now).unwrap() else {
        panic!()
    };
    assert!(confirm_needed);
    let g = st.open(cid, b"owner", 42, 1, 0, now).unwrap();
    assert_eq!(st.open_confirm(&g, 5), Err(Status::BadSeqId));
    let s = st.open_confirm(&g, 6).unwrap();
    assert_eq!(s.seqid, 2);
    // A second OPEN_CONFIRM (a new request, not a retransmission): no open
    // awaits one. BAD_STATEID does not consume seqid 7 (used below).
    assert_eq!(st.open_confirm(&s, 7), Err(Status::BadStateId));
    st.check_read(&s, 42, now).unwrap();
    assert_eq!(st.check_read(&s, 43, now), Err(Status::BadStateId));
    assert_eq!(st.check_read(&g, 42, now), Err(Status::OldStateId));
    assert_eq!(st.check_write(&s, 42, now), Err(Status::OpenMode));
    // A failed OPEN (say NOENT) still consumes its seqid.
    st.begin_open(cid, b"owner", 7, now).unwrap();
    assert_eq!(st.begin_open(cid, b"owner", 7, now), Err(Status::BadSeqId));
    st.close(&s, 8).unwrap();
    assert_eq!(st.counts().opens, 0);
    assert_eq!(st.counts().open_owners, 0);
    // A stateid this run never issued, with another run's boot bytes: BAD,
    // unless that run was one of this server's (STALE, see below).
    let mut stale = s;
    stale.other[0] ^= 1;
    assert_eq!(st.check_read(&stale, 42, now), Err(Status::BadStateId));
    st.check_read(&StateId::ANONYMOUS, 42, now).unwrap();
    st.check_read(&StateId::READ_BYPASS, 42, now).unwrap();
    st.check_write(&StateId::ANONYMOUS, 42, now).unwrap();
    // All-ones writes like the anonymous stateid (RFC 7530 §9.1.4.3).
    st.check_write(&StateId::READ_BYPASS, 42, now).unwrap();
}

#[test]
fn retransmitted_requests_get_the_recorded_reply() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let mut seq = 1;
    let s = open(&mut st, cid, b"o", &mut seq, 42, 1, 0, now).unwrap();
    // CLOSE with seqid 3, its reply recorded.
    let key = st.owner_of(&s).unwrap();
    let closed = st.close(&s, seq).unwrap();
    st.remember(&key, seq, 77, Status::Ok, vec![1, 2, 3]);
    // The retransmitted CLOSE is recognised even though the open is gone.
    let key2 = st
        .owner_of(&s)
        .expect("closed stateid still maps to its owner");
    assert_eq!(
        st.replay(&key2, seq, Some(77)),
        Some(Ok((Status::Ok, vec![1, 2, 3])))
    );
    // Another request reusing that seqid is not answered with the CLOSE's
    // reply.
    assert_eq!(st.replay(&key2, seq, Some(78)), Some(Err(Status::BadSeqId)));
    assert_eq!(closed.seqid, s.seqid + 1);
    // A replayed OPEN is answered from the record too.
    seq += 1;
    st.begin_open(cid, b"o", seq, now).unwrap();
    st.remember(&OwnerKey::open(cid, b"o"), seq, 5, Status::NoEnt, vec![]);
    assert_eq!(
        st.begin_open(cid, b"o", seq, now),
        Ok(Begin::Replay(Status::NoEnt, vec![]))
    );
    // Errors that do not advance the seqid are not recorded.
    st.remember(
        &OwnerKey::open(cid, b"o"),
        seq,
        6,
        Status::BadSeqId,
        vec![9],
    );
    assert_eq!(
        st.begin_open(cid, b"o", seq, now),
        Ok(Begin::Replay(Status::NoEnt, vec![]))
    );
}

#[test]
fn share_deny_conflicts_between_owners() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let (mut sa, mut sb) = (1, 1);
    // owner a reads and denies writers
    open(&mut st, cid, b"a", &mut sa, 42, 1, 2, now).unwrap();
    // owner b wants to write: denied (its seqid is consumed regardless)
    st.begin_open(cid, b"b", sb, now).unwrap();
    sb += 1;
    assert_eq!(st.open(cid, b"b", 42, 2, 0, now), Err(Status::ShareDenied));
    st.forget_idle_owner(cid, b"b");
    // reading is fine, writing through the read open is not
    let b = open(&mut st, cid, b"b", &mut sb, 42, 1, 0, now).unwrap();
    assert_eq!(st.counts().opens, 2);
    assert_eq!(st.check_write(&b, 42, now), Err(Status::OpenMode));
    // anonymous writes respect the deny
    assert_eq!(
        st.check_write(&StateId::ANONYMOUS, 42, now),
        Err(Status::Locked)
    );
    assert!(st.is_open(42) && !st.is_open(43));
}

/// Clients a and b, each with an open of file 42 for reading and writing:
/// (client ids, open stateids, next open-owner seqids).
fn two_openers(st: &mut State, now: Instant) -> (u64, u64, StateId, StateId, u32, u32) {
    let a = confirmed(st, b"client-a", now);
    let b = confirmed(st, b"client-b", now);
    let (mut sa, mut sb) = (1, 1);
    let oa = open(st, a, b"oa", &mut sa, 42, 3, 0, now).unwrap();
    let ob = open(st, b, b"ob", &mut sb, 42, 3, 0, now).unwrap();
    (a, b, oa, ob, sa, sb)
}

#[allow(clippy::too_many_arguments)]
fn new_lock(
    st: &mut State,
    cid: u64,
    open_stateid: StateId,
    open_seqid: u32,
    owner: &[u8],
    locktype: u32,
    offset: u64,
    length: u64,
    now: Instant,
) -> Result<StateId, LockError> {
    let locker = Locker::New {
        open_seqid,
        open_stateid,
        lock_seqid: 0,
        clientid: cid,
        owner,
    };
    st.lock(locktype, false, offset, length, &locker, 42, now)
}

#[test]
fn byte_range_locks_conflict_split_upgrade_and_release() {
    let now = Instant::now();
    let mut st = fresh(now);
    let (a, b, oa, ob, sa, mut sb) = two_openers(&mut st, now);
    // A write-locks [100, 200).
    let la = new_lock(&mut st, a, oa, sa, b"la", WRITE_LT, 100, 100, now).unwrap();
    // B cannot read-lock [150, 160): DENIED names A's lock.
    let err = new_lock(&mut st, b, ob, sb, b"lb", READ_LT, 150, 10, now).unwrap_err();
    sb += 1;
    assert_eq!(
        err,
        LockError::Denied(Denied {
            offset: 100,
            length: 100,
            locktype: WRITE_LT,
            clientid: a,
            owner: b"la".to_vec()
        })
    );
    // LOCKT says the same; a range outside is free.
    assert!(matches!(
        st.lock_test(WRITE_LT, 0, 101, b, b"lb", 42, now),
        Err(LockError::Denied(_))
    ));
    st.lock_test(WRITE_LT, 0, 100, b, b"lb", 42, now).unwrap();
    // Downgrade A's middle to a read lock: B may now read-lock there.
    let la = st
        .lock(
            READ_LT,
            false,
            140,
            20,
            &Locker::Existing {
                lock_stateid: la,
                lock_seqid: 1,
            },
            42,
            now,
        )
        .unwrap();
    assert_eq!(st.counts().locked_ranges, 3);
    let lb = new_lock(&mut st, b, ob, sb, b"lb", READ_LT, 150, 10, now).unwrap();
    // Unlock the middle of A's lock: split.
    let la = st.unlock(2, &la, 120, 10, now).unwrap();
    assert!(matches!(
        st.lock_test(WRITE_LT, 125, 1, b, b"lb", 42, now),
        Ok(())
    ));
    // To-end-of-file ranges.
    let err = st
        .lock(
            WRITE_LT,
            false,
            1 << 40,
            u64::MAX,
            &Locker::Existing {
                lock_stateid: lb,
                lock_seqid: 1,
            },
            42,
            now,
        )
        .unwrap();
    assert_eq!(err.seqid, 2);
    assert!(matches!(
        st.lock_test(READ_LT, u64::MAX - 5, 1, a, b"la", 42, now),
        Err(LockError::Denied(Denied {
            length: u64::MAX,
            ..
        }))
    ));
    // Bad ranges.
    assert_eq!(
        st.lock_test(READ_LT, 5, 0, a, b"la", 42, now),
        Err(LockError::Status(Status::Inval))
    );
    assert_eq!(
        st.lock_test(READ_LT, u64::MAX - 1, 5, a, b"la", 42, now),
        Err(LockError::Status(Status::Inval))
    );
    // RELEASE_LOCKOWNER refuses while locks are held.
    assert_eq!(st.release_lock_owner(a, b"la", now), Err(Status::LocksHeld));
    let la = st.unlock(3, &la, 0, u64::MAX, now).unwrap();
    st.release_lock_owner(a, b"la", now).unwrap();
    assert_eq!(st.unlock(4, &la, 0, 1, now), Err(Status::BadStateId));
    // Wrong lock seqid.
    assert_eq!(
        st.unlock(9, &StateId { seqid: 2, ..lb }, 0, 1, now),
        Err(Status::BadSeqId)
    );
}

#[test]
fn write_locks_need_a_write_open() {
    let now = Instant::now();
    let mut st = fresh(now);
    let a = confirmed(&mut st, b"a", now);
    let mut s = 1;
    let o = open(&mut st, a, b"o", &mut s, 42, 1, 0, now).unwrap();
    assert_eq!(
        new_lock(&mut st, a, o, s, b"l", WRITE_LT, 0, 1, now),
        Err(LockError::Status(Status::OpenMode))
    );
    // OPENMODE consumed the seqid; a read lock with the next one works.
    new_lock(&mut st, a, o, s + 1, b"l", READ_LT, 0, 1, now).unwrap();
}

#[test]
fn lease_expiry_releases_opens_and_locks_for_others() {
    let t0 = Instant::now();
    let mut st = fresh(t0);
    let a = confirmed(&mut st, b"a", t0);
    let b = confirmed(&mut st, b"b", t0);
    let (mut sa, mut sb) = (1, 1);
    let oa = open(&mut st, a, b"oa", &mut sa, 42, 3, 0, t0).unwrap();
    let la = new_lock(&mut st, a, oa, sa, b"la", WRITE_LT, 0, u64::MAX, t0).unwrap();
    let ob = open(&mut st, b, b"ob", &mut sb, 42, 3, 0, t0).unwrap();
    // B keeps renewing, A goes silent.
    let t1 = t0 + LEASE / 2;
    st.renew(b, t1).unwrap();
    assert!(st.expire(t1).is_empty());
    assert!(matches!(
        new_lock(&mut st, b, ob, sb, b"lb", WRITE_LT, 0, 10, t1),
        Err(LockError::Denied(_))
    ));
    sb += 1;
    let t2 = t0 + LEASE + Duration::from_secs(5);
    st.renew(b, t2).unwrap();
    assert_eq!(st.expire(t2), vec![b"a".to_vec()]);
    new_lock(&mut st, b, ob, sb, b"lb", WRITE_LT, 0, 10, t2).unwrap();
    // A finds out.
    assert_eq!(st.renew(a, t2), Err(Status::Expired));
    assert_eq!(st.check_read(&la, 42, t2), Err(Status::Expired));
    assert_eq!(st.counts().clients, 1);
}

/// A courteous server: a client past its lease (a Mac asleep) keeps its
/// opens and locks; RENEW and its stateids work on waking; a conflicting
/// request of another client takes only the state in its way.
#[test]
fn an_expired_client_keeps_its_state_until_someone_conflicts() {
    let t0 = Instant::now();
    let mut st = fresh(t0).with_courtesy(Duration::from_secs(3600));
    let mac = confirmed(&mut st, b"mac", t0);
    let other = confirmed(&mut st, b"other", t0);
    let idle = confirmed(&mut st, b"idle", t0);
    let (mut sm, mut so) = (1, 1);
    // Two files: 42 locked whole, 43 opened deny-write.
    let o42 = open(&mut st, mac, b"501", &mut sm, 42, 3, 0, t0).unwrap();
    let l42 = new_lock(
        &mut st,
        mac,
        o42,
        sm,
        b"lock-owner",
        WRITE_LT,
        0,
        u64::MAX,
        t0,
    )
    .unwrap();
    sm += 1;
    let o43 = open(&mut st, mac, b"501", &mut sm, 43, 3, 2, t0).unwrap();
    // Asleep for two leases: kept (an idle client with no state is not).
    let t1 = t0 + LEASE * 2;
    st.renew(other, t1).unwrap();
    assert_eq!(st.expire(t1), vec![b"idle".to_vec()]);
    assert_eq!(st.renew(idle, t1), Err(Status::Expired));
    // Waking: RENEW and every stateid still work.
    let t2 = t1 + Duration::from_secs(1);
    st.renew(mac, t2).unwrap();
    st.check_write(&l42, 42, t2).unwrap();
    st.check_read(&o43, 43, t2).unwrap();
    // Asleep again; another client wants a lock on 42 and to write 43.
    let t3 = t2 + LEASE * 3;
    st.renew(other, t3).unwrap();
    assert!(st.expire(t3).is_empty());
    let oo = open(&mut st, other, b"o", &mut so, 42, 3, 0, t3).unwrap();
    new_lock(&mut st, other, oo, so, b"o-lock", WRITE_LT, 0, 10, t3).unwrap();
    so += 1;
    // 43: its deny-write open gives way to a writer.
    open(&mut st, other, b"o", &mut so, 43, 2, 0, t3).unwrap();
    // On waking, the state that gave way is gone, the rest is there (using
    // a stateid renews the lease: the client is live again).
    assert_eq!(st.check_write(&l42, 42, t3), Err(Status::BadStateId));
    assert_eq!(st.check_read(&o43, 43, t3), Err(Status::BadStateId));
    st.check_read(&o42, 42, t3).unwrap();
    // A live client's state never gives way.
    let (mut sm2, t4) = (1, t3 + Duration::from_secs(1));
    let mine = open(&mut st, mac, b"502", &mut sm2, 42, 3, 0, t4).unwrap();
    assert!(matches!(
        new_lock(&mut st, mac, mine, sm2, b"l2", WRITE_LT, 0, 10, t4),
        Err(LockError::Denied(_))
    ));
    // Past the courtesy bound, all of it goes.
    let t5 = t4 + LEASE + Duration::from_secs(3601);
    st.renew(other, t5).unwrap();
    assert_eq!(st.expire(t5), vec![b"mac".to_vec()]);
    assert_eq!(st.check_read(&o42, 42, t5), Err(Status::Expired));
}

#[test]
fn grace_period_admits_reclaims_and_holds_back_new_state() {
    let t0 = Instant::now();
    let grace = Duration::from_secs(10);
    let mut st = State::new(9, LEASE, grace, HashSet::from([b"old".to_vec()]), t0);
    assert!(st.in_grace(t0));
    let old = confirmed(&mut st, b"old", t0);
    let new = confirmed(&mut st, b"new", t0);
    st.check_reclaim(old, t0).unwrap();
    assert_eq!(st.check_reclaim(new, t0), Err(Status::ReclaimBad));
    // Reclaim a lock during grace; a new lock is GRACE.
    let mut s = 1;
    let o = open(&mut st, old, b"o", &mut s, 42, 3, 0, t0).unwrap();
    let locker = Locker::New {
        open_seqid: s,
        open_stateid: o,
        lock_seqid: 0,
        clientid: old,
        owner: b"l",
    };
    st.lock(WRITE_LT, true, 0, 10, &locker, 42, t0).unwrap();
    s += 1;
    let mut s2 = 1;
    let o2 = open(&mut st, new, b"o2", &mut s2, 42, 3, 0, t0).unwrap();
    assert_eq!(
        new_lock(&mut st, new, o2, s2, b"l2", WRITE_LT, 100, 1, t0),
        Err(LockError::Status(Status::Grace))
    );
    // A reclaiming open-owner needs no OPEN_CONFIRM.
    let Begin::Proceed { confirm_needed } = st.begin_open(old, b"re", 1, t0).unwrap() else {
        panic!()
    };
    assert!(confirm_needed);
    st.check_reclaim(old, t0).unwrap();
    let r = st.open(old, b"re", 44, 1, 0, t0).unwrap();
    st.confirm_open_owner(old, b"re");
    st.check_read(&r, 44, t0).unwrap();
    assert!(matches!(
        st.begin_open(old, b"re", 2, t0),
        Ok(Begin::Proceed {
            confirm_needed: false
        })
    ));
    // After grace: reclaims are NO_GRACE, new locks fine.
    let t1 = t0 + grace;
    assert!(!st.in_grace(t1));
    assert_eq!(st.check_reclaim(old, t1), Err(Status::NoGrace));
    // GRACE consumed the open-owner's seqid, as every such error does.
    new_lock(&mut st, new, o2, s2 + 1, b"l2", WRITE_LT, 100, 1, t1).unwrap();
    // With nobody to reclaim there is no grace at all.
    let st = State::new(9, LEASE, grace, HashSet::new(), t0);
    assert!(!st.in_grace(t0));
    let _ = s;
}

#[test]
fn thousand_cycles_leave_no_state() {
    let now = Instant::now();
    let mut st = fresh(now);
    let clients: Vec<u64> = (0..10)
        .map(|i| confirmed(&mut st, format!("c{i}").as_bytes(), now))
        .collect();
    for i in 0..1000u32 {
        let cid = clients[i as usize % clients.len()];
        let owner = format!("owner-{i}");
        let mut seq = 1;
        let o = open(
            &mut st,
            cid,
            owner.as_bytes(),
            &mut seq,
            1000 + i as u64 % 7,
            3,
            0,
            now,
        )
        .unwrap();
        let lock_owner = format!("lock-{i}");
        let locker = Locker::New {
            open_seqid: seq,
            open_stateid: o,
            lock_seqid: 0,
            clientid: cid,
            owner: lock_owner.as_bytes(),
        };
        seq += 1;
        let l = st
            .lock(
                WRITE_LT,
                false,
                i as u64 * 10,
                10,
                &locker,
                1000 + i as u64 % 7,
                now,
            )
            .unwrap();
        st.unlock(1, &l, 0, u64::MAX, now).unwrap();
        st.release_lock_owner(cid, lock_owner.as_bytes(), now)
            .unwrap();
        let o = StateId {
            seqid: o.seqid,
            ..o
        };
        st.close(&o, seq).unwrap();
    }
    let c = st.counts();
    assert_eq!(
        (
            c.opens,
            c.open_owners,
            c.lock_owners,
            c.lock_states,
            c.locked_ranges
        ),
        (0, 0, 0, 0, 0),
        "{c:?}"
    );
    assert!(c.retired_owners <= RETIRED_LIMIT);
    assert_eq!(c.clients, 10);
}

#[test]
fn io_without_an_open_respects_share_denials() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let mut seq = 1;
    // An editor opens for reading and writing, denying readers.
    open(&mut st, cid, b"a", &mut seq, 42, 3, 1, now).unwrap();
    let anonymous = StateId::ANONYMOUS;
    assert_eq!(st.check_read(&anonymous, 42, now), Err(Status::Locked));
    st.check_write(&anonymous, 42, now).unwrap();
    // READ bypass is for locks, and reads; other files are not denied.
    st.check_read(&StateId::READ_BYPASS, 42, now).unwrap();
    st.check_read(&StateId::ANONYMOUS, 43, now).unwrap();
    // Denying writers too: all-ones writes as the anonymous stateid does.
    open(&mut st, cid, b"b", &mut seq, 44, 1, 2, now).unwrap();
    for special in [StateId::ANONYMOUS, StateId::READ_BYPASS] {
        assert_eq!(st.check_write(&special, 44, now), Err(Status::Locked));
    }
}

/// RFC 7530 §9.1.4: STALE_STATEID only for a stateid of an earlier run of
/// this server (a client told STALE starts reboot recovery); BAD_STATEID
/// for one never issued; EXPIRED for one whose client rebooted.
#[test]
fn stateid_errors_say_whose_it_was() {
    let now = Instant::now();
    let mut st = fresh(now).with_earlier_boots(HashSet::from([5, 6]));
    let cid = confirmed(&mut st, b"c", now);
    let mut seq = 1;
    let s = open(&mut st, cid, b"o", &mut seq, 42, 3, 0, now).unwrap();
    let with_boot = |boot: u32| {
        let mut x = s;
        x.other[..4].copy_from_slice(&boot.to_be_bytes());
        x
    };
    assert_eq!(
        st.check_read(&with_boot(6), 42, now),
        Err(Status::StaleStateId)
    );
    assert_eq!(
        st.check_write(&with_boot(5), 42, now),
        Err(Status::StaleStateId)
    );
    assert_eq!(
        st.check_read(&with_boot(99), 42, now),
        Err(Status::BadStateId)
    );
    // This run's boot, an id never handed out.
    let mut never = s;
    never.other[8..].copy_from_slice(&[0xee; 4]);
    assert_eq!(st.check_read(&never, 42, now), Err(Status::BadStateId));
    // The client reboots (same id string, new verifier): its old state
    // goes, and the old stateid answers EXPIRED.
    let (cid2, conf) = st.set_client_id(b"c", [2; 8], "sys:0@a", now).unwrap();
    st.confirm_client_id(cid2, conf, now).unwrap();
    assert_eq!(st.check_read(&s, 42, now), Err(Status::Expired));
}

/// One owner's overlapping and adjacent locks are one lock: another owner's
/// LOCKT and LOCK see the union.
#[test]
fn one_owners_locks_merge_into_their_union() {
    let now = Instant::now();
    let mut st = fresh(now);
    let (a, b, oa, _, sa, _) = two_openers(&mut st, now);
    let mut la = new_lock(&mut st, a, oa, sa, b"la", WRITE_LT, 0, 10, now).unwrap();
    let mut seqid = 0;
    let mut more = |st: &mut State, locktype: u32, offset: u64, length: u64| {
        seqid += 1;
        la = st
            .lock(
                locktype,
                false,
                offset,
                length,
                &Locker::Existing {
                    lock_stateid: la,
                    lock_seqid: seqid,
                },
                42,
                now,
            )
            .unwrap();
    };
    more(&mut st, WRITE_LT, 5, 15); // overlapping: [0, 20)
    more(&mut st, WRITE_LT, 20, 10); // adjacent: [0, 30)
    assert_eq!(st.counts().locked_ranges, 1);
    let Err(LockError::Denied(d)) = st.lock_test(READ_LT, 25, 1, b, b"lb", 42, now) else {
        panic!("not denied")
    };
    assert_eq!((d.offset, d.length), (0, 30));
    // A read lock next to the write lock stays apart.
    more(&mut st, READ_LT, 30, 10);
    assert_eq!(st.counts().locked_ranges, 2);
}

/// RFC 7530 §16.19.4: OPEN_DOWNGRADE goes back to an access (and deny) the
/// owner's OPENs asked for, not to any subset of their union.
#[test]
fn open_downgrade_goes_back_only_to_what_was_opened() {
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let mut seq = 1;
    // Opened for reading and writing at once: READ alone was never asked.
    let both = open(&mut st, cid, b"o", &mut seq, 42, 3, 0, now).unwrap();
    assert_eq!(st.open_downgrade(&both, seq, 1, 0), Err(Status::Inval));
    seq += 1;
    // Another file: READ, then WRITE (the open becomes BOTH); each can come
    // back.
    open(&mut st, cid, b"o", &mut seq, 43, 1, 0, now).unwrap();
    let up = open(&mut st, cid, b"o", &mut seq, 43, 2, 0, now).unwrap();
    let down = st.open_downgrade(&up, seq, 1, 0).unwrap();
    seq += 1;
    assert_eq!(st.check_write(&down, 43, now), Err(Status::OpenMode));
    // Never more than is held now.
    assert_eq!(st.open_downgrade(&down, seq, 2, 0), Err(Status::Inval));
}

#[test]
fn an_owner_that_never_goes_idle_keeps_one_closed_stateid_not_all() {
    // A Linux client's open-owner (one per user) keeps a file open for
    // hours while a render opens and closes thousands of others: what it
    // closed must not pile up.
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    let mut seq = 1;
    open(&mut st, cid, b"user", &mut seq, 1, 1, 0, now).unwrap();
    let mut last = None;
    for fileid in 2..5_000 {
        let s = open(&mut st, cid, b"user", &mut seq, fileid, 1, 0, now).unwrap();
        st.close(&s, seq).unwrap();
        last = Some((s, seq));
        seq += 1;
    }
    assert_eq!(st.retired_stateids.len(), 1, "closed stateids kept");
    // The last CLOSE still finds its owner for a retransmission.
    let (s, closed_at) = last.unwrap();
    let key = st
        .owner_of(&s)
        .expect("the last closed stateid maps to its owner");
    st.remember(&key, closed_at, 9, Status::Ok, vec![7]);
    assert_eq!(
        st.replay(&key, closed_at, Some(9)),
        Some(Ok((Status::Ok, vec![7])))
    );
}

#[test]
fn owners_used_once_each_stay_within_the_retired_limit() {
    // libnfs opens each file under a new open-owner.
    let now = Instant::now();
    let mut st = fresh(now);
    let cid = confirmed(&mut st, b"c", now);
    for n in 0..3 * RETIRED_LIMIT as u32 {
        let owner = n.to_be_bytes();
        let mut seq = 1;
        let s = open(&mut st, cid, &owner, &mut seq, 7, 1, 0, now).unwrap();
        st.close(&s, seq).unwrap();
    }
    let c = st.counts();
    assert_eq!((c.opens, c.open_owners), (0, 0), "{c:?}");
    assert_eq!(c.retired_owners, RETIRED_LIMIT);
    assert_eq!(st.owners.len(), RETIRED_LIMIT);
    assert_eq!(st.retired_stateids.len(), RETIRED_LIMIT);
}
