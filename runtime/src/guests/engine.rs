//! The wasmtime engine, its linker and the epoch ticker.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::EnclaveCtx;
use super::host::Host;
use super::share::Budget;
use crate::egress::Egress;

/// How often the epoch advances. A running guest yields to the executor at
/// every tick, so one guest spinning in a loop never holds a worker thread
/// for longer than this.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each linear memory kept mapped between instances.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// Bytes of each table kept mapped between instances.
const KEEP_RESIDENT_TABLE: usize = 256 << 10;
/// Idle slots that keep their pages, beyond those in use.
const WARM_SLOTS: u32 = 32;

/// Resource limits applied to every guest instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear-memory bytes one instance may grow to.
    pub memory: u64,
    /// Wall-clock time one request may take.
    pub request_timeout: Duration,
    /// Largest request body a guest is given.
    pub max_body: u64,
    /// Guest instances alive at once across the process.
    pub max_instances: u32,
    /// Instances one guest name may have alive at once.
    pub instances_per_guest: u32,
    /// Linear memory all instances together may hold.
    pub memory_total: u64,
}

impl Limits {
    /// Linear memory one guest name may hold: the same share of the total
    /// as its share of the instances.
    pub fn memory_per_guest(&self) -> u64 {
        let share = u128::from(self.memory_total) * u128::from(self.instances_per_guest)
            / u128::from(self.max_instances.max(1));
        u64::try_from(share).unwrap_or(u64::MAX)
    }
}

/// Why the engine could not be built or a component not prepared.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the configuration.
    #[error("cannot configure wasmtime: {0}")]
    Config(String),
}

/// The process-wide engine and linker; cheap to clone.
#[derive(Clone)]
pub struct GuestEngine {
    engine: Engine,
    linker: Linker<Host>,
    limits: Limits,
    memory: Arc<Budget>,
    enclave: Arc<EnclaveCtx>,
    egress: Arc<Egress>,
}

