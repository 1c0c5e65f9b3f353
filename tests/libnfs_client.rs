//! Through libnfs (Debian's libnfs-utils), a second independent client
//! (NFSv4, and NFSv3 with MOUNT on the same port): README's `serve` with no
//! arguments, nodes whose content file is missing, files crossing versions.

mod common;

use std::process::Command;

use common::*;

fn url(port: u16, path: &str) -> String {
    format!("nfs://127.0.0.1/{path}?version=4&nfsport={port}")
}

fn nfs_tool(tool: &str, port: u16, path: &str) -> std::process::Output {
    Command::new(tool)
        .arg(url(port, path))
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package libnfs-utils) not runnable: {e}"))
}

/// README: `markbase-nfs serve` with no other arguments, in a fresh folder,
/// creates the demo catalog, prints the mount lines and serves the tree.
#[test]
fn serve_with_no_arguments_serves_the_demo_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::spawn(tmp.path(), vec!["serve".into()]);
    assert_eq!(server.addr.to_string(), "127.0.0.1:11112");
    let head = server.stdout_head.join("\n");
    assert!(
        head.contains("mount_nfs -o vers=4,port=11112,rwsize=1048576,nfc 127.0.0.1:/"),
        "{head}"
    );
    assert!(
        head.contains("nfs://127.0.0.1/?options=vers:4,port:11112,rwsize:1048576,nfc"),
        "{head}"
    );
    assert!(
        head.contains("mount -t nfs4 -o vers=4.0,port=11112 127.0.0.1:/"),
        "{head}"
    );
    let db = tmp.path().join("data/users/demo.sqlite");
    assert!(db.exists(), "demo catalog not created");
    let want = expected_tree(&db);
    assert!(want.len() >= 8, "demo tree too small: {want:?}");

    let ls = nfs_tool("nfs-ls", 11112, "Projects");
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("README.txt") && ls.contains("Demo Film"),
        "{ls}"
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    let files: Vec<(String, String)> = conn
        .prepare("SELECT label, json_extract(aliases_json, '$.path') FROM file_nodes WHERE node_type = 'file'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (label, host) in files {
        let guest = want
            .keys()
            .find(|p| p.ends_with(&format!("/{label}")))
            .unwrap()
            .trim_start_matches("./")
            .to_string();
        let cat = nfs_tool("nfs-cat", 11112, &guest);
        assert!(
            cat.status.success(),
            "nfs-cat {guest}: {}",
            String::from_utf8_lossy(&cat.stderr)
        );
        assert_eq!(
            cat.stdout,
            std::fs::read(&host).unwrap(),
            "content of {guest}"
        );
    }
}

/// A node whose content file is gone stays listable, READ answers an I/O
/// error, and the server logs it once.
#[test]
fn missing_content_is_listable_and_reads_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("m.sqlite");
    let storage = tmp.path().join("m.storage");
    cli(&[
        "gen",
        "--db",
        db.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
        "--nodes",
        "60",
        "--media",
        "1000",
        "--missing",
        "2",
    ]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, String, i64)> = conn
        .prepare("SELECT label, json_extract(aliases_json, '$.path'), file_size FROM file_nodes WHERE node_type = 'file'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (missing_label, missing_path, _) = rows
        .iter()
        .find(|(_, p, _)| !std::path::Path::new(p).exists())
        .expect("gen --missing left a content file absent")
        .clone();
    let (ok_label, ok_path, _) = rows
        .iter()
        .find(|(_, p, s)| std::path::Path::new(p).exists() && *s > 0)
        .unwrap()
        .clone();
    let tree = expected_tree(&db);
    let path_of = |label: &str| {
        tree.keys()
            .find(|p| p.ends_with(&format!("/{label}")))
            .unwrap()
            .trim_start_matches("./")
            .to_string()
    };
    let server = Server::start(tmp.path(), &db, &storage, 0);
    let port = server.port();
    let missing = path_of(&missing_label);
    let parent = missing.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let ls = nfs_tool("nfs-ls", port, parent);
    assert!(ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&missing_label));
    for _ in 0..2 {
        let cat = nfs_tool("nfs-cat", port, &missing);
        assert!(!cat.status.success(), "reading a missing file succeeded");
    }
    let ok = nfs_tool("nfs-cat", port, &path_of(&ok_label));
    assert!(ok.status.success());
    assert_eq!(ok.stdout, std::fs::read(&ok_path).unwrap());
    let log = server.log();
    let reports = log
        .lines()
        .filter(|l| l.contains(missing_path.as_str()) && l.contains("READ answers an I/O error"))
        .count();
    assert_eq!(reports, 1, "a failing READ should be logged once:\n{log}");
    // Start-up reconciliation reported it too.
    assert!(log
        .lines()
        .any(|l| l.contains(missing_path.as_str()) && l.contains("content file missing")));
}

