//! Per-operation latency histograms (hdrhistogram) and error counts of one
//! program (NFSv4 operations, NFSv3 procedures): printed at shutdown and on
//! SIGUSR1, and read by the metrics endpoint, so the operator sees where
//! time goes. Knows no protocol: the program names its operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Names an operation number (slot 0 collects numbers past the table).
pub type OpNames = fn(u32) -> &'static str;

pub struct OpLatency {
    slots: Vec<Mutex<Histogram<u64>>>,
    errors: Vec<AtomicU64>,
    names: OpNames,
}

/// One operation's figures, as the metrics endpoint reads them.
pub struct OpFigures {
    pub name: &'static str,
    pub count: u64,
    pub errors: u64,
    /// Sum of the recorded latencies, seconds (from the histogram's mean).
    pub sum_seconds: f64,
    /// Operations per bucket (not cumulative), by upper bound in seconds;
    /// the last bound is f64::MAX.
    pub buckets: Vec<(f64, u64)>,
}

/// Bucket bounds of the exported histograms, microseconds.
const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

impl OpLatency {
    /// A table for operations numbered below `slots`.
    pub fn new(slots: usize, names: OpNames) -> OpLatency {
        OpLatency {
            errors: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            names,
            slots: (0..slots)
                .map(|_| {
                    // 1 µs .. 1 h, 3 significant digits.
                    Mutex::new(
                        Histogram::new_with_bounds(1, 3_600_000_000, 3)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
        }
    }

    fn slot(&self, opnum: u32) -> usize {
        if (opnum as usize) < self.slots.len() {
            opnum as usize
        } else {
            0
        }
    }

    pub fn record(&self, opnum: u32, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.slots[self.slot(opnum)].lock().record(us);
    }

    /// Counts a failed operation (its time is recorded by `record`).
    pub fn record_error(&self, opnum: u32) {
        self.errors[self.slot(opnum)].fetch_add(1, Ordering::Relaxed);
    }

    /// Every operation seen, each histogram locked only while it is read.
    pub fn figures(&self) -> Vec<OpFigures> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let h = slot.lock();
            if h.is_empty() {
                continue;
            }
            // One pass over the recorded values (not a range count per
            // bound): WRITEs wait for this lock to record their time.
            let mut counts = [0u64; BOUNDS_US.len() + 1];
            for v in h.iter_recorded() {
                let at = BOUNDS_US.partition_point(|b| *b < v.value_iterated_to());
                counts[at] += v.count_at_value();
            }
            let mut buckets: Vec<(f64, u64)> = BOUNDS_US
                .iter()
                .zip(counts)
                .map(|(b, n)| (*b as f64 / 1e6, n))
                .collect();
            buckets.push((f64::MAX, counts[BOUNDS_US.len()]));
            out.push(OpFigures {
                name: (self.names)(i as u32),
                count: h.len(),
                errors: self.errors[i].load(Ordering::Relaxed),
                sum_seconds: h.mean() * h.len() as f64 / 1e6,
                buckets,
            });
        }
        out
    }

    /// A table of count and p50/p99/max per operation seen.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{:<20} {:>10} {:>10} {:>10} {:>10}\n",
            "operation", "count", "p50 µs", "p99 µs", "max µs"
        );
        for (i, slot) in self.slots.iter().enumerate() {
            let h = slot.lock();
            if h.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "{:<20} {:>10} {:>10} {:>10} {:>10}\n",
                (self.names)(i as u32),
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const WRITE: u32 = 7;

    fn names(n: u32) -> &'static str {
        match n {
            7 => "WRITE",
            _ => "other",
        }
    }

    #[test]
    fn report_lists_recorded_ops() {
        let l = OpLatency::new(40, names);
        for us in [10, 20, 30, 1000] {
            l.record(WRITE, Duration::from_micros(us));
        }
        l.record(9999, Duration::from_micros(5));
        let r = l.report();
        assert!(r.contains("WRITE") && r.contains("other"), "{r}");
        let write = r.lines().find(|l| l.starts_with("WRITE")).unwrap();
        let cols: Vec<&str> = write.split_whitespace().collect();
        assert_eq!(cols[1], "4");
        assert_eq!(cols[4], "1000");
    }

    #[test]
    fn figures_bucket_every_operation_once() {
        let l = OpLatency::new(40, names);
        for us in [30, 40, 700, 3_000_000, 90_000_000] {
            l.record(WRITE, Duration::from_micros(us));
        }
        l.record_error(WRITE);
        let f = l.figures();
        assert_eq!(f.len(), 1);
        let w = &f[0];
        assert_eq!((w.name, w.count, w.errors), ("WRITE", 5, 1));
        assert_eq!(w.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert_eq!(w.buckets[0], (50e-6, 2));
        assert_eq!(w.buckets.last().unwrap(), &(f64::MAX, 1));
        assert!((w.sum_seconds - 93.0007).abs() < 0.2, "{}", w.sum_seconds);
    }
}