impl GuestEngine {
    /// Builds the engine (pooling allocator, epoch interruption) and links
    /// all of WASI p2 plus wasi:http, then starts the epoch ticker thread.
    pub fn new(
        limits: Limits,
        enclave: Arc<EnclaveCtx>,
        egress: Arc<Egress>,
    ) -> Result<Self, EngineError> {
        let err = |e: wasmtime::Error| EngineError::Config(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        let memory = usize::try_from(limits.memory)
            .map_err(|_| EngineError::Config("--guest-memory too large".into()))?;
        pool.max_memory_size(memory);
        // A Rust guest is a few core instances, memories and tables; size
        // the pool so `max_instances` requests can run at once.
        let n = limits.max_instances;
        pool.total_component_instances(n);
        pool.total_core_instances(n * 4);
        pool.total_memories(n * 2);
        pool.total_tables(n * 4);
        pool.total_stacks(n);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        pool.max_core_instances_per_component(16);
        // A fresh instance per request dirties the same few pages of its
        // slot every time. Resetting them in place (PAGEMAP_SCAN finds the
        // dirty ones, then memset or a copy from the image) instead of
        // madvise + page faults on the next request halved the per-request
        // cost (BENCHMARKS.md, scenario d). Contents are still reset to
        // the initial image between requests; only the pages stay mapped.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
        pool.table_keep_resident(KEEP_RESIDENT_TABLE);
        // Bounds the memory idle slots keep resident.
        pool.max_unused_warm_slots(WARM_SLOTS);

        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(err)?;

        let linker = link(&engine).map_err(err)?;

        spawn_ticker(&engine)?;
        Ok(GuestEngine {
            engine,
            linker,
            limits,
            memory: Arc::new(Budget::new(limits.memory_total)),
            enclave,
            egress,
        })
    }

    /// The limits every instance gets.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Linear memory not held by any instance now.
    pub fn memory_left(&self) -> u64 {
        self.memory.left()
    }

    pub(crate) fn memory(&self) -> Arc<Budget> {
        self.memory.clone()
    }

    pub(crate) fn enclave(&self) -> Arc<EnclaveCtx> {
        self.enclave.clone()
    }

    pub(crate) fn egress(&self) -> Arc<Egress> {
        self.egress.clone()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` and pre-instantiates them against the linker:
    /// everything that can fail before a request arrives fails here, with
    /// a message for the uploader. [`Code::new`] then checks the exports.
    pub(crate) fn prepare(&self, bytes: &[u8]) -> Result<InstancePre<Host>, String> {
        prepare(&self.engine, &self.linker, bytes)
    }
}

/// A guest's pre-instantiated code, as what it is deployed to serve.
#[derive(Clone)]
pub(crate) enum Code {
    /// An HTTP guest: `wasi:http/incoming-handler`, an instance per request.
    Http(ProxyPre<Host>),
    /// A TCP guest: `wasi:cli/run`, one long-lived instance that listens.
    Tcp(CommandPre<Host>),
}

impl Code {
    /// `pre` as a TCP guest (`tcp`) or an HTTP guest, or why it cannot be.
    pub(crate) fn new(pre: InstancePre<Host>, tcp: bool) -> Result<Code, String> {
        if tcp {
            return CommandPre::new(pre).map(Code::Tcp).map_err(|e| {
                format!("the component does not export wasi:cli/run@0.2.x (a TCP guest is a command that listens with wasi:sockets, such as one built with wstd's TcpListener): {e:#}")
            });
        }
        ProxyPre::new(pre).map(Code::Http).map_err(|e| {
            format!("the component does not export wasi:http/incoming-handler@0.2.x (the wasi:http/proxy world); a wasi:cli command that listens with wasi:sockets is deployed with tcp=PORT: {e:#}")
        })
    }
}

/// Every interface a guest may import: all of WASI p2 (Rust guests import
/// wasi:cli/* even when they only serve HTTP, and components made for
/// `wasmtime serve -Scli` do too), wasi:http, nacre:enclave, wasi:keyvalue.
fn link(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    link_wasi(&mut linker)?;
    crate::sockets::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    super::enclave::add_to_linker(&mut linker)?;
    super::kv::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// wasmtime-wasi's WASI p2 (what its `add_to_linker_async` links), but
/// for `wasi:sockets/tcp`, `tcp-create-socket` and `ip-name-lookup`, which
/// [`crate::sockets`] provides without operating-system sockets.
fn link_wasi(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    use wasmtime_wasi::WasiView;
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
    use wasmtime_wasi::sockets::WasiSockets;
    use wasmtime_wasi_io::bindings::wasi::io;

    io::error::add_to_linker::<Host, Io>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<Host, Io>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<Host, Io>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<Host, WasiClocks>(l, Host::clocks)?;
    clocks::monotonic_clock::add_to_linker::<Host, WasiClocks>(l, Host::clocks)?;
    filesystem::preopens::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    filesystem::types::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    random::random::add_to_linker::<Host, WasiRandom>(l, Host::random)?;
    random::insecure::add_to_linker::<Host, WasiRandom>(l, Host::random)?;
    random::insecure_seed::add_to_linker::<Host, WasiRandom>(l, Host::random)?;
    cli::exit::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::environment::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_input::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_output::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    let options = sockets::network::LinkOptions::default();
    sockets::instance_network::add_to_linker::<Host, WasiSockets>(l, Host::sockets_wasi)?;
    sockets::network::add_to_linker::<Host, WasiSockets>(l, &options, Host::sockets_wasi)?;
    // UDP stays wasmtime-wasi's, closed by each store's context.
    sockets::udp::add_to_linker::<Host, WasiSockets>(l, Host::sockets_wasi)?;
    sockets::udp_create_socket::add_to_linker::<Host, WasiSockets>(l, Host::sockets_wasi)?;
    Ok(())
}

/// `wasi:io`'s view of a store: its resource table.
struct Io;

impl wasmtime::component::HasData for Io {
    type Data<'a> = &'a mut wasmtime::component::ResourceTable;
}

/// Checks that `bytes` is a guest the runtime would deploy (a component
/// that links against [`link`]'s interfaces and exports
/// wasi:http/incoming-handler, or wasi:cli/run for a TCP guest: `tcp`),
/// with an engine of its own and nothing else: `nacre-runtime --check`
/// runs it before an image is built.
pub fn check_component(bytes: &[u8], tcp: bool) -> Result<(), String> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // The same code generation settings as the serving engine, so what
    // compiles here compiles there.
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
    let linker = link(&engine).map_err(|e| format!("{e:#}"))?;
    Code::new(prepare(&engine, &linker, bytes)?, tcp).map(drop)
}

fn prepare(
    engine: &Engine,
    linker: &Linker<Host>,
    bytes: &[u8],
) -> Result<InstancePre<Host>, String> {
    if bytes.starts_with(b"\0asm\x01\0\0\0") {
        return Err(
                "this is a core WebAssembly module, not a component: build with `--target wasm32-wasip2` (or run `wasm-tools component new`)"
                    .into(),
            );
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
    linker
        .instantiate_pre(&component)
        .map_err(|e| format!("the component cannot be linked: {e:#}"))
}

/// One thread for the whole process; it exits when the engine is dropped.
fn spawn_ticker(engine: &Engine) -> Result<(), EngineError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("nacre-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(drop)
        // Without ticks no deadline fires: refuse to run guests that could
        // never be stopped.
        .map_err(|e| EngineError::Config(format!("cannot start the epoch thread: {e}")))
}
