//! `nacre:enclave/state`: one application-state slot per guest name.
//!
//! Behind [`StateStore`]: [`LocalState`] keeps the slots in this enclave
//! (what `state` is without `--fqdn-leader`); a store replicated from the
//! leader is another implementation, linked by the same host functions.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::GuestName;
pub use super::bindings::nacre::enclave::state::StateError;

/// Largest application state (`state.put`).
pub const MAX_STATE: usize = 1 << 20;

/// A state call in progress: asynchronous, so a store may reach other
/// enclaves (a replicated log) before it answers.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// Each guest name's state slot: no guest reads or replaces another's.
pub trait StateStore: Send + Sync + 'static {
    /// The state of `guest`, if any was put.
    fn get<'a>(&'a self, guest: &'a GuestName) -> StateFuture<'a, Option<Arc<[u8]>>>;
    /// Replaces the state of `guest`; `value` is at most [`MAX_STATE`]
    /// bytes (the host function checks before copying it).
    fn put<'a>(&'a self, guest: &'a GuestName, value: Arc<[u8]>) -> StateFuture<'a, ()>;
}

/// The slots in this enclave's memory, for its life.
#[derive(Default)]
pub struct LocalState {
    slots: Mutex<HashMap<GuestName, Arc<[u8]>>>,
}

impl StateStore for LocalState {
    fn get<'a>(&'a self, guest: &'a GuestName) -> StateFuture<'a, Option<Arc<[u8]>>> {
        let value = self
            .slots
            .lock()
            .ok()
            .and_then(|all| all.get(guest).cloned());
        Box::pin(std::future::ready(Ok(value)))
    }

    fn put<'a>(&'a self, guest: &'a GuestName, value: Arc<[u8]>) -> StateFuture<'a, ()> {
        if let Ok(mut all) = self.slots.lock() {
            all.insert(guest.clone(), value);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_slot_per_guest_name() {
        let s = LocalState::default();
        let (a, b): (GuestName, GuestName) = ("a".parse().unwrap(), "b".parse().unwrap());
        s.put(&a, Arc::from(&b"alpha"[..])).await.unwrap();
        assert_eq!(s.get(&b).await.unwrap(), None);
        assert_eq!(s.get(&a).await.unwrap().as_deref(), Some(&b"alpha"[..]));
    }
}
