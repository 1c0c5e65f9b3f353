//! Shared helpers for the black-box tests: a server run as a child process,
//! the Linux kernel client in ../shared/nfs-vm, and expectations read
//! straight from a catalog's SQLite file.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_markbase-nfs");

/// The VM uses both cores; tests that boot it take turns.
pub static VM_LOCK: Mutex<()> = Mutex::new(());

pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `markbase-nfs serve` child process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    args: Vec<String>,
    dir: PathBuf,
    pub stdout_head: Vec<String>,
}

/// A free port under Linux's ephemeral range (32768-60999). Servers that
/// tests kill and restart on the same port must not live in that range:
/// while the server is down, a client retrying its connection from an
/// ephemeral port can be given the server's own port and connect to itself
/// (TCP simultaneous open), and the restart then finds the port taken.
pub fn free_port_below_ephemeral() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2654435761);
    for _ in 0..2000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(k.wrapping_mul(7919)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

impl Server {
    /// Starts `markbase-nfs serve --db DB --storage STORAGE` on 127.0.0.1
    /// (port 0 = a free port below the ephemeral range) with `dir` as
    /// working directory.
    pub fn start(dir: &Path, db: &Path, storage: &Path, port: u16) -> Server {
        Self::start_with(dir, db, storage, port, &[])
    }

    /// Like [`Server::start`] with extra `serve` options.
    pub fn start_with(dir: &Path, db: &Path, storage: &Path, port: u16, extra: &[&str]) -> Server {
        let port = if port == 0 {
            free_port_below_ephemeral()
        } else {
            port
        };
        let mut args = vec![
            "serve".to_string(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--db".into(),
            db.display().to_string(),
            "--storage".into(),
            storage.display().to_string(),
        ];
        // Restarts in tests should not wait out a production-length grace
        // period.
        if !extra.contains(&"--grace-time") {
            args.extend(["--grace-time".to_string(), "4".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(dir, args)
    }

    pub fn spawn(dir: &Path, args: Vec<String>) -> Server {
        Self::try_spawn(dir, args).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts the server; Err (with its log) when it exits before
    /// printing its address.
    fn try_spawn(dir: &Path, args: Vec<String>) -> Result<Server, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("server log");
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn markbase-nfs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut head = Vec::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("server stdout");
            if let Some(rest) = line.split(" on ").nth(1) {
                if line.starts_with("markbase-nfs serving") {
                    let a = rest.split_whitespace().next().unwrap_or("");
                    addr = a.parse().ok();
                }
            }
            head.push(line.clone());
            if line.trim_start().starts_with("Linux:") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let Some(addr) = addr else {
            let _ = child.wait();
            return Err(format!(
                "server did not print its address; stdout: {head:?}; log:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ));
        };
        Ok(Server {
            child: Some(child),
            addr,
            args,
            dir: dir.to_path_buf(),
            stdout_head: head,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM (it flushes the catalog) and waits.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns at once (the server drains, then exits).
    pub fn signal_term(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `limit` for the server to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        let c = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts again on the same port after a kill or terminate. A port
    /// still held (the killed server's connections being torn down) is
    /// retried for up to 10 s.
    pub fn start_again(&mut self) {
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--port") {
            args[i + 1] = self.addr.port().to_string();
        }
        let mut tries = 0;
        let fresh = loop {
            match Server::try_spawn(&self.dir, args.clone()) {
                Ok(s) => break s,
                Err(why) if why.contains("Address already in use") && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(why) => panic!("{why}"),
            }
        };
        assert_eq!(fresh.addr, self.addr);
        *self = fresh;
    }

    /// Kills and starts again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// The server process's id (None once it was killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn nfs_vm_script() -> PathBuf {
    if let Ok(p) = std::env::var("NFSVM_SH") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/nfs-vm/nfs-vm.sh");
    assert!(
        p.exists(),
        "the kernel-client VM script is missing at {} (set NFSVM_SH)",
        p.display()
    );
    p
}

/// Runs `script` in the VM against a server on 127.0.0.1:`port`, with the
/// GNU ls and find copied in (busybox's ls mangles non-ASCII names).
pub fn run_vm(port: u16, script: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(nfs_vm_script());
    cmd.args(["--port", &port.to_string(), "--timeout", "900"])
        .args(["--with", "/usr/bin/ls", "--with", "/usr/bin/find"])
        .args(extra)
        .arg("--")
        .arg(script)
        .stdin(Stdio::null());
    let out = cmd.output().expect("running nfs-vm.sh");
    eprintln!(
        "nfs-vm exit {:?}; stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`run_vm`] but calls `on_line` for each guest stdout line as it
/// arrives (to act on markers the guest prints).
pub fn run_vm_streaming(
    port: u16,
    script: &str,
    on_line: impl FnMut(&str),
) -> (Option<i32>, Vec<String>) {
    run_vm_streaming_with(port, &[], script, on_line)
}

/// [`run_vm_streaming`] with more `nfs-vm.sh` options (`--opts …`).
pub fn run_vm_streaming_with(
    port: u16,
    extra: &[&str],
    script: &str,
    mut on_line: impl FnMut(&str),
) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(nfs_vm_script())
        .args(["--port", &port.to_string(), "--timeout", "900"])
        .args(["--with", "/usr/bin/ls", "--with", "/usr/bin/find"])
        .args(extra)
        .arg("--")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running nfs-vm.sh");
    let stdout = child.stdout.take().expect("vm stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        on_line(&line);
        lines.push(line);
    }
    let status = child.wait().expect("vm wait");
    (status.code(), lines)
}

/// (type 'd' or 'f', size) of every node, keyed by path relative to the
/// export root ("./A/B"), computed from the SQLite rows alone.
pub fn expected_tree(db: &Path) -> BTreeMap<String, (char, u64)> {
    let conn = rusqlite::Connection::open(db).expect("open catalog");
    let mut st = conn
        .prepare("SELECT node_id, parent_id, label, node_type, file_size FROM file_nodes")
        .unwrap();
    let rows: Vec<(String, Option<String>, String, String, i64)> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let by_id: HashMap<&str, &(String, Option<String>, String, String, i64)> =
        rows.iter().map(|r| (r.0.as_str(), r)).collect();
    let mut out = BTreeMap::new();
    for r in &rows {
        let mut parts = vec![r.2.clone()];
        let mut p = r.1.clone();
        while let Some(pid) = p {
            let parent = by_id[pid.as_str()];
            parts.push(parent.2.clone());
            p = parent.1.clone();
        }
        parts.reverse();
        let path = format!("./{}", parts.join("/"));
        let (t, size) = if r.3 == "folder" {
            ('d', 4096)
        } else {
            ('f', r.4 as u64)
        };
        out.insert(path, (t, size));
    }
    out
}

/// Parses GNU `ls -lR --time-style=+%s --quoting-style=literal` output into
/// the same shape as [`expected_tree`].
pub fn parse_ls_lr(text: &str) -> BTreeMap<String, (char, u64)> {
    let mut out = BTreeMap::new();
    let mut dir = String::from(".");
    for line in text.lines() {
        if line.is_empty() || line.starts_with("total ") {
            continue;
        }
        if line.ends_with(':') && (line.starts_with("./") || line == ".:") {
            dir = line.trim_end_matches(':').to_string();
            continue;
        }
        // perms links owner group size time name
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..6 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name = rest.strip_prefix(' ').unwrap_or(rest);
        let t = fields[0].chars().next().unwrap_or('?');
        let t = if t == '-' { 'f' } else { t };
        let size = fields[4].parse().unwrap_or(u64::MAX);
        out.insert(format!("{dir}/{name}"), (t, size));
    }
    out
}

/// Text between two marker lines of guest output.
pub fn section<'a>(text: &'a str, begin: &str, end: &str) -> &'a str {
    let b = text
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin} in guest output"));
    let after = &text[b + begin.len()..];
    let after = after.strip_prefix('\n').unwrap_or(after);
    let e = after
        .find(end)
        .unwrap_or_else(|| panic!("no {end} in guest output"));
    &after[..e]
}

/// The checksum the kernel-client tests compare content by, on the host
/// and (busybox) in the guest: MD5, which finds any corruption a test can
/// meet and costs the software-emulated guest 2.5 times less than SHA-256
/// (1 GiB: about 25 s against 64 s).
pub const SUM: &str = "md5sum";

/// [`SUM`] of a host file.
pub fn checksum_file(path: &Path) -> String {
    let out = Command::new(SUM).arg(path).output().expect(SUM);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Compares two trees and describes the first differences.
pub fn assert_same_tree(got: &BTreeMap<String, (char, u64)>, want: &BTreeMap<String, (char, u64)>) {
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k:?} {v:?}")),
            Some(g) if g != v => diffs.push(format!("{k:?}: got {g:?}, want {v:?}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            diffs.push(format!("unexpected {k:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences (of {} wanted, {} seen), first: {:#?}",
        diffs.len(),
        want.len(),
        got.len(),
        &diffs[..diffs.len().min(10)]
    );
}

/// Shell-quotes a path for the guest script.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Waits until `f` is true or the time runs out.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs the CLI and checks it succeeded.
pub fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run markbase-nfs");
    assert!(
        out.status.success(),
        "markbase-nfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server running inside the test process (to read its counters).
pub struct InProcess {
    pub nfs: std::sync::Arc<markbase_nfs::nfs4::Nfs4Server>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl InProcess {
    /// Serves a fresh demo catalog on 127.0.0.1 (any port).
    pub fn start() -> InProcess {
        Self::start_with(|_| {})
    }

    /// Serves the generated demo tree (no media files), tuned by `tune`.
    pub fn start_generated(tune: impl FnOnce(&mut markbase_nfs::config::Config)) -> InProcess {
        InProcess::start_with(|cfg| {
            let storage = cfg.storage_dir();
            markbase_nfs::catalog::generate(
                &cfg.export.db,
                &storage,
                &markbase_nfs::catalog::GenOptions {
                    media_sizes: vec![],
                    ..Default::default()
                },
            )
            .unwrap();
            tune(cfg);
        })
    }

    pub fn start_with(tune: impl FnOnce(&mut markbase_nfs::config::Config)) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = markbase_nfs::config::Config::default();
        cfg.export.db = dir.path().join("users/demo.sqlite");
        cfg.server.port = 0;
        tune(&mut cfg);
        let nfs = markbase_nfs::serve::open_export(&cfg).expect("open export");
        // As `serve` builds it: the blocking pool is as small as in
        // production.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(cfg.server.blocking_threads.max(1))
            .enable_all()
            .build()
            .unwrap();
        let addr = markbase_nfs::serve::listen_addr(&cfg).unwrap();
        let listener = rt
            .block_on(async { markbase_nfs::net::bind(addr, &cfg.network) })
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let dispatcher = markbase_nfs::serve::dispatcher_for(nfs.clone());
        rt.spawn(markbase_nfs::net::serve(
            listener,
            dispatcher,
            cfg.network.clone(),
        ));
        InProcess {
            nfs,
            addr,
            dir,
            _rt: rt,
        }
    }
}

/// A VM running in the background; its guest stdout lines arrive on a
/// channel as they are printed.
pub struct VmRun {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

/// Starts the VM (with util-linux flock copied in) without waiting for it.
pub fn spawn_vm(port: u16, script: &str) -> VmRun {
    let mut child = Command::new(nfs_vm_script())
        .args(["--port", &port.to_string(), "--timeout", "600"])
        .args(["--with", "/usr/bin/flock"])
        .arg("--")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running nfs-vm.sh");
    let stdout = child.stdout.take().expect("vm stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    VmRun {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

impl VmRun {
    /// Waits until the guest prints `line` (true) or the time runs out.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        if self.seen.iter().any(|l| l == line) {
            return true;
        }
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l == line;
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Waits for the VM to end; returns its status and all guest lines.
    pub fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let status = self.child.wait().expect("vm wait");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.code(), self.seen)
    }

    /// Kills the VM as a crash would (the guest never unmounts).
    pub fn kill(mut self) {
        // SAFETY: kill(2) on our own child; nfs-vm.sh then kills qemu.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The attribute values (fattr4's opaque) of GETATTR `attrs` on `fh`.
pub fn getattr(
    c: &mut markbase_nfs::tools::client::Nfs4Client,
    fh: &[u8],
    attrs: &[u32],
) -> Vec<u8> {
    use markbase_nfs::nfs4::consts::op;
    use markbase_nfs::tools::client::{CompoundArgs, Nfs4Client};
    let body = c
        .compound(&CompoundArgs::new().putfh(fh).getattr(attrs))
        .unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::GETATTR).unwrap();
    let n = d.count(8, 4).unwrap();
    d.skip(4 * n).unwrap();
    d.opaque(usize::MAX).unwrap().to_vec()
}

/// The SIZE attribute of `fh`.
pub fn size_of(c: &mut markbase_nfs::tools::client::Nfs4Client, fh: &[u8]) -> u64 {
    let v = getattr(c, fh, &[markbase_nfs::nfs4::consts::attr::SIZE]);
    u64::from_be_bytes(v[..8].try_into().unwrap())
}

/// The NFS status of a failed client call (u32::MAX for a transport or
/// decoding error).
pub fn status_of<T: std::fmt::Debug>(
    r: Result<T, markbase_nfs::tools::client::ClientError>,
) -> u32 {
    r.expect_err("an error").status().unwrap_or(u32::MAX)
}

/// The status of the COMPOUND `args` whose operations are `ops`: that of
/// the first that failed, or OK.
pub fn status_of_ops(
    c: &mut markbase_nfs::tools::client::Nfs4Client,
    args: &markbase_nfs::tools::client::CompoundArgs,
    ops: &[u32],
) -> u32 {
    let body = c.compound(args).unwrap();
    let mut r = markbase_nfs::tools::client::Nfs4Client::results(&body);
    for o in ops {
        if let Err(e) = r.next(*o) {
            return e.status().unwrap_or(u32::MAX);
        }
    }
    0
}

/// NFSv3 arguments of a procedure on one handle (nfs_fh3).
pub fn fh_args(fh: &[u8]) -> Vec<u8> {
    let mut e = markbase_nfs::xdr::Encoder::new();
    e.opaque(fh);
    e.buf
}

/// NFSv3 diropargs3: a folder's handle and a name in it.
pub fn dirop_args(dir: &[u8], name: &str) -> Vec<u8> {
    let mut e = markbase_nfs::xdr::Encoder::new();
    e.opaque(dir);
    e.string(name);
    e.buf
}

/// Makes a demo catalog for `user` in `users` (`<user>.sqlite` and its
/// `<user>.storage`), as `serve --users` finds them.
pub fn demo_user(users: &Path, user: &str) {
    markbase_nfs::catalog::create_demo(
        &users.join(format!("{user}.sqlite")),
        &users.join(format!("{user}.storage")),
    )
    .unwrap();
}

/// A server process in `dir` serving a demo catalog per name in `users`
/// (in `dir/users`) with `serve --users`, and `extra` arguments.
pub fn serve_users(dir: &Path, users: &[&str], extra: &[&str]) -> Server {
    let folder = dir.join("users");
    for user in users {
        demo_user(&folder, user);
    }
    let mut args = vec![
        "serve".to_string(),
        "--address".into(),
        "127.0.0.1".into(),
        "--port".into(),
        free_port_below_ephemeral().to_string(),
        "--users".into(),
        folder.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Server::spawn(dir, args)
}
