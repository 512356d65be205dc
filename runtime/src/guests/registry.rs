//! Deployed guests, the compile cache and the manifest.
//!
//! The guest table is an immutable [`Snapshot`] behind an [`ArcSwap`]:
//! a request takes the current snapshot once and keeps its `Arc<Guest>`
//! until it finishes, so replacing or deleting a guest never disturbs
//! requests in flight, and readers never wait for writers.
//!
//! Every change is also published ([`Registry::subscribe`]), and each
//! guest keeps its component's bytes, so a follower (another enclave of
//! the deployment) can mirror the table exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use nacre_api::GuestInfo;
use nacre_transport::AllowList;
use sha2::{Digest, Sha256};
use wasmtime::component::InstancePre;

use super::DeployError;
use super::engine::Code;
use super::host::Host;
use super::stats::GuestStats;
use super::{GuestConfig, GuestEngine, GuestName, Share};

/// Compiled components kept while no guest uses them, for fast redeploys.
const CACHE_SPARE: usize = 16;

/// A deployed guest: its configuration and its pre-instantiated component.
pub struct Guest {
    /// Name, route and allow list.
    pub config: Arc<GuestConfig>,
    /// SHA-256 of the component bytes.
    pub sha256: [u8; 32],
    /// The component's bytes, as uploaded.
    pub bytes: Bytes,
    pub(crate) code: Code,
    /// Counters of its name (kept across redeploys).
    pub stats: Arc<GuestStats>,
    /// The instances and memory its name may hold.
    pub share: Arc<Share>,
}

impl Guest {
    /// The admin API's view of this guest.
    pub fn info(&self) -> GuestInfo {
        super::listing::info(&self.config, &self.sha256, self.bytes.len())
    }
}

/// One consistent view of the guest table and its manifest.
pub struct Snapshot {
    guests: BTreeMap<GuestName, Arc<Guest>>,
    /// Longest route first, so the first match is the longest prefix.
    routes: Vec<Arc<Guest>>,
    /// Boot guests still compiling (without --wait-for-app).
    starting: Vec<Arc<GuestConfig>>,
    manifest: Bytes,
    /// SHA-256 of `manifest`, bound into every runtime document.
    manifest_sha256: [u8; 32],
}

impl Snapshot {
    fn new(guests: BTreeMap<GuestName, Arc<Guest>>, starting: Vec<Arc<GuestConfig>>) -> Snapshot {
        let mut routes: Vec<_> = guests
            .values()
            .filter(|g| g.config.tcp.is_none())
            .cloned()
            .collect();
        routes.sort_by_key(|g| std::cmp::Reverse(g.config.route.as_str().len()));
        let manifest = super::listing::manifest(guests.values().map(|g| (&*g.config, &g.sha256)));
        let manifest_sha256 = Sha256::digest(&manifest).into();
        Snapshot {
            guests,
            routes,
            starting,
            manifest,
            manifest_sha256,
        }
    }

    /// The guest serving `path` (longest route prefix) and the path it sees.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Arc<Guest>, &'p str)> {
        self.routes
            .iter()
            .find_map(|g| g.config.route.strip(path).map(|rest| (g, rest)))
    }

    /// The boot guest, still compiling, that will serve `path`.
    pub fn starting(&self, path: &str) -> Option<&GuestName> {
        self.starting
            .iter()
            .filter(|c| c.tcp.is_none() && c.route.strip(path).is_some())
            .max_by_key(|c| c.route.as_str().len())
            .map(|c| &c.name)
    }

    /// The exact manifest bytes (docs/attestation.md).
    pub fn manifest(&self) -> &Bytes {
        &self.manifest
    }

    /// SHA-256 of [`Snapshot::manifest`].
    pub fn manifest_sha256(&self) -> [u8; 32] {
        self.manifest_sha256
    }

    /// The guest named `name`.
    pub fn get(&self, name: &GuestName) -> Option<&Arc<Guest>> {
        self.guests.get(name)
    }

    /// Every guest, sorted by name.
    pub fn guests(&self) -> impl Iterator<Item = &Arc<Guest>> {
        self.guests.values()
    }

    fn is_starting(&self, name: &GuestName) -> bool {
        self.starting.iter().any(|c| &c.name == name)
    }

    /// The boot guests still starting, but for `name`.
    fn starting_but(&self, name: &GuestName) -> Vec<Arc<GuestConfig>> {
        self.starting
            .iter()
            .filter(|c| &c.name != name)
            .cloned()
            .collect()
    }
}

