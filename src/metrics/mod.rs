//! The metrics endpoint (`[metrics] address`, off by default): the
//! server's figures in the Prometheus/OpenMetrics text format over HTTP
//! (`GET /metrics`). The data path keeps only counters (relaxed atomic
//! adds) and the per-operation histograms; each scrape reads them with
//! the catalog writer's, the queues', the descriptor pool's, the
//! connections' and NFSv4 state's figures, so a scrape costs a stream only
//! the moment it holds each histogram's lock.
//!
//! prometheus-client encodes, hyper serves; this file only says what is
//! exported and under which names (all prefixed `markbase_nfs_`).

pub mod ops;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::export::Export;
use crate::nfs3::Nfs3Server;
use crate::nfs4::Nfs4Server;
use ops::OpFigures;

/// Labels of one series.
type Labels<'a> = [(&'a str, &'a str)];

/// `value` of each export, beside that export's labels.
fn per_export<'l, T>(
    exports: &[std::sync::Arc<Export>],
    labels: &'l [[(&'l str, &'l str); 1]],
    value: impl Fn(&Export) -> T,
) -> Vec<(&'l Labels<'l>, T)> {
    exports
        .iter()
        .zip(labels)
        .map(|(e, l)| (&l[..], value(e)))
        .collect()
}

/// Reads the server's figures at each scrape.
pub struct ServerFigures {
    nfs4: Arc<Nfs4Server>,
    nfs3: Arc<Nfs3Server>,
}

impl std::fmt::Debug for ServerFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFigures").finish_non_exhaustive()
    }
}

impl ServerFigures {
    pub fn new(nfs4: Arc<Nfs4Server>, nfs3: Arc<Nfs3Server>) -> ServerFigures {
        ServerFigures { nfs4, nfs3 }
    }
}

