//! What guests may hold at once: instances per guest, and linear memory,
//! for all guests together and for each guest name.
//!
//! Without these, one guest whose requests stall or pile up takes every
//! instance slot, and 256 instances at `--guest-memory` each (times up to
//! four memories) are far more than an enclave has.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;

/// Bytes that can be taken and given back, never more than the total.
#[derive(Debug)]
pub(crate) struct Budget {
    left: AtomicU64,
}

impl Budget {
    pub(crate) fn new(total: u64) -> Budget {
        Budget {
            left: AtomicU64::new(total),
        }
    }

    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.left.fetch_add(n, Ordering::AcqRel);
    }

    /// Bytes not taken.
    pub(crate) fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }
}

/// What one guest name may hold at once; kept across redeploys of the
/// name, so instances of the old code still running count too.
#[derive(Debug)]
pub struct Share {
    pub(crate) instances: Arc<tokio::sync::Semaphore>,
    pub(crate) memory: Budget,
    /// `--guest-instances`, for messages.
    pub(crate) max_instances: u32,
}

impl Share {
    /// Instances of this name running now.
    pub fn in_use(&self) -> u32 {
        let free = u32::try_from(self.instances.available_permits()).unwrap_or(u32::MAX);
        self.max_instances.saturating_sub(free)
    }

    pub(crate) fn new(instances: u32, memory: u64) -> Arc<Share> {
        Arc::new(Share {
            instances: Arc::new(tokio::sync::Semaphore::new(instances as usize)),
            memory: Budget::new(memory),
            max_instances: instances,
        })
    }
}

/// One instance's memory limiter: every growth of a linear memory is taken
/// from the guest's share and from the process-wide budget, and all of it
/// is given back when the instance goes. Growth that does not fit fails
/// inside the guest (`memory.grow` returns -1) rather than trapping.
pub(crate) struct Limiter {
    per_memory: usize,
    taken: u64,
    process: Arc<Budget>,
    guest: Arc<Share>,
    /// A growth was refused for want of budget (not for the per-instance
    /// limit): at instantiation that makes the request a 503.
    pub(crate) starved: bool,
}

impl Limiter {
    pub(crate) fn new(per_memory: usize, process: Arc<Budget>, guest: Arc<Share>) -> Limiter {
        Limiter {
            per_memory,
            taken: 0,
            process,
            guest,
            starved: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.per_memory {
            return Ok(false);
        }
        let more = desired.saturating_sub(current) as u64;
        if !self.process.take(more) {
            self.starved = true;
            return Ok(false);
        }
        if !self.guest.memory.take(more) {
            self.process.give(more);
            self.starved = true;
            return Ok(false);
        }
        self.taken += more;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.process.give(self.taken);
        self.guest.memory.give(self.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_comes_out_of_both_budgets_and_goes_back() {
        let process = Arc::new(Budget::new(100));
        let a = Share::new(4, 60);
        let b = Share::new(4, 60);
        let mut la = Limiter::new(50, process.clone(), a.clone());
        let mut lb = Limiter::new(50, process.clone(), b.clone());
        assert!(la.memory_growing(0, 40, None).unwrap());
        // Over the per-memory limit: refused, but not for want of budget.
        assert!(!la.memory_growing(40, 51, None).unwrap());
        assert!(!la.starved);
        // Over the guest's share (60): refused, and nothing is kept.
        let mut la2 = Limiter::new(50, process.clone(), a.clone());
        assert!(!la2.memory_growing(0, 30, None).unwrap());
        assert!(la2.starved);
        assert_eq!(process.left(), 60);
        // Over the process budget (100): b gets 50, then no more.
        assert!(lb.memory_growing(0, 50, None).unwrap());
        let mut lb2 = Limiter::new(50, process.clone(), b.clone());
        assert!(!lb2.memory_growing(0, 20, None).unwrap());
        assert!(lb2.starved);
        drop((la, la2, lb, lb2));
        assert_eq!(process.left(), 100);
        assert_eq!(a.memory.left(), 60);
        assert_eq!(b.memory.left(), 60);
    }
}
