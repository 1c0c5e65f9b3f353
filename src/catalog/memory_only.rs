//! Calls tried without reading SQLite. A network thread may answer a
//! read-only call in place, rather than hand it to a metadata thread (two
//! thread wake-ups), when everything the call needs is in memory; it must
//! never wait on SQLite or the namespace lock, which would stall every
//! connection the thread serves. While a [`MemoryOnly`] guard is held on
//! a thread, the catalog answers from its caches only and refuses
//! (`CatalogError::NotInMemory`) what it would have to load; the caller
//! then sees [`MemoryOnly::missed`] and runs the call on a metadata thread.

use std::cell::Cell;
use std::marker::PhantomData;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    On,
    Missed,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Off) };
}

/// Memory-only catalog access on this thread until dropped.
pub struct MemoryOnly {
    // Bound to the thread whose flag it set.
    _here: PhantomData<*const ()>,
}

impl MemoryOnly {
    pub fn enter() -> MemoryOnly {
        MODE.with(|m| m.set(Mode::On));
        MemoryOnly { _here: PhantomData }
    }

    /// Whether the catalog refused something it would have had to load.
    pub fn missed(&self) -> bool {
        MODE.with(|m| m.get() == Mode::Missed)
    }
}

impl Drop for MemoryOnly {
    fn drop(&mut self) {
        MODE.with(|m| m.set(Mode::Off));
    }
}

/// Called where the caller would read SQLite, wait for a lock held across
/// I/O, or do I/O itself: true (and the miss noted) when this thread may
/// not.
pub fn refused() -> bool {
    MODE.with(|m| {
        if m.get() == Mode::Off {
            return false;
        }
        m.set(Mode::Missed);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_noted_only_inside_the_guard() {
        assert!(!refused(), "no guard: loads are allowed");
        {
            let g = MemoryOnly::enter();
            assert!(!g.missed());
            assert!(refused());
            assert!(g.missed());
        }
        assert!(!refused(), "the guard's end lifts the refusal");
    }
}