/// One metric with one or more labelled series of constant values.
fn family<V: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    series: &[(&Labels<'_>, V)],
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, unit, kind)?;
    if let [(&[], value)] = series {
        // One series and no labels: the bare name.
        return value.encode(metric);
    }
    for (labels, value) in series {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&Labels<'_>, u64)],
) -> std::fmt::Result {
    constants(
        enc,
        name,
        help,
        MetricType::Counter,
        series,
        ConstCounter::new,
    )
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&Labels<'_>, i64)],
) -> std::fmt::Result {
    constants(enc, name, help, MetricType::Gauge, series, ConstGauge::new)
}

/// [`family`] of plain values, each made a metric by `make`.
fn constants<T: Copy, V: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(&Labels<'_>, T)],
    make: fn(T) -> V,
) -> std::fmt::Result {
    let series: Vec<(&Labels<'_>, V)> = series.iter().map(|(l, v)| (*l, make(*v))).collect();
    family(enc, name, help, None, kind, &series)
}

impl ServerFigures {
    fn encode_ops(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        figures: &[(&str, OpFigures)],
    ) -> std::fmt::Result {
        let labels: Vec<[(&str, &str); 2]> = figures
            .iter()
            .map(|(v, f)| [("version", *v), ("op", f.name)])
            .collect();
        let series = |value: &dyn Fn(&OpFigures) -> u64| -> Vec<(&Labels<'_>, u64)> {
            figures
                .iter()
                .zip(&labels)
                .map(|((_, f), l)| (&l[..], value(f)))
                .collect()
        };
        counter(
            enc,
            "operations",
            "NFS operations handled: each operation of an NFSv4 COMPOUND, each NFSv3 procedure",
            &series(&|f| f.count),
        )?;
        counter(
            enc,
            "operation_errors",
            "Operations answered with an error status",
            &series(&|f| f.errors),
        )?;
        let mut metric = enc.encode_descriptor(
            "operation_duration",
            "Time from an operation's start to its result, before the reply is sent",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for ((_, f), l) in figures.iter().zip(&labels) {
            metric
                .encode_family(&&l[..])?
                .encode_histogram::<NoLabelSet>(f.sum_seconds, f.count, &f.buckets, None)?;
        }
        Ok(())
    }
}

impl Collector for ServerFigures {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut figures: Vec<(&str, OpFigures)> = Vec::new();
        figures.extend(self.nfs4.latency.figures().into_iter().map(|f| ("4", f)));
        figures.extend(self.nfs3.latency.figures().into_iter().map(|f| ("3", f)));
        self.encode_ops(&mut enc, &figures)?;

        // One series per export, labelled with its path.
        let exports = self.nfs4.exports();
        let labels: Vec<[(&str, &str); 1]> =
            exports.iter().map(|e| [("export", e.path())]).collect();
        let each = |value: &dyn Fn(&Export) -> u64| per_export(exports, &labels, value);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "read_bytes",
            "File bytes returned by READs",
            &each(&|e| e.files().traffic().0),
        )?;
        counter(
            &mut enc,
            "written_bytes",
            "File bytes taken by WRITEs",
            &each(&|e| e.files().traffic().1),
        )?;
        counter(
            &mut enc,
            "descriptor_lookups",
            "Content file descriptors asked of the pool (less descriptor_opens: hits)",
            &each(&|e| e.files().lookups()),
        )?;
        counter(
            &mut enc,
            "descriptor_opens",
            "Content files opened because the pool did not hold them",
            &each(&|e| e.files().opens()),
        )?;
        gauge(
            &mut enc,
            "direct_write_queue",
            "WRITE payloads answered and queued for the disk with O_DIRECT",
            &per_export(exports, &labels, |e| e.files().direct_queued() as i64),
        )?;
        gauge(
            &mut enc,
            "write_behind_queue",
            "Write-behind windows queued for the disk",
            &per_export(exports, &labels, |e| e.files().write_behind_queued() as i64),
        )?;
        counter(
            &mut enc,
            "catalog_journal_records",
            "Group commits of namespace changes: intent journal records, one fdatasync each",
            &each(&|e| load(&e.catalog().writer_stats().journal_records)),
        )?;
        counter(
            &mut enc,
            "catalog_journal_changes",
            "Namespace changes in those records (rate over records: the group size)",
            &each(&|e| load(&e.catalog().writer_stats().journal_changes)),
        )?;
        let seconds: Vec<(&Labels<'_>, ConstCounter<f64>)> =
            each(&|e| load(&e.catalog().writer_stats().journal_micros))
                .into_iter()
                .map(|(l, micros)| (l, ConstCounter::new(micros as f64 / 1e6)))
                .collect();
        family(
            &mut enc,
            "catalog_journal_commit",
            "Time spent writing and syncing journal records (rate over records: a group commit's latency)",
            Some(&Unit::Seconds),
            MetricType::Counter,
            &seconds,
        )?;
        counter(
            &mut enc,
            "catalog_transactions",
            "SQLite transactions the catalog writer committed",
            &each(&|e| load(&e.catalog().writer_stats().transactions)),
        )?;
        counter(
            &mut enc,
            "catalog_nodes_written",
            "Node rows (sizes, times) the catalog writer wrote",
            &each(&|e| load(&e.catalog().writer_stats().nodes_written)),
        )?;

        let (open, accepted) = crate::net::connection_counts();
        let none: &Labels<'_> = &[];
        gauge(
            &mut enc,
            "connections",
            "Client connections open",
            &[(none, open as i64)],
        )?;
        counter(
            &mut enc,
            "connections_accepted",
            "Client connections accepted",
            &[(none, accepted)],
        )?;
        let s = self.nfs4.state_counts();
        gauge(
            &mut enc,
            "nfs4_clients",
            "NFSv4 clients holding a lease (a sleeping Mac's courtesy lease included)",
            &[(none, s.clients as i64)],
        )?;
        gauge(
            &mut enc,
            "nfs4_state",
            "NFSv4 state held, by kind",
            &[
                (&[("kind", "open_owners")], s.open_owners as i64),
                (&[("kind", "opens")], s.opens as i64),
                (&[("kind", "lock_owners")], s.lock_owners as i64),
                (&[("kind", "lock_states")], s.lock_states as i64),
                (&[("kind", "locked_ranges")], s.locked_ranges as i64),
            ],
        )?;
        let splice = crate::net::splice_counts();
        counter(
            &mut enc,
            "spliced_writes",
            "WRITE payloads moved socket -> pipe -> file, never through user space",
            &[(none, splice.spliced)],
        )?;
        counter(
            &mut enc,
            "direct_writes",
            "WRITE payloads written with O_DIRECT",
            &each(&|e| e.files().direct_written()),
        )?;
        Ok(())
    }
}

/// The registry a scrape encodes: the server's figures.
pub fn registry(figures: ServerFigures) -> Registry {
    let mut r = Registry::with_prefix("markbase_nfs");
    r.register_collector(Box::new(figures));
    r
}

/// The text a scrape returns.
pub fn scrape(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = kind.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "GET /metrics\n".into(),
        ));
    }
    // Encoding reads histograms under their locks: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || scrape(&registry)).await;
    Ok(match encoded {
        Ok(Ok(text)) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        _ => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "metrics could not be encoded\n".into(),
        ),
    })
}

/// Binds the endpoint (before the NFS listener starts, so a bad address
/// stops the server at once).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("metrics.address {addr:?} is not an address:port"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))
}

/// Scrapers connected at once; more wait to be accepted.
const SCRAPERS: usize = 16;
/// How long a scraper has to send its request's headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves scrapes until the task is dropped. At most [`SCRAPERS`]
/// connections are served at once, and one that sends no request within
/// [`HEADER_TIMEOUT`] is closed: whoever reaches the endpoint cannot make
/// it hold connections without bound.
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let room = Arc::new(tokio::sync::Semaphore::new(SCRAPERS));
    loop {
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| answer(req, registry.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics connection");
            }
            drop(permit);
        });
    }
}