/// The result of a successful deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// No guest had that name before.
    Created(GuestInfo),
    /// A guest of that name was replaced.
    Replaced(GuestInfo),
}

/// Who asks for a deploy: the order of changes to the guest table depends
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The admin API: applied in the order requests finish.
    Admin,
    /// A `--guest` flag compiled after the listener opened: ordered before
    /// every admin change, so it lands only if its name is still starting.
    Boot,
}

/// The guest table, the compile cache and the engine behind them.
pub struct Registry {
    engine: GuestEngine,
    current: ArcSwap<Snapshot>,
    /// Every snapshot stored, for followers.
    changes: tokio::sync::watch::Sender<Arc<Snapshot>>,
    /// Serializes writers; readers never take it.
    write: tokio::sync::Mutex<()>,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
    /// Compiling is CPU-heavy: at most one at a time, off the async threads.
    compile: tokio::sync::Semaphore,
    egress_cap: Option<AllowList>,
    /// Ports the runtime's own listeners hold, by flag: no TCP guest's.
    reserved_ports: BTreeMap<u16, &'static str>,
    clock: AtomicU64,
    /// Counters by guest name, kept after a name is removed.
    stats: Mutex<BTreeMap<GuestName, Arc<GuestStats>>>,
    changes_made: AtomicU64,
    compiles: AtomicU64,
    compile_nanos: AtomicU64,
}

struct CacheEntry {
    pre: InstancePre<Host>,
    last_used: u64,
}

impl Registry {
    /// An empty registry; `egress_cap` is `--egress-allow` (None: no cap).
    pub fn new(engine: GuestEngine, egress_cap: Option<AllowList>) -> Registry {
        let empty = Arc::new(Snapshot::new(BTreeMap::new(), Vec::new()));
        Registry {
            engine,
            current: ArcSwap::from(empty.clone()),
            changes: tokio::sync::watch::Sender::new(empty),
            write: tokio::sync::Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
            compile: tokio::sync::Semaphore::new(1),
            egress_cap,
            reserved_ports: BTreeMap::new(),
            clock: AtomicU64::new(0),
            stats: Mutex::new(BTreeMap::new()),
            changes_made: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            compile_nanos: AtomicU64::new(0),
        }
    }

    /// This registry, refusing TCP guests on `ports` (the runtime's own
    /// listeners', by flag).
    pub fn with_reserved_ports(self, ports: BTreeMap<u16, &'static str>) -> Registry {
        Registry {
            reserved_ports: ports,
            ..self
        }
    }

    /// Every guest name's counters, deployed now or before.
    pub fn stats(&self) -> Vec<(GuestName, Arc<GuestStats>)> {
        self.stats
            .lock()
            .map(|s| s.iter().map(|(n, st)| (n.clone(), st.clone())).collect())
            .unwrap_or_default()
    }

