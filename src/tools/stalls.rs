//! A witness for stalls of the machine's CPUs. On each CPU a thread ticks
//! every millisecond at real-time priority (where the OS allows it; on
//! Linux pinned to its CPU) and records each time it could not run for much
//! longer than that. Nothing in the machine outranks a real-time thread,
//! so such a gap means that CPU did not run at all: on a virtual machine,
//! the host did not run that virtual CPU (on the 2-vCPU VM these figures
//! come from, gaps of 15–35 ms every 100 ms while the VM was busiest).
//! `aja` sets frame times against them, so a frame that waited for the
//! host is told apart from one that waited for the server or the disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most CPUs watched (one thread each).
const MAX_CPUS: usize = 64;
/// How often the witness ticks.
const TICK: Duration = Duration::from_millis(1);
/// A tick this late is a stall. Well above what scheduling alone costs a
/// real-time thread, below the host stalls it is meant to see.
pub const STALL: Duration = Duration::from_millis(10);

/// One stall: from `at` (since the witness's epoch) for `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub at: Duration,
    pub len: Duration,
}

/// What the witness saw.
#[derive(Debug, Clone)]
pub struct MachineStalls {
    /// In order of start, overlapping ones (several CPUs at once) merged.
    pub list: Vec<Stall>,
    /// Whether every ticker ran pinned at real-time priority; without it, a
    /// busy machine's own scheduling also shows up as stalls.
    pub realtime: bool,
}

/// The running witness.
pub struct StallWitness {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Stall>>>,
    realtime: Arc<AtomicBool>,
}

impl StallWitness {
    /// Starts the tickers; stalls are placed in time from `epoch` (which
    /// must not be later than now).
    pub fn start(epoch: Instant) -> std::io::Result<StallWitness> {
        let stop = Arc::new(AtomicBool::new(false));
        let realtime = Arc::new(AtomicBool::new(true));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_CPUS));
        let mut threads = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            let (s, rt) = (stop.clone(), realtime.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("stall-witness-{cpu}"))
                .spawn(move || {
                    if !(pin_to_cpu(cpu) && raise_to_realtime()) {
                        rt.store(false, Ordering::Relaxed);
                    }
                    tick_until(epoch, &s)
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(StallWitness {
            stop,
            threads,
            realtime,
        })
    }

    /// Stops the tickers and returns what they saw.
    pub fn finish(mut self) -> MachineStalls {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Stall> = self
            .threads
            .drain(..)
            .filter_map(|t| t.join().ok())
            .flatten()
            .collect();
        all.sort_by_key(|s| s.at);
        MachineStalls {
            list: merge(all),
            realtime: self.realtime.load(Ordering::Relaxed),
        }
    }
}

impl Drop for StallWitness {
    // Tickers not joined by `finish` end at their next tick.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn tick_until(epoch: Instant, stop: &AtomicBool) -> Vec<Stall> {
    let mut stalls = Vec::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let gap = now - last;
        if gap >= STALL {
            stalls.push(Stall {
                at: last - epoch,
                len: gap,
            });
        }
        last = now;
    }
    stalls
}

/// Merges overlapping stalls of a list ordered by start.
fn merge(sorted: Vec<Stall>) -> Vec<Stall> {
    let mut out: Vec<Stall> = Vec::with_capacity(sorted.len());
    for s in sorted {
        match out.last_mut() {
            Some(last) if s.at <= last.at + last.len => {
                let end = (last.at + last.len).max(s.at + s.len);
                last.len = end - last.at;
            }
            _ => out.push(s),
        }
    }
    out
}

#[cfg(target_os = "linux")]
fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for cpu < CPU_SETSIZE (MAX_CPUS is far below it); pid 0 is the
    // calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// macOS has no thread pinning; one ticker per CPU still runs.
#[cfg(not(target_os = "linux"))]
fn pin_to_cpu(_cpu: usize) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn raise_to_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; param is a valid struct.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// macOS: no SCHED_FIFO for unprivileged threads; the ticker runs at
/// normal priority.
#[cfg(not(target_os = "linux"))]
fn raise_to_realtime() -> bool {
    false
}

/// How much of `[start, start + len)` the (ordered) `stalls` cover.
pub fn overlap(stalls: &[Stall], start: Duration, len: Duration) -> Duration {
    let end = start + len;
    let first = stalls.partition_point(|s| s.at + s.len <= start);
    stalls[first..]
        .iter()
        .take_while(|s| s.at < end)
        .map(|s| (s.at + s.len).min(end) - s.at.max(start))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn overlap_counts_only_the_shared_time() {
        let stalls = [
            Stall {
                at: ms(100),
                len: ms(25),
            },
            Stall {
                at: ms(200),
                len: ms(30),
            },
        ];
        assert_eq!(overlap(&stalls, ms(0), ms(100)), ms(0));
        assert_eq!(overlap(&stalls, ms(90), ms(20)), ms(10));
        assert_eq!(overlap(&stalls, ms(110), ms(5)), ms(5));
        assert_eq!(overlap(&stalls, ms(120), ms(100)), ms(5 + 20));
        assert_eq!(overlap(&stalls, ms(0), ms(1000)), ms(55));
        assert_eq!(overlap(&stalls, ms(230), ms(10)), ms(0));
        assert_eq!(overlap(&[], ms(0), ms(10)), ms(0));
    }

    #[test]
    fn stalls_of_several_cpus_merge() {
        let s = |at, len| Stall {
            at: ms(at),
            len: ms(len),
        };
        assert_eq!(
            merge(vec![s(0, 10), s(5, 10), s(15, 5), s(30, 10)]),
            vec![s(0, 20), s(30, 10)]
        );
        assert_eq!(merge(vec![s(0, 30), s(5, 10)]), vec![s(0, 30)]);
        assert_eq!(merge(vec![]), vec![]);
    }

    #[test]
    fn the_witness_sees_a_stopped_process() {
        let w = StallWitness::start(Instant::now()).unwrap();
        // SIGSTOP stops every thread, as a host that does not run the VM
        // does; a child sends SIGCONT every 50 ms for a while (more than
        // once, so an early one cannot leave us stopped).
        #[cfg(unix)]
        {
            let pid = std::process::id();
            let waker = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.05; kill -CONT {pid}; done"
                ))
                .spawn()
                .unwrap();
            std::thread::sleep(ms(20));
            // SAFETY: signalling our own process.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            std::thread::sleep(ms(60));
            let mut waker = waker;
            waker.wait().unwrap();
            let stalls = w.finish().list;
            assert!(
                stalls.iter().any(|s| s.len >= ms(20)),
                "no stall seen: {stalls:?}"
            );
        }
    }
}
