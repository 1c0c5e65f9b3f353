//! `markbase-nfs`: serve a MarkBase catalog over NFSv4.0 and NFSv3, import a folder
//! into a catalog, or generate a synthetic one.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use markbase_nfs::catalog::{generate, import_tree, GenOptions};
use markbase_nfs::config::Config;
use markbase_nfs::tools::aja;
use markbase_nfs::{net, serve};

#[derive(Parser)]
#[command(
    name = "markbase-nfs",
    version,
    about = "NFSv4.0 server for MarkBase catalogs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a catalog (default: data/users/demo.sqlite, created with a demo tree).
    Serve {
        /// tuning.toml to read (default: ./tuning.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// Also listen here, for NFSv3 clients that insist on a MOUNT port
        /// of their own (server.mount_port; MOUNT is always on --port too).
        #[arg(long)]
        mount_port: Option<u16>,
        /// The catalog database.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Folder for the content of files created through NFS.
        #[arg(long)]
        storage: Option<PathBuf>,
        /// Export every DIR/<user>.sqlite as /<user> (content in
        /// DIR/<user>.storage), each with the [export] table's settings.
        #[arg(long, conflicts_with_all = ["db", "storage"])]
        users: Option<PathBuf>,
        /// Grace period after a restart, in seconds (nfs.grace_time).
        #[arg(long)]
        grace_time: Option<u32>,
        /// Lease time in seconds (nfs.lease_time).
        #[arg(long)]
        lease_time: Option<u32>,
    },
    /// Check a tuning.toml (default: ./tuning.toml when present) and print
    /// the settings in effect, every key with its value; exits non-zero,
    /// saying what is wrong, when it would not serve.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Index an existing folder into a catalog (files stay where they are).
    Import {
        dir: PathBuf,
        #[arg(long)]
        db: PathBuf,
    },
    /// AJA-System-Test-style sustained write then read of one file.
    Aja {
        /// 4k-prores-4444 (5.89 MB/frame), 4k-prores-4444xq (8.84 MB),
        /// uhd-prores-4444 (5.5 MB).
        #[arg(long, default_value = "4k-prores-4444")]
        preset: String,
        /// Frame size in bytes (overrides the preset).
        #[arg(long)]
        frame_bytes: Option<u64>,
        /// File size: 1GiB, 4GiB, 16GiB, 64GiB…
        #[arg(long, default_value = "16GiB")]
        file_size: String,
        /// Exit non-zero when writes or reads are below this many MB/s.
        #[arg(long)]
        target: Option<f64>,
        /// Use a volume the OS mounted (e.g. /Volumes/MarkBase) instead of
        /// the built-in client.
        #[arg(long)]
        mount: Option<PathBuf>,
        /// Use a running server instead of starting one.
        #[arg(long)]
        server: Option<std::net::SocketAddr>,
        /// Folder for the temporary catalog of the server it starts.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "aja-frames.csv")]
        csv: PathBuf,
        /// The frame-time graph (SVG; a PNG of it is written beside it).
        #[arg(long, default_value = "aja-frames.svg")]
        svg: PathBuf,
        /// WRITE/READ size of the built-in client.
        #[arg(long, default_value_t = 1 << 20)]
        chunk: usize,
        /// Requests in flight per frame (default 16; 128 with
        /// --mac-uncached, the Mac's most).
        #[arg(long)]
        inflight: Option<usize>,
        /// Tuning file for the server it starts (default: ./tuning.toml
        /// when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Skip the same-run local baselines (buffered pwrite and O_DIRECT
        /// of the same frames in the same folder).
        #[arg(long)]
        no_baseline: bool,
        /// The built-in client writes as a Mac with its cache off (AJA's
        /// "Disable file system cache", F_NOCACHE): 1 MiB-aligned pieces,
        /// the partial 16 KiB pages at each frame's edges FILE_SYNC, 128
        /// WRITEs in flight (unless --inflight says otherwise).
        #[arg(long)]
        mac_uncached: bool,
        /// The built-in client lends its payload pages to the socket
        /// (vmsplice) instead of copying each payload into it (Linux;
        /// elsewhere it always copies). The copy is the default because an
        /// editor's Mac mounts the server over loopback: its NFS client's
        /// copy runs on the server's own CPUs too. Lending shows the server
        /// with that copy taken away.
        #[arg(long)]
        client_lends: bool,
    },
    /// Build a synthetic catalog shaped like the seed user's.
    Gen {
        #[arg(long)]
        db: PathBuf,
        /// Content folder (default: <db>.storage).
        #[arg(long)]
        storage: Option<PathBuf>,
        #[arg(long, default_value_t = 12_659)]
        nodes: usize,
        /// Sizes in bytes of the sparse media files, comma separated.
        #[arg(long, value_delimiter = ',')]
        media: Option<Vec<u64>>,
        /// File nodes whose content file is left missing.
        #[arg(long, default_value_t = 0)]
        missing: usize,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(&p),
        None if std::path::Path::new("tuning.toml").exists() => {
            Config::load(std::path::Path::new("tuning.toml"))
        }
        None => Ok(Config::default()),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            config,
            address,
            port,
            mount_port,
            db,
            storage,
            users,
            grace_time,
            lease_time,
        } => {
            let mut cfg = load_config(config)?;
            if let Some(a) = address {
                cfg.server.address = a;
            }
            if let Some(p) = port {
                cfg.server.port = p;
            }
            if let Some(p) = mount_port {
                cfg.server.mount_port = p;
            }
            if let Some(d) = db {
                cfg.export.db = d;
            }
            if let Some(s) = storage {
                cfg.export.storage = s;
            }
            if let Some(dir) = users {
                cfg.export_users(&dir)?;
            }
            if let Some(g) = grace_time {
                cfg.nfs.grace_time = g;
            }
            if let Some(l) = lease_time {
                cfg.nfs.lease_time = l;
            }
            cfg.validate()?;
            run_server(cfg)
        }
        Command::CheckConfig { config } => {
            let from = config
                .clone()
                .or_else(|| Some(PathBuf::from("tuning.toml")).filter(|p| p.exists()));
            let cfg = load_config(config)?;
            cfg.validate()?;
            match from {
                Some(p) => println!("# {}: valid; the settings in effect:", p.display()),
                None => println!("# no tuning.toml: the defaults in effect:"),
            }
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
        Command::Import { dir, db } => {
            let s = import_tree(&dir, &db, true)?;
            println!(
                "imported {} folders and {} files ({} bytes) from {} into {}{}",
                s.folders,
                s.files,
                s.bytes,
                dir.display(),
                db.display(),
                if s.skipped > 0 {
                    format!("; skipped {} entries that are neither", s.skipped)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Command::Aja {
            preset,
            frame_bytes,
            file_size,
            target,
            mount,
            server,
            dir,
            csv,
            svg,
            chunk,
            inflight,
            config,
            no_baseline,
            client_lends,
            mac_uncached,
        } => {
            let frame_bytes = match frame_bytes {
                Some(b) => b,
                None => aja::PRESETS
                    .iter()
                    .find(|p| p.0 == preset)
                    .map(|p| p.1)
                    .with_context(|| {
                        let names: Vec<&str> = aja::PRESETS.iter().map(|p| p.0).collect();
                        format!("unknown preset {preset:?}; known: {}", names.join(", "))
                    })?,
            };
            let opts = aja::AjaOptions {
                frame_bytes,
                file_bytes: aja::parse_size(&file_size)?,
                target: aja::Target::Mount(PathBuf::new()),
                target_mbps: target,
                csv,
                svg,
                chunk,
                inflight: inflight.unwrap_or(if mac_uncached { 128 } else { 16 }),
                progress: true,
                baseline: None,
                lend_payloads: client_lends,
                mac_uncached,
            };
            let cfg = load_config(config)?;
            run_aja(opts, mount, server, dir, cfg, !no_baseline)
        }
        Command::Gen {
            db,
            storage,
            nodes,
            media,
            missing,
            seed,
        } => {
            let mut opts = GenOptions {
                nodes,
                missing,
                seed,
                progress: true,
                ..GenOptions::default()
            };
            if let Some(m) = media {
                opts.media_sizes = m;
            }
            let storage = storage.unwrap_or_else(|| db.with_extension("storage"));
            let s = generate(&db, &storage, &opts)?;
            println!(
                "generated {} nodes ({} folders, {} files of which {} media, depth {}) in {}; content in {} ({} bytes written)",
                s.folders + s.files,
                s.folders,
                s.files,
                s.media,
                s.max_depth,
                db.display(),
                storage.display(),
                s.bytes_written
            );
            Ok(())
        }
    }
}

fn run_aja(
    mut opts: aja::AjaOptions,
    mount: Option<PathBuf>,
    server: Option<std::net::SocketAddr>,
    dir: Option<PathBuf>,
    mut cfg: Config,
    baseline: bool,
) -> anyhow::Result<()> {
    // Without a mount or a server: a server of our own, in-process, on a
    // temporary catalog whose content lands on the real disk.
    let mut own = None;
    opts.target = match (mount, server) {
        (Some(m), _) => aja::Target::Mount(m),
        (None, Some(s)) => aja::Target::Nfs(s),
        (None, None) => {
            let base = dir.unwrap_or_else(std::env::temp_dir);
            let tmp = tempfile_dir(&base)?;
            cfg.export.db = tmp.join("aja.sqlite");
            cfg.export.storage = PathBuf::new();
            cfg.server.port = 0;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let nfs = serve::open_export(&cfg)?;
            let listener =
                runtime.block_on(async { net::bind(serve::listen_addr(&cfg)?, &cfg.network) })?;
            let addr = listener.local_addr()?;
            runtime.spawn(net::serve(
                listener,
                serve::dispatcher_for(nfs.clone()),
                cfg.network.clone(),
            ));
            eprintln!(
                "aja: built-in client against a server on {addr}, catalog in {}",
                tmp.display()
            );
            if baseline {
                // The same disk as the server's content.
                opts.baseline = Some(tmp.clone());
            }
            own = Some((runtime, nfs, tmp));
            aja::Target::Nfs(addr)
        }
    };
    let result = aja::run(&opts);
    if let Some((runtime, nfs, tmp)) = own {
        for export in nfs.exports() {
            export.files().drain();
            export.catalog().shutdown();
        }
        drop(runtime);
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let report = result?;
    print!("{}", aja::summary(&report, opts.target_mbps));
    println!(
        "frame times: {}; their graph: {} and {}",
        opts.csv.display(),
        opts.svg.display(),
        opts.svg.with_extension("png").display()
    );
    if let Some(t) = opts.target_mbps {
        let (w, r) = (report.write.mbps(), report.read.mbps());
        if w < t || r < t {
            eprintln!("aja: target {t:.0} MB/s missed (write {w:.0}, read {r:.0})");
            std::process::exit(2);
        }
        println!("target {t:.0} MB/s met");
    }
    Ok(())
}

/// A fresh folder under `base`.
fn tempfile_dir(base: &std::path::Path) -> anyhow::Result<PathBuf> {
    let d = base.join(format!("markbase-aja-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// How long a stop waits for the calls already read to be answered.
const STOP_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

fn run_server(cfg: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cfg.server.blocking_threads.max(1))
        .thread_name("markbase-nfs")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let nfs = serve::open_export(&cfg)?;
        let addr = serve::listen_addr(&cfg)?;
        let listener = net::bind(addr, &cfg.network)?;
        let addr = listener.local_addr()?;
        // Bound before the address is printed: whoever reads it may scrape.
        let (dispatcher, nfs3) = serve::programs(nfs.clone());
        let metrics = if cfg.metrics.address.is_empty() {
            None
        } else {
            let listener = markbase_nfs::metrics::bind(&cfg.metrics.address).await?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            let registry = markbase_nfs::metrics::registry(
                markbase_nfs::metrics::ServerFigures::new(nfs.clone(), nfs3),
            );
            Some(tokio::spawn(markbase_nfs::metrics::serve(
                listener,
                std::sync::Arc::new(registry),
            )))
        };
        let exports = nfs.exports();
        let catalogs: Vec<String> = exports
            .iter()
            .map(|e| format!("{} at {}", e.config().export.db.display(), e.path()))
            .collect();
        println!(
            "markbase-nfs serving {} on {addr} (NFSv4.0, NFSv3 and MOUNT)",
            catalogs.join(", ")
        );
        let paths: Vec<&str> = exports.iter().map(|e| e.path()).collect();
        println!("{}", serve::mount_help(&addr, &paths));
        // The same programs on a second port, for clients that want MOUNT
        // apart (the NFS port serves it too).
        // Turned true at SIGTERM/SIGINT: the listeners stop accepting and
        // each connection stops reading calls.
        let (stopping, _) = tokio::sync::watch::channel(false);
        let mount_listener = match cfg.server.mount_port {
            0 => None,
            p => {
                let l = net::bind(std::net::SocketAddr::new(addr.ip(), p), &cfg.network)?;
                println!("MOUNT also on {}", l.local_addr()?);
                Some(tokio::spawn(net::serve_until(
                    l,
                    dispatcher.clone(),
                    cfg.network.clone(),
                    stopping.subscribe(),
                )))
            }
        };
        let server = tokio::spawn(net::serve_until(
            listener,
            dispatcher,
            cfg.network.clone(),
            stopping.subscribe(),
        ));
        #[cfg(unix)]
        {
            let nfs = nfs.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                    return;
                };
                while usr1.recv().await.is_some() {
                    eprintln!("per-operation latency:\n{}", nfs.latency_report());
                    eprintln!("{}", splice_report(&nfs));
                    eprintln!("{}", pacing_report(&nfs));
                    eprintln!("{}", direct_read_report(&nfs));
                }
            });
        }
        shutdown_signal().await;
        tracing::info!("stopping: no new connections or calls; answering the calls read");
        let _ = stopping.send(true);
        for task in [Some(server), mount_listener].into_iter().flatten() {
            // A call stuck on a dead disk must not hold the stop forever.
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_DRAIN, task).await.is_err() {
                tracing::warn!(
                    seconds = STOP_DRAIN.as_secs(),
                    "calls still running after the drain limit: closing their connections"
                );
                abort.abort();
            }
        }
        if let Some(m) = metrics {
            m.abort();
        }
        tracing::info!("shutting down: writing queued direct WRITEs, flushing the catalog");
        for export in nfs.exports() {
            export.files().drain();
            export.catalog().shutdown();
        }
        eprintln!("per-operation latency:\n{}", nfs.latency_report());
        eprintln!("{}", splice_report(&nfs));
        eprintln!("{}", pacing_report(&nfs));
        eprintln!("{}", direct_read_report(&nfs));
        Ok(())
    })
}

/// How many WRITE payloads went socket -> pipe -> file, and how many of
/// those on to disk with O_DIRECT.
fn splice_report(nfs: &markbase_nfs::nfs4::Nfs4Server) -> String {
    let c = net::splice_counts();
    format!(
        "WRITE payloads spliced: {} ({} of them written with O_DIRECT, {} queued for it now); copied after their pipes filled: {}; copied for want of a pipe (system pipe limits): {}",
        c.spliced, nfs.files().direct_written(), nfs.files().direct_queued(), c.copied_pipes_full, c.copied_no_pipe
    )
}

/// How many READs of cold data went disk -> aligned buffer (O_DIRECT).
fn direct_read_report(nfs: &markbase_nfs::nfs4::Nfs4Server) -> String {
    format!(
        "READs of cold data served with O_DIRECT: {}",
        nfs.files().direct_read()
    )
}

/// How long WRITEs were held back to the disk's pace, and how much
/// write-behind removals saved.
fn pacing_report(nfs: &markbase_nfs::nfs4::Nfs4Server) -> String {
    format!(
        "WRITEs paced to the disk for {:.1} s in all; write-behind windows dropped with their removed file: {}",
        nfs.files().paced().as_secs_f64(),
        nfs.files().skipped_windows()
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