/// The MarkBase app commits to the catalog while the server runs: an
/// insert, a rename, a move, a size change and a delete show to libnfs
/// (every call a fresh client) within a second of the commit.
#[test]
fn the_apps_commits_show_to_libnfs_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/app.sqlite");
    let storage = tmp.path().join("users/app.storage");
    let server = Server::start(tmp.path(), &db, &storage, 0);
    let port = server.port();
    let ls = |dir: &str| {
        let out = nfs_tool("nfs-ls", port, dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let within = |what: &str, since: std::time::Instant, check: &dyn Fn() -> bool| {
        while !check() {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(1),
                "{what}: not visible a second after the commit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert!(ls("Library").contains("Notes café.txt"));
    let app = rusqlite::Connection::open(&db).unwrap();
    app.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let content = storage.join("from-the-app.txt");
    std::fs::write(&content, b"cut list v1\n").unwrap();
    let t = std::time::Instant::now();
    app.execute(
        "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
         VALUES ('app-cuts', 'demo-library', 'Cut list.txt', 'file', ?1, 12, 1700000000, 1700000000)",
        [serde_json::json!({ "path": content }).to_string()],
    )
    .unwrap();
    within("insert", t, &|| ls("Library").contains("Cut list.txt"));
    let t = std::time::Instant::now();
    app.execute_batch(
        "UPDATE file_nodes SET label = 'Notes (final).txt' WHERE node_id = 'demo-notes';
         UPDATE file_nodes SET parent_id = 'demo-projects' WHERE node_id = 'app-cuts';",
    )
    .unwrap();
    within("rename and move", t, &|| {
        let lib = ls("Library");
        lib.contains("Notes (final).txt")
            && !lib.contains("Notes café.txt")
            && !lib.contains("Cut list.txt")
            && ls("Projects").contains("Cut list.txt")
    });
    std::fs::write(&content, b"cut list v2, longer\n").unwrap();
    let t = std::time::Instant::now();
    app.execute(
        "UPDATE file_nodes SET file_size = 20 WHERE node_id = 'app-cuts'",
        [],
    )
    .unwrap();
    within("size change", t, &|| {
        nfs_tool("nfs-cat", port, "Projects/Cut list.txt").stdout == b"cut list v2, longer\n"
    });
    let t = std::time::Instant::now();
    app.execute("DELETE FROM file_nodes WHERE node_id = 'app-cuts'", [])
        .unwrap();
    within("delete", t, &|| !ls("Projects").contains("Cut list.txt"));
}

fn url3(port: u16, path: &str) -> String {
    format!("nfs://127.0.0.1/{path}?version=3&nfsport={port}&mountport={port}")
}

/// NFSv3 through libnfs, MOUNT on the NFS port: it lists and reads the
/// tree, writes a file that NFSv4 reads back byte-exact, and reads over v3
/// what NFSv4 wrote; a path that is no folder is refused by MOUNT; MOUNT
/// also answers on `--mount-port`.
#[test]
fn nfsv3_reads_and_writes_and_files_cross_versions() {
    use markbase_nfs::tools::client::{Create, Nfs4Client};
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("v3.sqlite");
    let storage = tmp.path().join("v3.storage");
    let mount_port = free_port_below_ephemeral();
    let server = Server::start_with(
        tmp.path(),
        &db,
        &storage,
        0,
        &["--mount-port", &mount_port.to_string()],
    );
    let port = server.port();
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let ls = String::from_utf8(run(&["nfs-ls", &url3(port, "Projects")])).unwrap();
    assert!(
        ls.contains("README.txt") && ls.contains("Demo Film"),
        "{ls}"
    );
    let readme = run(&["nfs-cat", &url3(port, "Projects/README.txt")]);
    assert!(readme.starts_with(b"This volume is a MarkBase catalog"));

    // v3 writes (1 MiB + 3 bytes: several WRITEs), v4 reads.
    let data: Vec<u8> = (0..(1u32 << 20) + 3)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let src = tmp.path().join("clip.bin");
    std::fs::write(&src, &data).unwrap();
    run(&[
        "nfs-cp",
        src.to_str().unwrap(),
        &url3(port, "Projects/clip.bin"),
    ]);
    let mut c = Nfs4Client::connect(server.addr, "cross").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = c.open(&dir, "clip.bin", Create::No, 1).unwrap();
    let mut got = Vec::new();
    loop {
        let (chunk, eof) = c.read(&f, got.len() as u64, 1 << 20).unwrap();
        got.extend_from_slice(&chunk);
        if eof {
            break;
        }
    }
    c.close(&f).unwrap();
    assert!(
        got == data,
        "v4 read back {} bytes of {}",
        got.len(),
        data.len()
    );

    // v4 writes, v3 reads.
    let f = c
        .open(&dir, "from-v4.txt", Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    c.write(&f, 0, b"written over NFSv4\n", 2).unwrap();
    c.close(&f).unwrap();
    assert_eq!(
        run(&["nfs-cat", &url3(port, "Projects/from-v4.txt")]),
        b"written over NFSv4\n"
    );
    // MOUNT of a file, or of nothing, is refused; the server goes on.
    let out = Command::new("nfs-ls")
        .arg(url3(port, "Projects/README.txt/x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    run(&["nfs-ls", &url3(port, "")]);
    // MOUNT on a port of its own (server.mount_port), NFS on the main one.
    let apart = format!("nfs://127.0.0.1/Library?version=3&nfsport={port}&mountport={mount_port}");
    let ls = String::from_utf8(run(&["nfs-ls", &apart])).unwrap();
    assert!(ls.contains("Notes café.txt"), "{ls}");
}
