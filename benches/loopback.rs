//! End-to-end WRITE throughput over loopback, with same-run baselines: the
//! same bytes `pwrite`n locally to the same folder, and sent over a raw
//! loopback TCP socket. Prints min/median/max MB/s of each and the ratios.
//!
//! Storage is on the real disk (under target/), the server in-process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use markbase_nfs::client::{pipelined_reads, pipelined_writes, Create, Nfs4Client};
use markbase_nfs::config::Config;
use markbase_nfs::serve::{dispatcher_for, listen_addr, open_export};

const TOTAL: u64 = 256 << 20;
const CHUNK: usize = 1 << 20;
const INFLIGHT: usize = 16;

type Samples = Arc<Mutex<Vec<f64>>>;

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn summary(name: &str, s: &Samples) -> f64 {
    let mut v = s.lock().unwrap().clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let med = v[v.len() / 2];
    println!(
        "{name:<34} min {:>8.1}  median {:>8.1}  max {:>8.1} MB/s  ({} runs)",
        v[0],
        med,
        v[v.len() - 1],
        v.len()
    );
    med
}

fn bench(c: &mut Criterion) {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("loopback-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let mut cfg = Config::default();
    cfg.export.db = base.join("bench.sqlite");
    cfg.server.port = 0;
    let nfs = open_export(&cfg).expect("open export");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(async { markbase_nfs::net::bind(listen_addr(&cfg).unwrap(), &cfg.network) })
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(markbase_nfs::net::serve(
        listener,
        dispatcher_for(nfs.clone()),
        cfg.network.clone(),
    ));

    let nfs_stream: Samples = Default::default();
    let nfs_commit: Samples = Default::default();
    let local: Samples = Default::default();
    let local_sync: Samples = Default::default();
    let tcp: Samples = Default::default();

    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Bytes(TOTAL));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    let mut client = Nfs4Client::connect(addr, "bench").unwrap();
    let root = client.lookup("").unwrap();
    let mut n = 0;
    g.bench_function("write_1MiB_x16_then_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let f = client
                    .open(
                        &root,
                        &format!("w{n}.bin"),
                        Create::Unchecked { mode: 0o644 },
                        3,
                    )
                    .unwrap();
                let t = Instant::now();
                pipelined_writes(&mut client.rpc, &f, TOTAL, CHUNK, INFLIGHT, 0).unwrap();
                let streamed = t.elapsed();
                client.commit(&f.fh).unwrap();
                let committed = t.elapsed();
                client.close(&f).unwrap();
                // Like the local baseline, do not let files pile up.
                client.remove(&root, &format!("w{n}.bin")).unwrap();
                nfs_stream.lock().unwrap().push(mbps(TOTAL, streamed));
                nfs_commit.lock().unwrap().push(mbps(TOTAL, committed));
                total += streamed;
            }
            total
        })
    });

    // Other shapes: smaller WRITEs/READs and fewer in flight.
    let shapes: [(usize, usize); 6] = [
        (1 << 20, 4),
        (1 << 20, 1),
        (256 << 10, 16),
        (256 << 10, 4),
        (64 << 10, 16),
        (64 << 10, 4),
    ];
    let mut shape_writes: Vec<(String, Samples)> = Vec::new();
    for (size, inflight) in shapes {
        let name = format!("write_{}KiB_x{inflight}", size >> 10);
        let samples: Samples = Default::default();
        let s2 = samples.clone();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let f = client
                        .open(
                            &root,
                            &format!("w{n}.bin"),
                            Create::Unchecked { mode: 0o644 },
                            3,
                        )
                        .unwrap();
                    let t = Instant::now();
                    pipelined_writes(&mut client.rpc, &f, TOTAL, size, inflight, 0).unwrap();
                    let d = t.elapsed();
                    client.close(&f).unwrap();
                    client.remove(&root, &format!("w{n}.bin")).unwrap();
                    s2.lock().unwrap().push(mbps(TOTAL, d));
                    total += d;
                }
                total
            })
        });
        shape_writes.push((name, samples));
    }

    // Reads of a file just written: the server's page cache is warm.
    let f = client
        .open(
            &root,
            "read-source.bin",
            Create::Unchecked { mode: 0o644 },
            3,
        )
        .unwrap();
    pipelined_writes(&mut client.rpc, &f, TOTAL, CHUNK, INFLIGHT, 0).unwrap();
    let mut shape_reads: Vec<(String, Samples)> = Vec::new();
    for (size, inflight) in [(CHUNK, INFLIGHT)].into_iter().chain(shapes) {
        let name = format!("read_{}KiB_x{inflight}", size >> 10);
        let samples: Samples = Default::default();
        let s2 = samples.clone();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let got =
                        pipelined_reads(&mut client.rpc, &f, 0, TOTAL, size, inflight).unwrap();
                    assert_eq!(got, TOTAL);
                    let d = t.elapsed();
                    s2.lock().unwrap().push(mbps(TOTAL, d));
                    total += d;
                }
                total
            })
        });
        shape_reads.push((name, samples));
    }
    client.close(&f).unwrap();

    let chunk = vec![0xa5u8; CHUNK];
    g.bench_function("baseline_local_pwrite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let p = base.join(format!("local{i}.bin"));
                let f = std::fs::File::create(&p).unwrap();
                let t = Instant::now();
                for k in 0..TOTAL / CHUNK as u64 {
                    f.write_all_at(&chunk, k * CHUNK as u64).unwrap();
                }
                let written = t.elapsed();
                f.sync_data().unwrap();
                let synced = t.elapsed();
                local.lock().unwrap().push(mbps(TOTAL, written));
                local_sync.lock().unwrap().push(mbps(TOTAL, synced));
                total += written;
                let _ = std::fs::remove_file(&p);
            }
            total
        })
    });

    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in sink.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got += k as u64,
                    }
                    if got >= TOTAL {
                        let _ = s.write_all(b"k");
                        got = 0;
                    }
                }
            });
        }
    });
    let mut raw = TcpStream::connect(sink_addr).unwrap();
    raw.set_nodelay(true).unwrap();
    g.bench_function("baseline_tcp_loopback", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for _ in 0..TOTAL / CHUNK as u64 {
                    raw.write_all(&chunk).unwrap();
                }
                let mut ack = [0u8; 1];
                raw.read_exact(&mut ack).unwrap();
                let d = t.elapsed();
                tcp.lock().unwrap().push(mbps(TOTAL, d));
                total += d;
            }
            total
        })
    });
    g.finish();

    println!(
        "\n== WRITE over loopback: {} MiB per run, 1 MiB WRITEs, {INFLIGHT} in flight ==",
        TOTAL >> 20
    );
    let s = summary("NFS UNSTABLE stream", &nfs_stream);
    let sc = summary("NFS stream + COMMIT", &nfs_commit);
    let l = summary("local pwrite (page cache)", &local);
    let ls = summary("local pwrite + fdatasync", &local_sync);
    let t = summary("raw TCP loopback", &tcp);
    println!(
        "ratios (median): stream/local pwrite {:.2}, stream+COMMIT/local+fdatasync {:.2}, stream/raw TCP {:.2}",
        s / l,
        sc / ls,
        s / t
    );
    println!(
        "600 MB/s target: stream {} ({s:.0} MB/s), stream+COMMIT {} ({sc:.0} MB/s)",
        if s >= 600.0 { "MET" } else { "NOT met" },
        if sc >= 600.0 { "MET" } else { "NOT met" }
    );
    println!("\n== other shapes (median ratio to local pwrite / raw TCP) ==");
    for (name, samples) in shape_writes.iter().chain(&shape_reads) {
        let m = summary(name, samples);
        println!(
            "{:<34} x{:.2} of local pwrite, x{:.2} of raw TCP",
            "",
            m / l,
            m / t
        );
    }
    nfs.catalog().shutdown();
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group!(benches, bench);
criterion_main!(benches);
