//! `tcp-probe`: a TCP guest for the tests, hostile on request. At start it
//! tries to bind addresses it was not given (and says, in its output,
//! what happened), then listens where `NACRE_TCP_ADDR` says. Each
//! connection is a line protocol; each command answers one line:
//!
//! - `echo TEXT`: `TEXT`.
//! - `sockets N`: opens N sockets at once: `created K of N; then: ERROR`.
//! - `lookup NAME`: the addresses NAME resolves to, or the error.
//! - `connect HOST:PORT`: `connected` or the error.
//! - `redis HOST:PORT KEY VALUE`: `SET` then `GET` over RESP: `got VALUE`.
//! - `collect`: reads until the client's end, then logs how it ended
//!   (`probe: collect ended: ...`): clean, or an error.
//! - `kv-incr KEY`: increments KEY in its key-value bucket: `count N`.
//! - `tls-get HOST:PORT PATH CA_DER_HEX`: TLS of its own (rustls in the
//!   guest) to HOST, trusting only that CA: `GET PATH` over HTTP/1.1,
//!   answered `STATUS LINE; N bytes` (the whole response) or the error.
//! - `attest NONCE_HEX`: its attestation document with that nonce, in hex.
//! - `deaf`: never reads from this connection again (nor answers).
//! - `spin`: loops for ever (this instance only).
//! - `trap`: traps (the runtime starts a new instance).

mod tls_get;

use wasip2::sockets::network::IpAddressFamily;
use wasip2::sockets::tcp_create_socket::create_tcp_socket;
use wstd::io::{self, AsyncRead, AsyncWrite};
use wstd::iter::AsyncIterator;
use wstd::net::{TcpListener, TcpStream};

#[wstd::main]
async fn main() -> io::Result<()> {
    let addr = std::env::var("NACRE_TCP_ADDR").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7000);
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    let outside = format!("10.1.2.3:{port}");
    for wrong in [other_port.as_str(), outside.as_str(), "127.0.0.1:0"] {
        match TcpListener::bind(wrong).await {
            Ok(_) => println!("probe: bind {wrong}: allowed"),
            Err(e) => println!("probe: bind {wrong}: refused: {e}"),
        }
    }
    let listener = TcpListener::bind(&addr).await?;
    match TcpListener::bind(&addr).await {
        Ok(_) => println!("probe: second listener on {addr}: allowed"),
        Err(e) => println!("probe: second listener on {addr}: refused: {e}"),
    }
    println!("probe: listening on {addr}");
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let stream = stream?;
        wstd::runtime::spawn(async move {
            let _ = serve(stream).await;
        })
        .detach();
    }
    Ok(())
}

/// Lines from a stream.
struct Lines<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
}

impl Lines<'_> {
    async fn next(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                return Ok(Some(text));
            }
            let mut chunk = [0u8; 1024];
            let n = (&*self.stream).read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn serve(stream: TcpStream) -> io::Result<()> {
    let mut lines = Lines {
        stream: &stream,
        buf: Vec::new(),
    };
    while let Some(line) = lines.next().await? {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let reply = match cmd {
            "echo" => rest.to_string(),
            "sockets" => sockets(rest.parse().unwrap_or(0)),
            "lookup" => lookup(rest),
            "connect" => match TcpStream::connect(rest).await {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("error: {e}"),
            },
            "redis" => redis(rest).await.unwrap_or_else(|e| format!("error: {e}")),
            "collect" => {
                let ended = collect(&mut lines).await;
                println!("probe: collect ended: {ended}");
                return Ok(());
            }
            "kv-incr" => {
                match nacre_sdk::kv::Store::open("probe").and_then(|s| s.increment(rest, 1)) {
                    Ok(n) => format!("count {n}"),
                    Err(e) => format!("error: {e}"),
                }
            }
            "tls-get" => tls_get::run(rest)
                .await
                .unwrap_or_else(|e| format!("error: {e}")),
            "attest" => attest(rest),
            "deaf" => {
                std::future::pending::<()>().await;
                String::new()
            }
            "spin" => spin(),
            "trap" => panic!("trap asked for"),
            _ => format!("unknown command {cmd:?}"),
        };
        (&stream).write_all(format!("{reply}\n").as_bytes()).await?;
    }
    Ok(())
}

fn sockets(n: usize) -> String {
    let mut held = Vec::new();
    let mut error = String::from("none");
    for _ in 0..n {
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Ok(s) => held.push(s),
            Err(e) => {
                error = format!("{e:?}");
                break;
            }
        }
    }
    format!("created {} of {n}; then: {error}", held.len())
}

fn lookup(name: &str) -> String {
    use std::net::ToSocketAddrs;
    match (name, 1).to_socket_addrs() {
        Ok(addrs) => addrs
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("error: {e}"),
    }
}

/// `SET KEY VALUE` then `GET KEY`, in RESP.
async fn redis(args: &str) -> io::Result<String> {
    let mut parts = args.split(' ');
    let (Some(target), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok("usage: redis HOST:PORT KEY VALUE".into());
    };
    let stream = TcpStream::connect(target).await?;
    let command = |words: &[&str]| {
        let mut out = format!("*{}\r\n", words.len());
        for w in words {
            out.push_str(&format!("${}\r\n{w}\r\n", w.len()));
        }
        out
    };
    (&stream)
        .write_all(command(&["SET", key, value]).as_bytes())
        .await?;
    (&stream)
        .write_all(command(&["GET", key]).as_bytes())
        .await?;
    // `+OK\r\n` then `$LEN\r\nVALUE\r\n`.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 512];
    while !reply_complete(&reply) {
        let n = (&stream).read(&mut chunk).await?;
        if n == 0 {
            return Ok(format!(
                "error: redis closed after {:?}",
                String::from_utf8_lossy(&reply)
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&reply).to_string();
    let mut lines = text.split("\r\n");
    match (lines.next(), lines.next(), lines.next()) {
        (Some("+OK"), Some(_len), Some(got)) => Ok(format!("got {got}")),
        _ => Ok(format!("error: unexpected reply {text:?}")),
    }
}

fn reply_complete(reply: &[u8]) -> bool {
    reply.iter().filter(|b| **b == b'\n').count() >= 3
}

async fn collect(lines: &mut Lines<'_>) -> String {
    let mut total = lines.buf.len();
    let mut chunk = [0u8; 4096];
    loop {
        match (&*lines.stream).read(&mut chunk).await {
            Ok(0) => return format!("clean after {total} bytes"),
            Ok(n) => total += n,
            Err(e) => return format!("error after {total} bytes: {e}"),
        }
    }
}

fn attest(nonce_hex: &str) -> String {
    let Ok(nonce) = hex::decode(nonce_hex) else {
        return "error: the nonce is not hex".into();
    };
    match nacre_sdk::attestation::request(Some(&nonce), Some(b"tcp-probe"), None) {
        Ok(doc) => hex::encode(doc),
        Err(e) => format!("error: {e}"),
    }
}

fn spin() -> String {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
