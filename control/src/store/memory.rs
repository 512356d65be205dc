//! A [`Store`] in memory, for tests and development.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Mutex;

use super::{AwsCredentials, ObjectName, Store};

/// Objects in a map and fixed credentials (none unless given). Nothing is
/// durable: for tests and development only.
#[derive(Debug)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<ObjectName, Vec<u8>>>,
    credentials: Mutex<Result<AwsCredentials, String>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            objects: Mutex::default(),
            credentials: Mutex::new(Err("no AWS credentials in this memory store".into())),
        }
    }
}

impl MemoryStore {
    /// An empty store without credentials.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Sets what [`Store::credentials`] answers.
    pub fn set_credentials(&self, credentials: Result<AwsCredentials, String>) {
        *lock(&self.credentials) = credentials;
    }

    /// The names stored now.
    pub fn names(&self) -> Vec<ObjectName> {
        lock(&self.objects).keys().cloned().collect()
    }
}

/// The lock's contents; a panic while it was held left them whole (each
/// change is one map operation).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store for MemoryStore {
    async fn get(&self, name: &ObjectName) -> Result<Option<Vec<u8>>, String> {
        Ok(lock(&self.objects).get(name).cloned())
    }

    async fn put(&self, name: &ObjectName, data: Vec<u8>) -> Result<(), String> {
        lock(&self.objects).insert(name.clone(), data);
        Ok(())
    }

    async fn put_new(&self, name: &ObjectName, data: Vec<u8>) -> Result<bool, String> {
        match lock(&self.objects).entry(name.clone()) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(slot) => {
                slot.insert(data);
                Ok(true)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectName>, String> {
        Ok(lock(&self.objects)
            .keys()
            .filter(|n| n.as_str().starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn delete(&self, name: &ObjectName) -> Result<(), String> {
        lock(&self.objects).remove(name);
        Ok(())
    }

    async fn credentials(&self) -> Result<AwsCredentials, String> {
        lock(&self.credentials).clone()
    }
}
