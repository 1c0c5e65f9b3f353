//! The Linux kernel client (../shared/nfs-vm, mounted with `actimeo=0` so
//! it revalidates at every look) sees what the MarkBase app commits to the
//! catalog while the mount is in use: an insert, a rename, a move between
//! folders, a size change and a delete, each within a second.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_apps_commits_show_in_the_kernel_mount_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/k.sqlite");
    let storage = tmp.path().join("users/k.storage");
    let server = Server::start(tmp.path(), &db, &storage, 0);
    // The guest announces each step, then polls the mount until the
    // step's change shows (at most ~8 s, bounded).
    let script = r#"
cd /mnt || exit 1
wait_for() { i=0; while [ $i -lt 400 ]; do if eval "$1"; then return 0; fi; sleep 0.02; i=$((i+1)); done; return 1; }
ls Library Projects > /dev/null || exit 1
echo STEP-1; wait_for '[ -e "Library/Shot list.txt" ]' && echo SEEN-1
echo STEP-2; wait_for '[ -e "Library/Notes v2.txt" ] && [ ! -e "Library/Notes café.txt" ]' && echo SEEN-2
echo STEP-3; wait_for '[ -e "Library/README.txt" ] && [ ! -e "Projects/README.txt" ]' && echo SEEN-3
echo STEP-4; wait_for '[ "$(cat "Library/Shot list.txt")" = "wide, close, insert" ]' && echo SEEN-4
echo STEP-5; wait_for '[ ! -e "Library/Shot list.txt" ]' && echo SEEN-5
echo DONE
"#;
    let app = rusqlite::Connection::open(&db).unwrap();
    app.busy_timeout(Duration::from_secs(10)).unwrap();
    let content = storage.join("app-shots.txt");
    std::fs::write(&content, b"wide, close").unwrap();
    let aliases = serde_json::json!({ "path": content }).to_string();
    let mut committed: Vec<Option<Instant>> = vec![None; 6];
    let mut delays: Vec<Option<Duration>> = vec![None; 6];
    let _vm = vm_lock();
    let (code, lines) = run_vm_streaming_with(
        server.port(),
        &["--opts", "actimeo=0"],
        script,
        |line| {
            if let Some(n) = line.trim().strip_prefix("STEP-") {
                let n: usize = n.parse().unwrap();
                match n {
                    1 => app.execute(
                        "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
                         VALUES ('app-shots', 'demo-library', 'Shot list.txt', 'file', ?1, 11, 1700000000, 1700000000)",
                        [&aliases],
                    ),
                    2 => app.execute(
                        "UPDATE file_nodes SET label = 'Notes v2.txt' WHERE node_id = 'demo-notes'",
                        [],
                    ),
                    3 => app.execute(
                        "UPDATE file_nodes SET parent_id = 'demo-library' WHERE node_id = 'demo-readme'",
                        [],
                    ),
                    4 => {
                        std::fs::write(&content, b"wide, close, insert").unwrap();
                        app.execute(
                            "UPDATE file_nodes SET file_size = 19, updated_at = 1700000100 WHERE node_id = 'app-shots'",
                            [],
                        )
                    }
                    _ => app.execute("DELETE FROM file_nodes WHERE node_id = 'app-shots'", []),
                }
                .unwrap();
                committed[n] = Some(Instant::now());
            } else if let Some(n) = line.trim().strip_prefix("SEEN-") {
                let n: usize = n.parse().unwrap();
                delays[n] = committed[n].map(|t| t.elapsed());
            }
        },
    );
    assert_eq!(code, Some(0), "{lines:?}\n{}", server.log());
    assert!(lines.iter().any(|l| l.trim() == "DONE"), "{lines:?}");
    eprintln!("seen by the kernel client after {delays:?}");
    for (n, d) in delays.iter().enumerate().skip(1) {
        let d = d.unwrap_or_else(|| panic!("step {n} never seen: {lines:?}"));
        // Measured at the host: the commit, the guest's next look, and its
        // console line back.
        assert!(d < Duration::from_secs(1), "step {n} took {d:?}");
    }
}
