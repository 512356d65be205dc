//! A guest that misbehaves on request, for the runtime's fault tests.
//!
//! - `/ok`: 200 `ok`
//! - `/trap`: traps (wasm `unreachable`)
//! - `/trap-after-head`: sends a 200 head and part of the body, then traps
//! - `/loop`: spins forever
//! - `/sleep?MS`: blocks in a host call for MS milliseconds, then 200
//! - `/membomb`: allocates until memory runs out (the allocator aborts)
//! - `/grow`: asks for 1 GiB more memory at once and reports what
//!   `memory.grow` returned (-1: refused)
//! - `/touch?MIB,MS`: allocates MIB MiB, writes every page, holds it for
//!   MS milliseconds, then 200 (the allocator aborts, a trap, when memory
//!   is refused)
//! - `/body`: reads the whole body and answers its length
//! - `/log`: writes a line to stdout and one to stderr
//! - `/drip?N,MS`: sends a 200 head, then N one-byte chunks, spinning MS
//!   milliseconds of CPU between them
//! - `/huge-error?BYTES`: answers with the error code `internal-error`
//!   carrying BYTES (default 16 MiB) of DEL (0x7f), a string whose
//!   `Debug` escaping is six times as long
//! - `/remember?TOKEN`: counts its calls in a static and keeps the first
//!   TOKEN it saw on the heap, and answers `calls=N first=TOKEN`: an
//!   instance that served a request before would say so

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use guest_test_support::respond;
use wasip2::http::types::{ErrorCode, Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Faulty);

struct Faulty;

/// Calls this instance has served (`/remember`).
static CALLS: AtomicU32 = AtomicU32::new(0);
/// The first token this instance was given (`/remember`), on the heap.
static FIRST: OnceLock<String> = OnceLock::new();

fn body_len(request: &IncomingRequest) -> Result<u64, String> {
    let body = request
        .consume()
        .map_err(|_| "body already taken".to_string())?;
    let stream = body.stream().map_err(|_| "no body stream".to_string())?;
    let mut n = 0u64;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => n += chunk.len() as u64,
            Err(StreamError::Closed) => return Ok(n),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Faulty {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let pq = request.path_with_query().unwrap_or_default();
        let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
        match path {
            "/ok" => respond(out, 200, "ok"),
            "/trap" => core::arch::wasm32::unreachable(),
            "/trap-after-head" => {
                let resp = OutgoingResponse::new(Fields::new());
                let Ok(body) = resp.body() else { return };
                ResponseOutparam::set(out, Ok(resp));
                if let Ok(w) = body.write() {
                    let _ = w.blocking_write_and_flush(b"partial ");
                }
                core::arch::wasm32::unreachable()
            }
            "/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/sleep" => {
                let ms: u64 = query.parse().unwrap_or(1000);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, &format!("slept {ms} ms"));
            }
            "/membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/grow" => {
                let pages = (1usize << 30) / 65536;
                let r = core::arch::wasm32::memory_grow(0, pages) as isize;
                respond(out, 200, &format!("memory.grow returned {r}"));
            }
            "/touch" => {
                let (mib, ms) = query.split_once(',').unwrap_or((query, "0"));
                let mib: usize = mib.parse().unwrap_or(1);
                let ms: u64 = ms.parse().unwrap_or(0);
                let mut hoard = vec![0u8; mib << 20];
                for page in hoard.chunks_mut(4096) {
                    page[0] = 1;
                }
                std::hint::black_box(&hoard);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, &format!("touched {mib} MiB"));
            }
            "/body" => match body_len(&request) {
                Ok(n) => respond(out, 200, &n.to_string()),
                Err(e) => respond(out, 400, &format!("body error: {e}")),
            },
            "/log" => {
                println!("faulty says hello on stdout");
                eprintln!("faulty says hello on stderr");
                respond(out, 200, "logged");
            }
            "/drip" => {
                let (n, ms) = query.split_once(',').unwrap_or(("10", "10"));
                let (n, ms): (u32, u64) = (n.parse().unwrap_or(10), ms.parse().unwrap_or(10));
                let resp = OutgoingResponse::new(Fields::new());
                let Ok(body) = resp.body() else { return };
                ResponseOutparam::set(out, Ok(resp));
                if let Ok(w) = body.write() {
                    for _ in 0..n {
                        if w.blocking_write_and_flush(b".").is_err() {
                            return;
                        }
                        let until = wasip2::clocks::monotonic_clock::now() + ms * 1_000_000;
                        while wasip2::clocks::monotonic_clock::now() < until {
                            std::hint::black_box(());
                        }
                    }
                }
                let _ = wasip2::http::types::OutgoingBody::finish(body, None);
            }
            "/huge-error" => {
                let bytes: usize = query.parse().unwrap_or(16 << 20);
                let huge = "\u{7f}".repeat(bytes);
                ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(huge))));
            }
            "/remember" => {
                let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                let first = FIRST.get_or_init(|| query.to_string());
                respond(out, 200, &format!("calls={calls} first={first}"));
            }
            _ => respond(out, 404, "unknown faulty path"),
        }
    }
}
