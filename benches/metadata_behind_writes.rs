//! A GETATTR's latency while its connection carries a 128-deep stream of
//! 1 MiB WRITEs — the Mac's most in flight per mount (kext/nfs_bio.c:
//! nfs_max_async_writes) — against the same GETATTR on an idle connection
//! and on a second connection beside the stream, in the same run.
//!
//! On one connection a GETATTR sent behind 128 MiB of WRITE payloads must
//! wait for those bytes to cross the socket: the floor printed beside the
//! figures is that wait at the stream's own rate. What the server adds
//! above it is what this measures. p50 / p99 / max in ms, with the stream's
//! MB/s. Storage is on the real disk (under target/), the server in-process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use markbase_nfs::nfs4::consts::NFS4_PROGRAM;
use markbase_nfs::rpc::message::decode_reply;
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client, WriteStream};

#[path = "support/server.rs"]
mod server;
use server::{serve_runtime, start_server};

const DEPTH: u64 = 128;
const CHUNK: usize = 1 << 20;
/// WRITEs per round: 1 GiB.
const WRITES: u64 = 1024;
/// A GETATTR after every this many WRITEs.
const EVERY: u64 = 16;
const ROUNDS: usize = 3;
/// The Mac's GETATTR bitmap (see tests/mac_client.rs).
const ATTRS: [u32; 20] = [
    1, 3, 4, 8, 14, 20, 25, 28, 33, 35, 36, 37, 41, 45, 47, 49, 50, 52, 53, 55,
];

fn getattr_args(root: &[u8]) -> Vec<u8> {
    CompoundArgs::new()
        .putfh(root)
        .getattr(&ATTRS)
        .encode("getattr", 0)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} p50 {:>8.2}  p99 {:>8.2}  max {:>8.2} ms  ({} GETATTRs)",
        ms(h, 0.5),
        ms(h, 0.99),
        h.max() as f64 / 1000.0,
        h.len()
    );
}

/// One round: a 1 GiB stream with GETATTRs interleaved on its connection;
/// returns the stream's MB/s.
fn stream_round(
    client: &mut Nfs4Client,
    root: &[u8],
    name: &str,
    same: &mut Histogram<u64>,
) -> f64 {
    let f = client
        .open(root, name, Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    let mut stream = WriteStream::new(&client.rpc, &f, CHUNK, 0);
    let getattr = getattr_args(root);
    let mut sent_at: HashMap<u32, Instant> = HashMap::new();
    let started = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < WRITES || !sent_at.is_empty() {
        while sent < WRITES && sent - done < DEPTH {
            stream
                .send_at(&mut client.rpc, sent * CHUNK as u64)
                .unwrap();
            sent += 1;
            if sent % EVERY == 0 {
                let xid = client.rpc.send_call(NFS4_PROGRAM, 4, 1, &getattr).unwrap();
                sent_at.insert(xid, Instant::now());
            }
        }
        let rec = client.rpc.read_record().unwrap().expect("reply");
        let (xid, _, _) = decode_reply(&rec).unwrap();
        match sent_at.remove(&xid) {
            Some(t) => {
                same.record(t.elapsed().as_micros() as u64).unwrap();
            }
            None => done += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    client.close(&f).unwrap();
    client.remove(root, name).unwrap();
    (WRITES * CHUNK as u64) as f64 / secs / 1e6
}

fn main() {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metadata-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let rt = serve_runtime();
    let (addr, _nfs) = start_server(&rt, &base, |_| {});
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut idle, mut same, mut beside) = (new_hist(), new_hist(), new_hist());
    let mut rates = Vec::new();
    let mut writer = Nfs4Client::connect(addr, "bench-writer").unwrap();
    let root = writer.lookup("").unwrap();
    let mut other = Nfs4Client::connect(addr, "bench-finder").unwrap();
    let getattr = getattr_args(&root);
    let one_getattr = |c: &mut Nfs4Client, h: &mut Histogram<u64>| {
        let t = Instant::now();
        c.rpc.call(NFS4_PROGRAM, 4, 1, &getattr).unwrap();
        h.record(t.elapsed().as_micros() as u64).unwrap();
    };
    for round in 0..ROUNDS {
        // Idle: the same GETATTR with nothing else on the server.
        for _ in 0..WRITES / EVERY {
            one_getattr(&mut other, &mut idle);
        }
        // Beside: a second connection's GETATTRs while the stream runs.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let beside_thread = {
            let stop = stop.clone();
            let mut c = std::mem::replace(
                &mut other,
                Nfs4Client::connect(addr, "bench-placeholder").unwrap(),
            );
            let mut h = new_hist();
            let getattr = getattr.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let t = Instant::now();
                    c.rpc.call(NFS4_PROGRAM, 4, 1, &getattr).unwrap();
                    h.record(t.elapsed().as_micros() as u64).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
                (c, h)
            })
        };
        rates.push(stream_round(
            &mut writer,
            &root,
            &format!("stream-{round}.mov"),
            &mut same,
        ));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (c, h) = beside_thread.join().unwrap();
        other = c;
        beside.add(h).unwrap();
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = rates[rates.len() / 2];
    println!(
        "128 x 1 MiB WRITEs in flight, {ROUNDS} rounds of 1 GiB: stream min {:.0}  median {median:.0}  max {:.0} MB/s",
        rates[0],
        rates[rates.len() - 1]
    );
    print("GETATTR, idle server", &idle);
    print("GETATTR on a second connection, beside", &beside);
    print("GETATTR behind the WRITEs, same connection", &same);
    println!(
        "floor on the same connection: {DEPTH} MiB ahead at the stream's median rate = {:.1} ms",
        (DEPTH * CHUNK as u64) as f64 / (median * 1e6) * 1e3
    );
}
