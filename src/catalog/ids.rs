//! Fresh ids for nodes created through NFS: never the same twice in one run
//! of the server, by construction, and random across runs.
//!
//! Ids used to be mixed from the clock, the process id and a counter. Two
//! creates could then get one id (the clock's difference between them
//! cancelling the counter's), and did: on 2026-12-06 (bbaef8a) the
//! 1,569th of an nfsbench run's 2,000 creates failed with "File exists",
//! its content file's name being the 1,489th's; a folder (which has no
//! content file to catch it) would have written its row over another
//! node's.
//!
//! Now each id is a bijective mix of a counter and a seed drawn from the
//! operating system's randomness when the catalog opens: distinct counters
//! give distinct ids whatever the clock does, and a later run (or another
//! server on the same catalog) starts from a seed of its own.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use super::node::{NodeId, SPECIAL_ID_PREFIX};

/// Hands out the text ids of new nodes (UUID-shaped, version 4) and of
/// special nodes.
#[derive(Debug)]
pub(super) struct IdSource {
    /// Added to the counter's multiple of [`GOLDEN`] before mixing: the
    /// first for an id's leading 64 bits, the second for the rest.
    seeds: [u64; 2],
    counter: AtomicU64,
}

/// An odd constant: `seed + n * GOLDEN` never repeats over 2^64 counters.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdSource {
    /// A source seeded from the operating system's randomness.
    pub(super) fn new() -> IdSource {
        IdSource::with_seeds(os_seeds())
    }

    pub(super) fn with_seeds(seeds: [u64; 2]) -> IdSource {
        IdSource {
            seeds,
            counter: AtomicU64::new(0),
        }
    }

    /// The next id in UUID form, `xxxxxxxx-xxxx-4xxx-Yxxx-xxxxxxxxxxxx`.
    /// All 64 bits of the counter's first mix are in it, so two counters
    /// never give one id.
    pub(super) fn text(&self) -> NodeId {
        let (a, b) = self.next_pair();
        NodeId::text(&format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            // RFC 9562 variant (10xx) and a's bits 12-15, then 10 of b's.
            0x8000 | ((a >> 12) & 0xf) << 10 | (b >> 54) & 0x3ff,
            b & 0xffff_ffff_ffff
        ))
    }

    /// The next id of a special node (symlink, FIFO, device): the prefix
    /// that marks it, then the counter's first mix whole and 16 more bits.
    pub(super) fn special(&self) -> NodeId {
        let (a, b) = self.next_pair();
        NodeId::text(&format!("{SPECIAL_ID_PREFIX}{a:016x}{:04x}", b & 0xffff))
    }

    fn next_pair(&self) -> (u64, u64) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let step = n.wrapping_mul(GOLDEN);
        (
            mix64(self.seeds[0].wrapping_add(step)),
            mix64(self.seeds[1].wrapping_add(step)),
        )
    }
}

/// SplitMix64's finalizer: a bijection of u64, so distinct inputs stay
/// distinct (also the demo generator's [`super::gen::Rng`] step).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 128 bits from /dev/urandom (Linux and macOS); should it be unreadable,
/// the standard library's per-process random hash keys, the clock and the
/// process id.
fn os_seeds() -> [u64; 2] {
    let mut seeds = [[0u8; 8]; 2];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| seeds.iter_mut().try_for_each(|s| f.read_exact(s)));
    if let Err(e) = read {
        tracing::warn!(error = %e, "no /dev/urandom: node ids seeded from hash keys and the clock");
        return fallback_seeds();
    }
    seeds.map(u64::from_le_bytes)
}

fn fallback_seeds() -> [u64; 2] {
    use std::hash::{BuildHasher, Hasher};
    let keyed = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_i64(super::node::now_ns());
        h.write_u32(std::process::id());
        h.finish()
    };
    [keyed(1), keyed(2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The counter's values around 0 and around wrapping, where a careless
    /// mix would meet itself.
    fn counters() -> impl Iterator<Item = u64> {
        (0..200_000u64).chain(u64::MAX - 200_000..=u64::MAX)
    }

    fn text_of(id: NodeId) -> String {
        match id {
            NodeId::Text(s) => s.to_string(),
            other => panic!("{other} is not a text id"),
        }
    }

    fn id_at(seeds: [u64; 2], n: u64, special: bool) -> String {
        let source = IdSource::with_seeds(seeds);
        source.counter.store(n, Ordering::Relaxed);
        text_of(if special {
            source.special()
        } else {
            source.text()
        })
    }

    #[test]
    fn distinct_counters_give_distinct_ids_whatever_the_seeds() {
        // Seeds that make the two halves equal, zero, and arbitrary.
        for seeds in [[0, 0], [7, 7], [u64::MAX, 1], [0x1234_5678, 0x9abc_def0]] {
            for special in [false, true] {
                let mut seen = HashSet::new();
                for n in counters() {
                    let id = id_at(seeds, n, special);
                    assert!(seen.insert(id.clone()), "{id} repeated at counter {n}");
                }
            }
        }
    }

    #[test]
    fn ids_are_version_4_uuids_and_specials_carry_their_prefix() {
        let source = IdSource::new();
        for _ in 0..10_000 {
            let id = text_of(source.text());
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version of {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "variant of {id}"
            );
            let special = source.special();
            assert!(special.is_special(), "{special}");
        }
    }

    #[test]
    fn many_threads_taking_ids_at_once_never_share_one() {
        let source = IdSource::new();
        let taken: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..50_000).map(|_| text_of(source.text())).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: HashSet<&String> = taken.iter().flatten().collect();
        assert_eq!(all.len(), 200_000);
    }

    #[test]
    fn two_sources_start_apart() {
        let (a, b) = (IdSource::new(), IdSource::new());
        assert_ne!(a.seeds, b.seeds);
        assert_ne!(a.text(), b.text());
    }
}
