//! Who may use an export, with real clients on other machines' addresses:
//! each client is libnfs (Debian's libnfs-utils) run in a network namespace
//! the test creates and removes (`ip netns`), joined to this machine by a
//! veth pair on 198.18.0.0/15 (RFC 2544's range for test networks). The
//! server listens on the host's end of the first pair only.
//!
//! Needs root (network namespaces); elsewhere the test says so and is
//! skipped, except under CI, where it fails.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use markbase_nfs::nfs4::consts::{attr, op};
use markbase_nfs::rpc::Credentials;
use markbase_nfs::tools::client::{CompoundArgs, Nfs4Client};

/// A network namespace with one veth pair to the host: host side
/// `198.18.<net>.1/24`, namespace side `198.18.<net>.2/24`.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Netns {
    fn create(tag: &str, net: u8, route_to: Option<u8>) -> Result<Netns, String> {
        let pid = std::process::id() % 100_000;
        let ns = Netns {
            name: format!("mbt-{tag}-{pid}"),
            host_if: format!("mbh{tag}{pid}"),
        };
        let inner = format!("mbn{tag}{pid}");
        let host_addr = format!("198.18.{net}.1/24");
        let ns_addr = format!("198.18.{net}.2/24");
        ip(&["netns", "add", &ns.name])?;
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns.name])?;
        ip(&["addr", "add", &host_addr, "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ns.exec_ip(&["addr", "add", &ns_addr, "dev", &inner])?;
        ns.exec_ip(&["link", "set", &inner, "up"])?;
        if let Some(other) = route_to {
            // The server's address is the host's end of another pair.
            let to = format!("198.18.{other}.0/24");
            let via = format!("198.18.{net}.1");
            ns.exec_ip(&["route", "add", &to, "via", &via])?;
        }
        Ok(ns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a libnfs tool inside the namespace.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, tool])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} (Debian package libnfs-utils): {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its end of the pair, and with it
        // the host's.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// The two client machines, or None (with the reason printed) where
/// namespaces cannot be made and this is not CI.
fn machines() -> Option<(Netns, Netns)> {
    let made =
        Netns::create("a", 1, None).and_then(|a| Netns::create("b", 2, Some(1)).map(|b| (a, b)));
    match made {
        Ok(m) => Some(m),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("network namespaces unavailable ({e}): test skipped");
            None
        }
        Err(e) => panic!("network namespaces unavailable under CI: {e}"),
    }
}

/// Serves a fresh demo catalog on 198.18.1.1 with `export` settings added.
fn serve(dir: &Path, export: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port_below_ephemeral();
    let config = dir.join("tuning.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"198.18.1.1\"\nport = {port}\n\
             [export]\ndb = \"{db}\"\n{export}\n[nfs]\ngrace_time = 4\n",
            db = dir.join("demo.sqlite").display()
        ),
    )
    .unwrap();
    Server::spawn(
        dir,
        vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
    )
}

fn v4(port: u16, path: &str) -> String {
    format!("nfs://198.18.1.1/{path}?version=4&nfsport={port}")
}

fn v3(port: u16, path: &str) -> String {
    format!("nfs://198.18.1.1/{path}?version=3&nfsport={port}&mountport={port}")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}; stdout: {}; stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const README: &str = "This volume is a MarkBase catalog served over NFSv4.0 by markbase-nfs.\n";

