//! Namespace changes over NFSv4 against the same changes on the local file
//! system, in the same run: creates (OPEN + CLOSE), stats (LOOKUP +
//! GETATTR), renames and removes, one at a time and 16 clients at once.
//!
//! Contenders, each round in turn:
//! - `journal`: the server as built (intent journal, spare content files);
//! - `synced`: the same with `catalog.journal = false` and no spares (each
//!   change answered after a synced SQLite commit);
//! - `local durable`: the same operations on a local folder of the same
//!   disk, each made durable as the server's are (create: the file and its
//!   folder synced; rename and remove: the folder synced);
//! - `local`: the same without any sync (what a reply may not promise).
//!
//! ops/s, min / median / max of the rounds, and the ratios of the medians.
//! The server runs in-process with its storage on the real disk (under
//! target/); the project's own client drives it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use markbase_nfs::tools::client::{Create, Nfs4Client};

#[path = "support/server.rs"]
mod server;
use server::{serve_runtime, start_server};

/// Files per shape and round.
const FILES: usize = 800;
const PARALLEL: usize = 16;
const ROUNDS: usize = 3;
const SHAPES: [&str; 4] = ["create", "stat", "rename", "remove"];

/// One contender: runs `count` of one shape as client (or thread) `who`.
trait Contender: Sync {
    fn run(&self, shape: &str, who: usize, round: usize, count: usize);
}

/// The server at `addr`: each worker has its own connection (client id).
struct Nfs {
    addr: std::net::SocketAddr,
}

impl Contender for Nfs {
    fn run(&self, shape: &str, who: usize, round: usize, count: usize) {
        let mut c = Nfs4Client::connect(self.addr, &format!("bench-{shape}-{who}-{round}"))
            .expect("connect");
        let root = c.lookup("").expect("root");
        for i in 0..count {
            let name = format!("r{round}-w{who}-{i}");
            let moved = format!("{name}.moved");
            match shape {
                "create" => {
                    let f = c
                        .open(&root, &name, Create::Unchecked { mode: 0o644 }, 2)
                        .expect("create");
                    c.close(&f).expect("close");
                }
                "stat" => {
                    c.lookup(&name).expect("stat");
                }
                "rename" => c.rename(&root, &name, &root, &moved).expect("rename"),
                _ => c.remove(&root, &moved).expect("remove"),
            }
        }
    }
}

/// A local folder; `durable`: synced as the server's replies promise.
struct Local {
    dir: PathBuf,
    durable: bool,
}

impl Local {
    fn sync_dir(&self) {
        if self.durable {
            File::open(&self.dir).unwrap().sync_all().unwrap();
        }
    }
}

impl Contender for Local {
    fn run(&self, shape: &str, who: usize, round: usize, count: usize) {
        for i in 0..count {
            let path = self.dir.join(format!("r{round}-w{who}-{i}"));
            let moved = path.with_extension("moved");
            match shape {
                "create" => {
                    let f = File::options()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .unwrap();
                    if self.durable {
                        f.sync_all().unwrap();
                    }
                    self.sync_dir();
                }
                "stat" => {
                    std::fs::metadata(&path).unwrap();
                }
                "rename" => {
                    std::fs::rename(&path, &moved).unwrap();
                    self.sync_dir();
                }
                _ => {
                    std::fs::remove_file(&moved).unwrap();
                    self.sync_dir();
                }
            }
        }
    }
}

/// Runs the four shapes with `workers` at once; ops/s per shape.
fn measure(c: &dyn Contender, workers: usize, round: usize) -> Vec<f64> {
    SHAPES
        .iter()
        .map(|shape| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for w in 0..workers {
                    s.spawn(move || c.run(shape, w, round, FILES / workers));
                }
            });
            (FILES / workers * workers) as f64 / t.elapsed().as_secs_f64()
        })
        .collect()
}

fn min_med_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn local_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn main() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("namespace-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let rt = serve_runtime();
    let (journal, _a) = start_server(&rt, &base.join("journal"), |_| {});
    let (synced, _b) = start_server(&rt, &base.join("synced"), |cfg| {
        cfg.catalog.journal = false;
        cfg.storage.spare_files = 0;
    });
    let contenders: Vec<(&str, Box<dyn Contender>)> = vec![
        ("journal", Box::new(Nfs { addr: journal })),
        ("synced", Box::new(Nfs { addr: synced })),
        (
            "local durable",
            Box::new(Local {
                dir: local_dir(&base, "local-durable"),
                durable: true,
            }),
        ),
        (
            "local",
            Box::new(Local {
                dir: local_dir(&base, "local"),
                durable: false,
            }),
        ),
    ];
    // (workers, contender, shape) → ops/s of each round.
    let mut got: BTreeMap<(usize, usize, usize), Vec<f64>> = BTreeMap::new();
    let mut round = 0;
    for _ in 0..ROUNDS {
        for workers in [1, PARALLEL] {
            for (ci, (_, c)) in contenders.iter().enumerate() {
                for (si, ops) in measure(c.as_ref(), workers, round).into_iter().enumerate() {
                    got.entry((workers, ci, si)).or_default().push(ops);
                }
            }
            round += 1;
        }
    }
    for workers in [1, PARALLEL] {
        println!("\n{workers} at a time, {FILES} files a shape, {ROUNDS} rounds: ops/s min / median / max");
        for (ci, (name, _)) in contenders.iter().enumerate() {
            let cells: Vec<String> = (0..SHAPES.len())
                .map(|si| {
                    let (lo, med, hi) = min_med_max(&got[&(workers, ci, si)]);
                    format!("{} {lo:.0}/{med:.0}/{hi:.0}", SHAPES[si])
                })
                .collect();
            println!("  {name:<14} {}", cells.join("  "));
        }
        let median = |ci: usize, si: usize| min_med_max(&got[&(workers, ci, si)]).1;
        for (ci, against) in [(1, "synced"), (2, "local durable"), (3, "local")] {
            let ratios: Vec<String> = (0..SHAPES.len())
                .map(|si| format!("{} {:.2}", SHAPES[si], median(0, si) / median(ci, si)))
                .collect();
            println!("  journal ÷ {against:<14} {}", ratios.join("  "));
        }
    }
}
