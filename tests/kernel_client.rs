//! End-to-end through the real Linux NFS client (../shared/nfs-vm), over
//! NFSv4.0 and NFSv3: mount, browse and read a generated catalog and an
//! imported folder, and keep a mount alive across a server restart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// Files to checksum through the mount: the smallest media file of at least
/// 1 GiB plus a few ordinary ones. Returns (guest path, host content path).
fn files_to_check(db: &Path, small: usize) -> Vec<(String, PathBuf)> {
    let tree = expected_tree(db);
    let conn = rusqlite::Connection::open(db).unwrap();
    let content: BTreeMap<(String, i64), String> = conn
        .prepare("SELECT label, file_size, json_extract(aliases_json, '$.path') FROM file_nodes WHERE node_type = 'file'")
        .unwrap()
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let host_path = |guest: &str, size: u64| -> PathBuf {
        let label = guest.rsplit('/').next().unwrap().to_string();
        PathBuf::from(&content[&(label, size as i64)])
    };
    let mut files: Vec<(&String, u64)> = tree
        .iter()
        .filter(|(_, (t, _))| *t == 'f')
        .map(|(p, (_, s))| (p, *s))
        .collect();
    files.sort_by_key(|(p, s)| (*s, (*p).clone()));
    let mut picked = Vec::new();
    if let Some((p, s)) = files.iter().find(|(_, s)| *s >= 1 << 30) {
        picked.push(((*p).clone(), host_path(p, *s)));
    }
    let ordinary: Vec<_> = files
        .iter()
        .filter(|(_, s)| *s > 0 && *s < 1 << 30)
        .collect();
    let step = (ordinary.len() / small.max(1)).max(1);
    for (p, s) in ordinary.iter().step_by(step).take(small) {
        picked.push(((*p).clone(), host_path(p, *s)));
    }
    picked
}

/// Guest script: count, listing and checksums, between markers.
fn browse_script(files: &[(String, PathBuf)]) -> String {
    let sums: Vec<String> = files.iter().map(|(g, _)| sq(g)).collect();
    format!(
        "set -e\necho \"COUNT $(find /mnt | wc -l)\"\necho LS-BEGIN\n/usr/bin/ls -lRA --show-control-chars --time-style=+%s --quoting-style=literal\necho LS-END\necho SUM-BEGIN\nmd5sum {}\necho SUM-END\n",
        sums.join(" ")
    )
}

fn check_browse_output(stdout: &str, db: &Path, files: &[(String, PathBuf)]) {
    let want = expected_tree(db);
    let count: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("COUNT "))
        .expect("COUNT line")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        count,
        want.len() + 1,
        "find /mnt | wc -l (nodes + the root)"
    );
    let got = parse_ls_lr(section(stdout, "LS-BEGIN", "LS-END"));
    assert_same_tree(&got, &want);
    let sums: BTreeMap<String, String> = section(stdout, "SUM-BEGIN", "SUM-END")
        .lines()
        .filter_map(|l| {
            let (h, p) = l.split_once("  ")?;
            Some((p.to_string(), h.to_string()))
        })
        .collect();
    assert_eq!(sums.len(), files.len(), "one checksum per file: {sums:?}");
    for (guest, host) in files {
        assert_eq!(
            sums.get(guest),
            Some(&checksum_file(host)),
            "checksum of {guest} through the mount vs {} on disk",
            host.display()
        );
    }
}

/// Mount options of each NFS version (`nfs-vm.sh`): NFSv3 finds MOUNT on
/// the NFS port.
const V4: &[&str] = &[];
const V3: &[&str] = &["--vers", "3"];

/// The 12,659-node tree, browsed and checksummed over NFSv4.0, then over
/// NFSv3 from the same server.
#[test]
fn generated_catalog_is_browsable_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/seed.sqlite");
    let storage = tmp.path().join("users/seed.storage");
    let out = cli(&[
        "gen",
        "--db",
        db.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
    ]);
    assert!(out.contains("generated 12659 nodes"), "{out}");
    let files = files_to_check(&db, 6);
    assert!(files
        .iter()
        .any(|(_, h)| std::fs::metadata(h).unwrap().len() >= 1 << 30));
    let server = Server::start(tmp.path(), &db, &storage, 0);
    let _vm = vm_lock();
    // NFSv3 reads the ordinary files only: a 1 GiB file byte-exact over
    // NFSv3 is kernel_writes' (each 1 GiB costs the emulated guest minutes).
    for (vers, files) in [(V4, &files[..]), (V3, &files[1..])] {
        let t = std::time::Instant::now();
        let vm = run_vm(server.port(), &browse_script(files), vers);
        eprintln!("browse over {vers:?}: {:.1?}", t.elapsed());
        let stdout = String::from_utf8_lossy(&vm.stdout);
        assert_eq!(
            vm.status.code(),
            Some(0),
            "guest failed ({vers:?}); server log:\n{}",
            server.log()
        );
        check_browse_output(&stdout, &db, files);
    }
}

