//! The host's store and the AWS credentials it gives, over store
//! connections to the host proxy's control listener (`--control`).
//!
//! One connection at a time, made again after any failure; every call has
//! a deadline, so a host that stops answering costs a retry, never a hung
//! writer. Nothing read here is trusted: objects are opened and checked by
//! the caller, and credentials only authorise calls to KMS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nacre_control::store::{AwsCredentials, ObjectName, StoreClient, StoreError};
use nacre_transport::{Address, Stream};
use tokio::sync::Mutex;

/// How long one call may take: objects are up to a component's size.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials are asked again once they have less than this left.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Why a call to the host's store failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No answer: the link could not be made, broke, or timed out.
    #[error("the host proxy's store at {addr} did not answer: {why}")]
    Unreachable {
        /// `--control`.
        addr: Address,
        /// Why.
        why: String,
    },
    /// The host answered that it could not.
    #[error("the host proxy refused: {0}")]
    Refused(String),
}

/// The host proxy's store, reached at `--control`.
pub struct HostStore {
    addr: Address,
    conn: Mutex<Option<StoreClient<Stream>>>,
    credentials: Mutex<Option<AwsCredentials>>,
}

impl HostStore {
    /// Calls go to the host proxy's control listener at `addr`.
    pub fn new(addr: Address) -> HostStore {
        HostStore {
            addr,
            conn: Mutex::new(None),
            credentials: Mutex::new(None),
        }
    }

    fn unreachable(&self, why: impl ToString) -> HostError {
        HostError::Unreachable {
            addr: self.addr.clone(),
            why: why.to_string(),
        }
    }

    fn name(name: &str) -> Result<ObjectName, HostError> {
        name.parse::<ObjectName>()
            .map_err(|e| HostError::Refused(format!("{name:?} is not a store name: {e}")))
    }

    /// Runs one call on the open connection (opened first if need be);
    /// a failed or late call drops the connection, so the next opens a
    /// fresh one.
    async fn call<R>(
        &self,
        op: impl AsyncFnOnce(&mut StoreClient<Stream>) -> Result<R, StoreError>,
    ) -> Result<R, HostError> {
        let mut slot = self.conn.lock().await;
        let client = match slot.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        let mut client = client;
        match tokio::time::timeout(CALL_TIMEOUT, op(&mut client)).await {
            Ok(Ok(r)) => {
                *slot = Some(client);
                Ok(r)
            }
            Ok(Err(StoreError::Failed(why))) => {
                *slot = Some(client);
                Err(HostError::Refused(why))
            }
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    async fn open(&self) -> Result<StoreClient<Stream>, HostError> {
        let software = concat!("nacre-runtime ", env!("CARGO_PKG_VERSION"));
        let opening = async {
            let stream = nacre_transport::connect(&self.addr)
                .await
                .map_err(|e| self.unreachable(e))?;
            StoreClient::open(stream, software)
                .await
                .map_err(|e| self.unreachable(e))
        };
        tokio::time::timeout(CALL_TIMEOUT, opening)
            .await
            .map_err(|_| self.unreachable(format!("no Hello within {CALL_TIMEOUT:?}")))?
    }

    /// The object at `name`, if the host has it.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let name = Self::name(name)?;
        self.call(async |c| c.get(&name).await).await
    }

    /// The object at `name` if the host has it, refused unread when over
    /// `max` bytes.
    pub async fn get_at_most(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, HostError> {
        let name = Self::name(name)?;
        self.call(async |c| c.get_at_most(&name, max).await).await
    }

    /// Writes `bytes` at `name`.
    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<(), HostError> {
        let name = Self::name(name)?;
        self.call(async |c| c.put(&name, bytes).await).await
    }

    /// Writes `bytes` at `name` unless an object of that name exists;
    /// whether it was written.
    pub async fn put_new(&self, name: &str, bytes: &[u8]) -> Result<bool, HostError> {
        let name = Self::name(name)?;
        self.call(async |c| c.put_new(&name, bytes).await).await
    }

    /// The names under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, HostError> {
        let names = self.call(async |c| c.list(prefix).await).await?;
        Ok(names.iter().map(|n| n.as_str().to_string()).collect())
    }

    /// Removes `name`.
    pub async fn delete(&self, name: &str) -> Result<(), HostError> {
        let name = Self::name(name)?;
        self.call(async |c| c.delete(&name).await).await
    }

    /// The parent's AWS credentials, asked again when they are about to
    /// expire.
    pub async fn credentials(&self) -> Result<AwsCredentials, HostError> {
        let mut cached = self.credentials.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c = self.call(async |c| c.credentials().await).await?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// Whether `c` is valid for a while yet (credentials without an expiry
/// are asked again each time).
fn fresh(c: &AwsCredentials) -> bool {
    let Some(expires) = c.expires_unix else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    expires > now + CREDENTIALS_MARGIN.as_secs()
}
