//! Per-operation latency histograms (hdrhistogram), printed at shutdown and
//! on SIGUSR1 so the operator sees where time goes.

use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::consts::op;

/// Operations are numbered 3..=39; slot 0 collects anything else.
const SLOTS: usize = 40;

pub struct OpLatency {
    slots: Vec<Mutex<Histogram<u64>>>,
}

impl Default for OpLatency {
    fn default() -> Self {
        OpLatency {
            slots: (0..SLOTS)
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
}

pub fn op_name(opnum: u32) -> &'static str {
    match opnum {
        op::ACCESS => "ACCESS",
        op::CLOSE => "CLOSE",
        op::COMMIT => "COMMIT",
        op::CREATE => "CREATE",
        op::DELEGPURGE => "DELEGPURGE",
        op::DELEGRETURN => "DELEGRETURN",
        op::GETATTR => "GETATTR",
        op::GETFH => "GETFH",
        op::LINK => "LINK",
        op::LOCK => "LOCK",
        op::LOCKT => "LOCKT",
        op::LOCKU => "LOCKU",
        op::LOOKUP => "LOOKUP",
        op::LOOKUPP => "LOOKUPP",
        op::NVERIFY => "NVERIFY",
        op::OPEN => "OPEN",
        op::OPENATTR => "OPENATTR",
        op::OPEN_CONFIRM => "OPEN_CONFIRM",
        op::OPEN_DOWNGRADE => "OPEN_DOWNGRADE",
        op::PUTFH => "PUTFH",
        op::PUTPUBFH => "PUTPUBFH",
        op::PUTROOTFH => "PUTROOTFH",
        op::READ => "READ",
        op::READDIR => "READDIR",
        op::READLINK => "READLINK",
        op::REMOVE => "REMOVE",
        op::RENAME => "RENAME",
        op::RENEW => "RENEW",
        op::RESTOREFH => "RESTOREFH",
        op::SAVEFH => "SAVEFH",
        op::SECINFO => "SECINFO",
        op::SETATTR => "SETATTR",
        op::SETCLIENTID => "SETCLIENTID",
        op::SETCLIENTID_CONFIRM => "SETCLIENTID_CONFIRM",
        op::VERIFY => "VERIFY",
        op::WRITE => "WRITE",
        op::RELEASE_LOCKOWNER => "RELEASE_LOCKOWNER",
        _ => "other",
    }
}

impl OpLatency {
    pub fn record(&self, opnum: u32, took: Duration) {
        let slot = if (opnum as usize) < SLOTS {
            opnum as usize
        } else {
            0
        };
        let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.slots[slot].lock().record(us);
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
                op_name(i as u32),
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

    #[test]
    fn report_lists_recorded_ops() {
        let l = OpLatency::default();
        for us in [10, 20, 30, 1000] {
            l.record(op::WRITE, Duration::from_micros(us));
        }
        l.record(9999, Duration::from_micros(5));
        let r = l.report();
        assert!(r.contains("WRITE") && r.contains("other"), "{r}");
        let write = r.lines().find(|l| l.starts_with("WRITE")).unwrap();
        let cols: Vec<&str> = write.split_whitespace().collect();
        assert_eq!(cols[1], "4");
        assert_eq!(cols[4], "1000");
    }
}