/// A real folder with nesting, odd names and assorted sizes.
fn make_folder(root: &Path) -> u64 {
    let mut n = 0;
    let dirs = [
        "Project A/Footage/Day 1",
        "Project A/Footage/Day 2",
        "Project A/Audio",
        "Project B — Café/Exports",
        "Empty Folder",
    ];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut seed = 7u64;
    for (i, d) in dirs.iter().enumerate() {
        for j in 0..(3 + i * 2) {
            if d.starts_with("Empty") {
                break;
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = (seed >> 40) as usize % (300 << 10);
            let data: Vec<u8> = (0..size).map(|k| (k as u64 ^ seed) as u8).collect();
            let name = if j == 1 {
                format!("clip {j} (v2).mov")
            } else {
                format!("clip_{j}.wav")
            };
            std::fs::write(root.join(d).join(name), data).unwrap();
            n += 1;
        }
    }
    std::fs::write(root.join("._Project A"), b"AppleDouble").unwrap();
    std::fs::write(root.join(".DS_Store"), b"").unwrap();
    std::fs::write(root.join("Notes été.txt"), "Scène 2\n".repeat(100)).unwrap();
    n + 3
}

#[test]
fn imported_folder_is_browsable_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("footage");
    let files_made = make_folder(&src);
    let db = tmp.path().join("users/imported.sqlite");
    let out = cli(&[
        "import",
        src.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("{files_made} files")), "{out}");
    let files = files_to_check(&db, 8);
    let server = Server::start(tmp.path(), &db, &tmp.path().join("storage"), 0);
    let _vm = vm_lock();
    let vm = run_vm(server.port(), &browse_script(&files), &[]);
    let stdout = String::from_utf8_lossy(&vm.stdout);
    assert_eq!(
        vm.status.code(),
        Some(0),
        "guest failed; server log:\n{}",
        server.log()
    );
    check_browse_output(&stdout, &db, &files);
}

#[test]
fn mount_survives_a_server_restart() {
    restart_under_a_mount(V4);
}

#[test]
fn nfsv3_mount_survives_a_server_restart() {
    restart_under_a_mount(V3);
}

fn restart_under_a_mount(vers: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/r.sqlite");
    let storage = tmp.path().join("users/r.storage");
    cli(&[
        "gen",
        "--db",
        db.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
        "--nodes",
        "400",
        "--media",
        "3000000",
    ]);
    let files = files_to_check(&db, 4);
    let sums: Vec<String> = files.iter().map(|(g, _)| sq(g)).collect();
    let sums = sums.join(" ");
    let mut server = Server::start(tmp.path(), &db, &storage, 0);
    // Phase 1 lists and reads (keeping one file open across the restart),
    // then waits while the host restarts the server; phase 2 does it again.
    let first = sq(&files[0].0);
    let script = format!(
        "exec 3< {first}\necho LS1-BEGIN\n/usr/bin/ls -lRA --show-control-chars --time-style=+%s --quoting-style=literal\necho LS1-END\nmd5sum {sums}\necho RESTART-NOW\nsleep 8\necho LS2-BEGIN\n/usr/bin/ls -lRA --show-control-chars --time-style=+%s --quoting-style=literal\necho LS2-END\necho SUM-BEGIN\nmd5sum {sums}\necho SUM-END\nmd5sum <&3\nexec 3<&-\n"
    );
    let _vm = vm_lock();
    let mut restarted = false;
    let port = server.port();
    let (code, lines) = run_vm_streaming_with(port, vers, &script, |line| {
        if line == "RESTART-NOW" && !restarted {
            server.restart();
            restarted = true;
        }
    });
    let stdout = lines.join("\n");
    assert!(
        restarted,
        "guest never reached the restart point:\n{stdout}"
    );
    assert_eq!(
        code,
        Some(0),
        "guest failed:\n{stdout}\nserver log:\n{}",
        server.log()
    );
    assert!(!stdout.contains("Stale"), "ESTALE seen:\n{stdout}");
    let want = expected_tree(&db);
    assert_same_tree(
        &parse_ls_lr(section(&stdout, "LS1-BEGIN", "LS1-END")),
        &want,
    );
    assert_same_tree(
        &parse_ls_lr(section(&stdout, "LS2-BEGIN", "LS2-END")),
        &want,
    );
    let after = section(&stdout, "SUM-BEGIN", "SUM-END");
    for (guest, host) in &files {
        let line = format!("{}  {}", checksum_file(host), guest);
        assert!(
            after.contains(&line),
            "after restart: missing {line:?} in\n{after}"
        );
    }
    // The descriptor opened before the restart still reads (the client
    // re-establishes its state with the new server instance).
    let open_sum = format!("{}  -", checksum_file(&files[0].1));
    assert!(
        stdout.contains(&open_sum),
        "read through the pre-restart open failed:\n{stdout}"
    );
}
