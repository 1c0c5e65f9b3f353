//! A small pool of threads for calls that carry no file data (lookups,
//! attributes, opens, namespace changes), apart from the blocking pool
//! where READs and WRITEs wait on the disk: a Finder listing or a GETATTR
//! then never queues behind a 128-deep stream of 1 MiB WRITEs.

use std::sync::OnceLock;

use crossbeam_channel::{unbounded, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs in the order they arrive.
pub struct WorkerPool {
    jobs: Sender<Job>,
}

impl WorkerPool {
    /// Starts `threads` named threads (at least one).
    pub fn new(name: &str, threads: usize) -> WorkerPool {
        let (jobs, rx) = unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A job that panics must not take the thread with it.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a call panicked on a metadata thread; it goes on");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a metadata thread");
            }
        }
        WorkerPool { jobs }
    }

    /// The process's metadata pool, started on first use with `threads`.
    pub fn metadata(threads: usize) -> &'static WorkerPool {
        static POOL: OnceLock<WorkerPool> = OnceLock::new();
        POOL.get_or_init(|| WorkerPool::new("metadata", threads))
    }

    /// Queues `job`. The queue is bounded by its callers: each connection
    /// admits a fixed number of calls at a time.
    pub fn run(&self, job: Job) {
        if let Err(e) = self.jobs.send(job) {
            // No thread could be started: run it here rather than drop it.
            (e.into_inner())();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_and_a_panic_does_not_stop_the_pool() {
        let pool = WorkerPool::new("test-pool", 2);
        let (tx, rx) = std::sync::mpsc::channel();
        pool.run(Box::new(|| panic!("job fails")));
        for i in 0..10 {
            let tx = tx.clone();
            pool.run(Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = (0..10)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("pool stalled")
            })
            .collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
