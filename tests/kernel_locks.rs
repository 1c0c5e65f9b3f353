//! Locks through the real Linux NFSv4.0 client (../shared/nfs-vm), two VMs
//! being two clients: conflicts across clients and between processes, a
//! killed client losing its locks after the lease, and reclaim of an open
//! and a lock in the grace period after a server restart.

mod common;

use std::time::Duration;

use common::*;

const F: &str = "/usr/bin/flock";

fn has(lines: &[String], l: &str) -> bool {
    lines.iter().any(|x| x == l)
}

fn pos(lines: &[String], l: &str) -> usize {
    lines
        .iter()
        .position(|x| x == l)
        .unwrap_or_else(|| panic!("{l} not in {lines:?}"))
}

#[test]
fn a_lock_held_by_one_client_blocks_another_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.sqlite");
    let server = Server::start(tmp.path(), &db, &tmp.path().join("l.storage"), 0);
    let _vm = vm_lock();
    let mut holder = spawn_vm(
        server.port(),
        &format!("echo x > shared; {F} -x shared -c 'echo LOCKED; sleep 40; echo RELEASING'; echo EXITED"),
    );
    assert!(
        holder.wait_for("LOCKED", Duration::from_secs(120)),
        "holder never locked: {:?}",
        holder.seen
    );
    let other = run_vm(
        server.port(),
        &format!("{F} -n -x shared true && echo GOT-NB || echo DENIED-NB; {F} -x shared -c 'echo GOT-BLOCKING'"),
        &["--with", "/usr/bin/flock"],
    );
    let other_out: Vec<String> = String::from_utf8_lossy(&other.stdout)
        .lines()
        .map(String::from)
        .collect();
    let (code, holder_out) = holder.finish();
    assert_eq!(code, Some(0), "{holder_out:?}\n{}", server.log());
    assert_eq!(other.status.code(), Some(0), "{other_out:?}");
    assert!(
        has(&other_out, "DENIED-NB"),
        "the second client got a held lock: {other_out:?}"
    );
    assert!(has(&other_out, "GOT-BLOCKING"), "{other_out:?}");
    assert!(has(&holder_out, "RELEASING"), "{holder_out:?}");
}

#[test]
fn two_processes_on_one_client_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("p.sqlite");
    let server = Server::start(tmp.path(), &db, &tmp.path().join("p.storage"), 0);
    let _vm = vm_lock();
    let out = run_vm(
        server.port(),
        &format!(
            "echo x > f; {F} -x f -c 'sleep 4' & sleep 2; {F} -n -x f true && echo GOT || echo CONFLICT; {F} -n -s f true && echo GOT-SHARED || echo CONFLICT-SHARED; wait; {F} -n -x f true && echo FREE"
        ),
        &["--with", "/usr/bin/flock"],
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(out.status.code(), Some(0), "{lines:?}");
    assert!(has(&lines, "CONFLICT"), "{lines:?}");
    assert!(has(&lines, "CONFLICT-SHARED"), "{lines:?}");
    assert!(has(&lines, "FREE"), "{lines:?}");
}

#[test]
fn a_killed_client_loses_its_locks_after_the_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.sqlite");
    let server = Server::start_with(
        tmp.path(),
        &db,
        &tmp.path().join("k.storage"),
        0,
        &["--lease-time", "10"],
    );
    let _vm = vm_lock();
    let mut doomed = spawn_vm(
        server.port(),
        &format!("echo x > shared; {F} -x shared -c 'echo LOCKED; sleep 300'"),
    );
    assert!(
        doomed.wait_for("LOCKED", Duration::from_secs(120)),
        "{:?}",
        doomed.seen
    );
    doomed.kill();
    let out = run_vm(
        server.port(),
        &format!(
            "t0=$(date +%s); {F} -x shared -c 'echo GOT'; echo WAITED $(( $(date +%s) - t0 ))"
        ),
        &["--with", "/usr/bin/flock"],
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(out.status.code(), Some(0), "{lines:?}");
    assert!(has(&lines, "GOT"), "{lines:?}");
    // Past its lease the killed client is kept for courtesy; the waiting
    // client's conflicting LOCK is what frees the lock.
    assert!(
        server
            .log()
            .contains("an expired client's lock gave way to another client"),
        "the lock was not freed by lease expiry:\n{}",
        server.log()
    );
}

#[test]
fn open_and_lock_are_reclaimed_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.sqlite");
    // The client renews every ~2/3 lease; the grace period covers that.
    let mut server = Server::start_with(
        tmp.path(),
        &db,
        &tmp.path().join("r.storage"),
        0,
        &["--lease-time", "10", "--grace-time", "15"],
    );
    let _vm = vm_lock();
    let mut holder = spawn_vm(
        server.port(),
        &format!(
            "echo before > rl; exec 3<>rl; {F} -x 3 && echo LOCKED; sleep 45; echo after >&3 && echo WROTE; cat rl; {F} -u 3; exec 3>&-; echo END"
        ),
    );
    assert!(
        holder.wait_for("LOCKED", Duration::from_secs(120)),
        "{:?}",
        holder.seen
    );
    server.restart();
    // Past the grace period: the lock must be there again (reclaimed).
    std::thread::sleep(Duration::from_secs(16));
    let other = run_vm(
        server.port(),
        &format!("{F} -n -x rl true && echo GOT-NB || echo DENIED-NB; {F} -x rl -c 'echo GOT-BLOCKING'; cat rl"),
        &["--with", "/usr/bin/flock"],
    );
    let other_out: Vec<String> = String::from_utf8_lossy(&other.stdout)
        .lines()
        .map(String::from)
        .collect();
    let (code, holder_out) = holder.finish();
    assert_eq!(code, Some(0), "{holder_out:?}\n{}", server.log());
    assert!(
        has(&holder_out, "WROTE"),
        "write after restart failed: {holder_out:?}"
    );
    assert!(
        has(&other_out, "DENIED-NB"),
        "lock not reclaimed: {other_out:?}\n{}",
        server.log()
    );
    assert!(has(&other_out, "GOT-BLOCKING"), "{other_out:?}");
    assert!(pos(&other_out, "GOT-BLOCKING") < other_out.len());
    assert!(has(&other_out, "after"), "{other_out:?}");
}
