//! `nacre:enclave/state` in a deployment of several enclaves: written on the
//! leader, read everywhere, moved to workers with the rest of the key
//! material. nitriding's 410 and 503 become the WIT's
//! `not-leader` and `designation-in-progress`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::fleet::Role;
use crate::guests::GuestName;
use crate::guests::state::{StateError, StateFuture, StateStore};

/// Each guest name's slot, behind the role of this enclave.
pub struct SyncedState {
    slots: Mutex<BTreeMap<GuestName, Arc<[u8]>>>,
    role: watch::Receiver<Role>,
    /// Woken at every write on the leader, so workers get it at once.
    pub(super) changed: Arc<Notify>,
    /// Whether this enclave holds the deployment's state yet (a fresh
    /// worker does not until its first sync).
    pub(super) held: std::sync::atomic::AtomicBool,
    /// Counts changes, so a snapshot writer sees there is something new.
    generation: std::sync::atomic::AtomicU64,
}

impl SyncedState {
    /// Empty slots, answering by `role`.
    pub fn new(role: watch::Receiver<Role>) -> SyncedState {
        SyncedState {
            slots: Mutex::new(BTreeMap::new()),
            role,
            changed: Arc::new(Notify::new()),
            held: std::sync::atomic::AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Changes so far (puts and imports).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Every slot, for the payload.
    pub(crate) fn export(&self) -> BTreeMap<String, Arc<[u8]>> {
        self.slots
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Replaces every slot with the leader's.
    pub(crate) fn import(&self, slots: BTreeMap<String, Vec<u8>>) {
        let parsed: BTreeMap<GuestName, Arc<[u8]>> = slots
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, Arc::from(v))))
            .collect();
        if let Ok(mut s) = self.slots.lock() {
            *s = parsed;
        }
        self.bump();
        self.held.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl SyncedState {
    /// The state of `guest`, answered at once from this enclave's copy
    /// ([`StateStore::get`] is this, wrapped).
    pub fn read(&self, guest: &GuestName) -> Result<Option<Arc<[u8]>>, StateError> {
        let designating = matches!(*self.role.borrow(), Role::Designating);
        if designating && !self.held.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StateError::DesignationInProgress);
        }
        Ok(self.slots.lock().ok().and_then(|s| s.get(guest).cloned()))
    }

    /// Replaces the state of `guest`, on the leader (or alone) only
    /// ([`StateStore::put`] is this, wrapped).
    pub fn write(&self, guest: &GuestName, value: Arc<[u8]>) -> Result<(), StateError> {
        match &*self.role.borrow() {
            Role::Leader | Role::Alone => {}
            Role::Worker { .. } => return Err(StateError::NotLeader),
            Role::Designating => return Err(StateError::DesignationInProgress),
        }
        if let Ok(mut s) = self.slots.lock() {
            s.insert(guest.clone(), value);
        }
        self.bump();
        self.changed.notify_one();
        Ok(())
    }
}

impl StateStore for SyncedState {
    fn get<'a>(&'a self, guest: &'a GuestName) -> StateFuture<'a, Option<Arc<[u8]>>> {
        Box::pin(std::future::ready(self.read(guest)))
    }

    fn put<'a>(&'a self, guest: &'a GuestName, value: Arc<[u8]>) -> StateFuture<'a, ()> {
        Box::pin(std::future::ready(self.write(guest, value)))
    }
}

impl SyncedState {
    /// Replaces the state of `guest` whatever this enclave's role: a write
    /// the deployment's replicated log committed. Nothing is pushed (the
    /// log is what moves it).
    pub fn store(&self, guest: &GuestName, value: Arc<[u8]>) {
        if let Ok(mut s) = self.slots.lock() {
            s.insert(guest.clone(), value);
        }
        self.bump();
    }

    /// The state of `guest` in this enclave's copy, whatever its role.
    pub fn peek(&self, guest: &GuestName) -> Option<Arc<[u8]>> {
        self.slots.lock().ok().and_then(|s| s.get(guest).cloned())
    }
}