    /// Components compiled so far, and the seconds it took in all.
    pub fn compile_totals(&self) -> (u64, f64) {
        (
            self.compiles.load(Ordering::Relaxed),
            self.compile_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// Changes made to the guest table so far.
    pub fn changes_made(&self) -> u64 {
        self.changes_made.load(Ordering::Relaxed)
    }

    fn stats_for(&self, name: &GuestName) -> Arc<GuestStats> {
        match self.stats.lock() {
            Ok(mut s) => s.entry(name.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The engine guests run on.
    pub fn engine(&self) -> &GuestEngine {
        &self.engine
    }

    /// The current guest table.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Every change of the guest table from now on, starting with the
    /// current one: a follower mirrors the table (configurations and
    /// component bytes) from this.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.changes.subscribe()
    }

    /// Makes `next` the guest table and publishes it; under the write
    /// lock, so publications come in the order of the changes.
    fn publish(&self, next: Snapshot) {
        self.changes_made.fetch_add(1, Ordering::Relaxed);
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.changes.send_replace(next);
    }

    /// Number of compiled components held in memory.
    pub fn cached_components(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Records boot guests that are still compiling, so their routes answer
    /// 503 instead of 404 meanwhile.
    pub async fn mark_starting(&self, configs: Vec<GuestConfig>) {
        let _w = self.write.lock().await;
        let cur = self.current.load();
        let starting = configs.into_iter().map(Arc::new).collect();
        self.publish(Snapshot::new(cur.guests.clone(), starting));
    }

    /// Compiles (or finds in the cache) and installs a guest, atomically
    /// replacing any guest of the same name.
    pub async fn deploy(&self, config: GuestConfig, bytes: Bytes) -> Result<Deployed, DeployError> {
        self.deploy_from(Source::Admin, config, bytes).await
    }

    /// Installs a boot guest that [`Registry::mark_starting`] recorded.
    ///
    /// Boot guests come first in the order of changes: an admin deploy or
    /// delete of the same name made while this one compiled is later, so it
    /// stands, and this one is dropped ([`DeployError::Superseded`]).
    pub async fn deploy_boot(
        &self,
        config: GuestConfig,
        bytes: Bytes,
    ) -> Result<Deployed, DeployError> {
        self.deploy_from(Source::Boot, config, bytes).await
    }

    /// A boot guest that could not be deployed stops being "starting". A
    /// guest of that name deployed through the admin API meanwhile stays.
    pub async fn abandon_boot(&self, name: &GuestName) {
        let _w = self.write.lock().await;
        let cur = self.current.load();
        if cur.is_starting(name) {
            let starting = cur.starting_but(name);
            self.publish(Snapshot::new(cur.guests.clone(), starting));
        }
    }

    async fn deploy_from(
        &self,
        source: Source,
        config: GuestConfig,
        bytes: Bytes,
    ) -> Result<Deployed, DeployError> {
        if let Some(rule) = self
            .egress_cap
            .as_ref()
            .and_then(|cap| cap.first_uncovered(&config.allow))
        {
            return Err(DeployError::NotAllowed(rule.to_string()));
        }
        // Hashing 16 MiB takes some 10 ms: off the serving thread, whose
        // other connections would wait for it.
        let hashed = bytes.clone();
        let sha256: [u8; 32] = tokio::task::spawn_blocking(move || Sha256::digest(&hashed).into())
            .await
            .map_err(|e| DeployError::Invalid(format!("hashing failed: {e}")))?;
        let pre = self.compiled(sha256, bytes.clone()).await?;
        let code = Code::new(pre, config.tcp.is_some()).map_err(DeployError::Invalid)?;

        let _w = self.write.lock().await;
        let cur = self.current.load();
        let name = &config.name;
        if source == Source::Boot && !cur.is_starting(name) {
            return Err(DeployError::Superseded(name.to_string()));
        }
        let others = || cur.guests.values().filter(|g| &g.config.name != name);
        match config.tcp {
            None => {
                if let Some(other) =
                    others().find(|g| g.config.tcp.is_none() && g.config.route == config.route)
                {
                    return Err(DeployError::RouteTaken {
                        route: config.route.to_string(),
                        by: other.config.name.to_string(),
                    });
                }
            }
            Some(tcp) => {
                if let Some(flag) = self.reserved_ports.get(&tcp.port) {
                    return Err(DeployError::PortReserved {
                        port: tcp.port,
                        flag,
                    });
                }
                if let Some(other) =
                    others().find(|g| g.config.tcp.is_some_and(|t| t.port == tcp.port))
                {
                    return Err(DeployError::PortTaken {
                        port: tcp.port,
                        by: other.config.name.to_string(),
                    });
                }
            }
        }
        // The share belongs to the name: instances of the code being
        // replaced still count against it until they finish.
        let share = match cur.guests.get(name) {
            Some(old) => old.share.clone(),
            None => {
                let limits = self.engine.limits();
                Share::new(limits.instances_per_guest, limits.memory_per_guest())
            }
        };
        let stats = self.stats_for(&config.name);
        let guest = Arc::new(Guest {
            config: Arc::new(config),
            sha256,
            bytes,
            code,
            stats,
            share,
        });
        let name = &guest.config.name;
        let mut guests = cur.guests.clone();
        let replaced = guests.insert(name.clone(), guest.clone()).is_some();
        let starting = cur.starting_but(name);
        self.publish(Snapshot::new(guests, starting));
        drop(_w);
        self.trim_cache();
        match guest.config.tcp {
            Some(tcp) => {
                tracing::info!(guest = %name, sha256 = %hex::encode(sha256), port = tcp.port, tls = %tcp.tls, replaced, "TCP guest deployed")
            }
            None => {
                tracing::info!(guest = %name, sha256 = %hex::encode(sha256), route = %guest.config.route, replaced, "guest deployed")
            }
        }
        let info = guest.info();
        Ok(if replaced {
            Deployed::Replaced(info)
        } else {
            Deployed::Created(info)
        })
    }

    /// Removes a guest, or a boot guest still starting; requests in flight
    /// on it finish. False when there was neither.
    pub async fn remove(&self, name: &GuestName) -> bool {
        let _w = self.write.lock().await;
        let cur = self.current.load();
        let mut guests = cur.guests.clone();
        let was_guest = guests.remove(name).is_some();
        if !was_guest && !cur.is_starting(name) {
            return false;
        }
        let starting = cur.starting_but(name);
        self.publish(Snapshot::new(guests, starting));
        drop(_w);
        self.trim_cache();
        tracing::info!(guest = %name, "guest removed");
        true
    }

    async fn compiled(
        &self,
        sha256: [u8; 32],
        bytes: Bytes,
    ) -> Result<InstancePre<Host>, DeployError> {
        if let Some(pre) = self.cache_get(&sha256) {
            return Ok(pre);
        }
        let _slot = self
            .compile
            .acquire()
            .await
            .map_err(|_| DeployError::Invalid("the runtime is shutting down".into()))?;
        // Another upload of the same bytes may have finished while we waited.
        if let Some(pre) = self.cache_get(&sha256) {
            return Ok(pre);
        }
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let pre = tokio::task::spawn_blocking(move || engine.prepare(&bytes))
            .await
            .map_err(|e| DeployError::Invalid(format!("compilation failed: {e}")))?
            .map_err(DeployError::Invalid)?;
        tracing::info!(sha256 = %hex::encode(sha256), elapsed = ?started.elapsed(), "component compiled");
        self.compiles.fetch_add(1, Ordering::Relaxed);
        self.compile_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                sha256,
                CacheEntry {
                    pre: pre.clone(),
                    last_used: tick,
                },
            );
        }
        Ok(pre)
    }

    fn cache_get(&self, sha256: &[u8; 32]) -> Option<InstancePre<Host>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.lock().ok()?;
        let e = cache.get_mut(sha256)?;
        e.last_used = tick;
        Some(e.pre.clone())
    }

    /// Keeps every component a guest uses plus the most recently used
    /// spares, dropping the rest.
    fn trim_cache(&self) {
        let snap = self.snapshot();
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let in_use = |sha: &[u8; 32]| snap.guests.values().any(|g| &g.sha256 == sha);
        let mut spares: Vec<([u8; 32], u64)> = cache
            .iter()
            .filter(|(sha, _)| !in_use(sha))
            .map(|(sha, e)| (*sha, e.last_used))
            .collect();
        if spares.len() > CACHE_SPARE {
            spares.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
            for (sha, _) in &spares[CACHE_SPARE..] {
                cache.remove(sha);
            }
        }
    }
}