#[test]
fn clients_on_other_addresses_get_what_their_export_allows() {
    let Some((allowed, foreign)) = machines() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let frame: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();
    let frame_path = tmp.path().join("frame.dpx");
    std::fs::write(&frame_path, &frame).unwrap();
    let frame_arg = frame_path.to_str().unwrap();

    // 1. A read-write export for 198.18.1.2 alone.
    let rw = serve(&tmp.path().join("rw"), "clients = [\"198.18.1.2\"]");
    let port = rw.addr.port();
    let cp = allowed.run("nfs-cp", &[frame_arg, &v3(port, "Projects/frame.dpx")]);
    assert!(cp.status.success(), "allowed NFSv3 write: {}", text(&cp));
    let cat = allowed.run("nfs-cat", &[&v4(port, "Projects/frame.dpx")]);
    assert!(cat.status.success(), "allowed NFSv4 read: {}", text(&cat));
    assert!(cat.stdout == frame, "the frame read back differs");

    // The foreign machine reaches the port but is refused, by NFSv4 and
    // by MOUNT, and the log says so once.
    for (url, error) in [
        (v4(port, "Projects"), "NFS4ERR_ACCESS"),
        (v3(port, "Projects"), "MNT3ERR_ACCES"),
    ] {
        let ls = foreign.run("nfs-ls", &[&url]);
        assert!(!ls.status.success(), "foreign {url} listed: {}", text(&ls));
        assert!(text(&ls).contains(error), "{url}: {}", text(&ls));
    }
    let cp = foreign.run("nfs-cp", &[frame_arg, &v3(port, "Projects/foreign.dpx")]);
    assert!(!cp.status.success(), "foreign write: {}", text(&cp));
    let log = rw.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a client not in export.clients"))
        .collect();
    assert_eq!(refusals.len(), 1, "refusals logged: {refusals:#?}");
    assert!(refusals[0].contains("198.18.2.2"), "{}", refusals[0]);
    assert!(
        !log.contains("198.18.1.2 is not in"),
        "the allowed machine was refused:\n{log}"
    );
    drop(rw);

    // 2. The same machine on a read-only export: reads, but no writes.
    let ro = serve(
        &tmp.path().join("ro"),
        "clients = [\"198.18.1.0/24\"]\nread_only = true",
    );
    let port = ro.addr.port();
    let cat = allowed.run("nfs-cat", &[&v4(port, "Projects/README.txt")]);
    assert!(cat.status.success(), "read-only read: {}", text(&cat));
    assert_eq!(String::from_utf8_lossy(&cat.stdout), README);
    let cp = allowed.run("nfs-cp", &[frame_arg, &v3(port, "Projects/frame.dpx")]);
    assert!(!cp.status.success(), "read-only write: {}", text(&cp));
    assert!(text(&cp).contains("NFS3ERR_ROFS"), "{}", text(&cp));
    let ls = allowed.run("nfs-ls", &[&v3(port, "Projects")]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains("frame.dpx"),
        "{}",
        text(&ls)
    );
    drop(ro);

    // 3. Root squash with permissions by mode: the namespace's root (uid 0)
    // acts as nobody. The host (198.18.1.1, also listed) opens a folder
    // to everyone as its owner, uid 501.
    let sq = serve(
        &tmp.path().join("squash"),
        "clients = [\"198.18.1.0/24\"]\nsquash = \"root\"\npermissions = \"mode\"",
    );
    let port = sq.addr.port();
    let cp = allowed.run("nfs-cp", &[frame_arg, &v3(port, "Projects/root.dpx")]);
    assert!(
        !cp.status.success(),
        "squashed root wrote into a 0755 folder it does not own: {}",
        text(&cp)
    );
    assert!(text(&cp).contains("NFS3ERR_ACCES"), "{}", text(&cp));
    let mut editor = Nfs4Client::connect(sq.addr, "editor").unwrap();
    editor.rpc.credentials = Credentials::sys("host", 501, 20, &[]);
    let projects = editor.lookup("Projects").unwrap();
    let chmod = CompoundArgs::new().putfh(&projects).op(op::SETATTR, |e| {
        e.u32(0);
        e.fixed(&[0; 12]);
        markbase_nfs::nfs4::attrs::Bitmap::of(&[attr::MODE]).encode(e);
        e.u32(4);
        e.u32(0o777);
    });
    assert_eq!(
        status_of_ops(&mut editor, &chmod, &[op::PUTFH, op::SETATTR]),
        0
    );
    let cp = allowed.run("nfs-cp", &[frame_arg, &v3(port, "Projects/root.dpx")]);
    assert!(
        cp.status.success(),
        "write into a 0777 folder: {}",
        text(&cp)
    );
    let fh = editor.lookup("Projects/root.dpx").unwrap();
    let owner = getattr(&mut editor, &fh, &[attr::OWNER]);
    let mut d = markbase_nfs::xdr::Decoder::new(&owner);
    assert_eq!(
        d.opaque(64).unwrap(),
        b"65534",
        "the file root made is nobody's"
    );
}
