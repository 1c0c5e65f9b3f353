//! The metrics endpoint over HTTP, scraped in the middle of a WRITE
//! stream: the stream's bytes and WRITE latencies show, then its end.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use markbase_nfs::nfs4::consts::OPEN4_SHARE_ACCESS_BOTH;
use markbase_nfs::tools::client::{pipelined_writes, Create, Nfs4Client};

/// Starts a server with the metrics endpoint on; (server, its port).
fn with_metrics(tmp: &std::path::Path) -> (Server, u16) {
    let metrics_port = free_port_below_ephemeral();
    let config = tmp.join("tuning.toml");
    std::fs::write(
        &config,
        format!("[metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let server = Server::start_with(
        tmp,
        &tmp.join("demo.sqlite"),
        &tmp.join("storage"),
        0,
        &["--config", &config],
    );
    (server, metrics_port)
}

/// GET `path` from `port` on 127.0.0.1: (status line, headers + body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .expect("no answer from the metrics endpoint within 60 s");
    let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (status.to_string(), rest.to_string())
}

/// The value of the series `name` (with its labels, as written) in a scrape.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
        .parse()
        .unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn a_scrape_during_a_write_stream_shows_its_bytes_and_latencies() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, metrics_port) = with_metrics(tmp.path());
    let (status, before) = get(metrics_port, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        before.contains("content-type: application/openmetrics-text"),
        "{before}"
    );
    assert_eq!(
        value(&before, "markbase_nfs_written_bytes_total{export=\"/\"}"),
        0.0
    );
    let (status, _) = get(metrics_port, "/elsewhere");
    assert!(status.contains("404"), "{status}");

    let mut c = Nfs4Client::connect(server.addr, "stream").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = c
        .open(
            &dir,
            "stream.mov",
            Create::Unchecked { mode: 0o644 },
            OPEN4_SHARE_ACCESS_BOTH,
        )
        .unwrap();
    // The first half of the stream, then a scrape while the file is open
    // and its connection up, then the second half.
    pipelined_writes(&mut c.rpc, &f, 32 * MIB, MIB as usize, 16, 0).unwrap();
    let (_, middle) = get(metrics_port, "/metrics");
    let written = |s: &str| value(s, "markbase_nfs_written_bytes_total{export=\"/\"}");
    let writes = |s: &str| {
        value(
            s,
            "markbase_nfs_operations_total{version=\"4\",op=\"WRITE\"}",
        )
    };
    assert_eq!(written(&middle), (32 * MIB) as f64, "bytes half way");
    assert_eq!(writes(&middle), 32.0);
    assert_eq!(
        value(
            &middle,
            "markbase_nfs_operation_duration_seconds_count{version=\"4\",op=\"WRITE\"}"
        ),
        32.0
    );
    let slowest_bucket = value(
        &middle,
        "markbase_nfs_operation_duration_seconds_bucket{le=\"+Inf\",version=\"4\",op=\"WRITE\"}",
    );
    assert_eq!(slowest_bucket, 32.0, "buckets are cumulative up to +Inf");
    assert!(
        value(
            &middle,
            "markbase_nfs_operation_duration_seconds_sum{version=\"4\",op=\"WRITE\"}"
        ) > 0.0
    );
    assert!(value(&middle, "markbase_nfs_connections") >= 1.0);
    assert_eq!(
        value(&middle, "markbase_nfs_nfs4_state{kind=\"opens\"}"),
        1.0
    );

    let mut rest = markbase_nfs::tools::client::WriteStream::new(&c.rpc, &f, MIB as usize, 0);
    rest.write(&mut c.rpc, 32 * MIB, 32 * MIB, 16).unwrap();
    c.commit(&f.fh).unwrap();
    c.close(&f).unwrap();
    let (_, after) = get(metrics_port, "/metrics");
    assert_eq!(written(&after), (64 * MIB) as f64, "bytes at the end");
    assert_eq!(writes(&after), 64.0);
    assert_eq!(
        value(&after, "markbase_nfs_nfs4_state{kind=\"opens\"}"),
        0.0
    );
    assert!(
        value(
            &after,
            "markbase_nfs_catalog_journal_records_total{export=\"/\"}"
        ) >= 1.0,
        "the create was journaled"
    );
    assert!(
        after.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

/// Connections that never send a request are closed, and while they hold
/// every place a scrape still gets its answer once they are gone.
#[test]
fn idle_connections_cannot_hold_the_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = with_metrics(tmp.path());
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let (status, _) = get(port, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    for mut s in idle {
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        // Closed by the server (after a 408 or without a word), not left
        // open until the read times out.
        s.read_to_end(&mut rest)
            .expect("an idle connection was left open");
    }
}

#[test]
fn each_export_has_its_own_series() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = free_port_below_ephemeral();
    let config = tmp.path().join("tuning.toml");
    std::fs::write(
        &config,
        format!("[metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let server = serve_users(tmp.path(), &["warren", "accusys"], &["--config", &config]);
    let addr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let mut c = Nfs4Client::connect(addr, "per-export").unwrap();
    let root = c.lookup("accusys").unwrap();
    let f = c
        .open(
            &root,
            "grade.bin",
            Create::Unchecked { mode: 0o644 },
            OPEN4_SHARE_ACCESS_BOTH,
        )
        .unwrap();
    let chunk = vec![7u8; MIB as usize];
    for i in 0..3 {
        c.write(&f, i * MIB, &chunk, 2).unwrap();
    }
    c.close(&f).unwrap();
    let (_, scrape) = get(metrics_port, "/metrics");
    let written = |export: &str| {
        value(
            &scrape,
            &format!("markbase_nfs_written_bytes_total{{export=\"{export}\"}}"),
        )
    };
    assert_eq!(written("/accusys"), (3 * MIB) as f64);
    assert_eq!(written("/warren"), 0.0);
    drop(server);
}
