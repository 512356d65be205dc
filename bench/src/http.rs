//! Scenarios (a), (b) and (c): the same hello, keep-alive, 64 connections,
//! each server measured on its own; (a) and (c) also with the `echo`
//! guest's work on a 1 KiB request body; (a₀), the reference point: (a)
//! with the thinnest component that gives `hello`'s answer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nacre_cli::process::{Stderr, Supervised};
use nacre_tests::net::HostProxy;
use nacre_tests::{Runtime, TestPki};

use crate::Plan;
use crate::load::{Load, Shape, rss_kib};
use crate::tools::Tools;

/// One HTTP scenario's figures.
pub struct Scenario {
    /// What was measured: the rounds together.
    pub load: Load,
    /// Each round (one for scenarios measured once).
    pub rounds: Vec<Load>,
    /// Peak resident memory of each server process, KiB.
    pub peak_rss_kib: Vec<(&'static str, u64)>,
    /// How the server was started, for the report.
    pub command: String,
}

/// (a), (b) and (c).
pub struct HttpResults {
    /// (a) Nacre: TLS in the runtime, behind the host proxy.
    pub nacre: Scenario,
    /// (b) `wasmtime serve -Scli`, plain HTTP.
    pub wasmtime: Scenario,
    /// (c) native hyper + rustls, behind the host proxy.
    pub native: Scenario,
    /// (a) with `echo` and a 1 KiB POST body.
    pub nacre_echo: Scenario,
    /// (c) doing `echo`'s work on the same requests.
    pub native_echo: Scenario,
    /// (a₀): (a) with `guest-examples/testing/floor`, which answers as
    /// `hello` does while importing only wasi:http and wasi:io. Not a
    /// target: it shows what is left once a component costs the least.
    pub nacre_floor: Scenario,
}

/// The request body of the echo rounds.
pub const ECHO_BODY: usize = 1024;

/// A host proxy forwarding a fresh loopback TCP port to `target`.
pub fn proxy_to(target: &str) -> HostProxy {
    HostProxy::start(&["--inbound".into(), format!("tcp://127.0.0.1:0={target}")])
}

/// A fresh unix socket address (as vsock is in production).
fn unix_socket(tag: &str) -> String {
    format!(
        "unix:{}",
        nacre_tests::temp_dir(tag).join("server.sock").display()
    )
}

/// A runtime on a unix socket behind a host proxy on loopback TCP;
/// clients of the returned runtime go through the proxy.
pub fn nacre_behind_proxy(extra: &[&str]) -> (Runtime, HostProxy) {
    let sock = unix_socket("bench-runtime");
    let mut rt = Runtime::start_behind(&[], &sock, extra);
    let proxy = proxy_to(&sock);
    rt.via(proxy.inbound_tcp());
    (rt, proxy)
}

/// Runs the three scenarios: (a) and (c) in alternating rounds, both
/// servers up throughout (an idle server costs the other nothing), then
/// (b).
pub async fn run(
    plan: &Plan,
    tools: &Tools,
    hello: &Path,
    echo: &Path,
    floor: &Path,
) -> anyhow::Result<HttpResults> {
    println!(
        "(a) Nacre through the host proxy, and (c) native hyper + rustls through the host proxy"
    );
    let (rt, nacre_proxy) = start_nacre(hello, echo, floor);
    let nacre_port = nacre_proxy.inbound_tcp().port();
    let pki = TestPki::generate();
    let (native_server, native_proxy) = start_native(&pki)?;
    let native_port = native_proxy.inbound_tcp().port();
    let targets = Targets {
        nacre: format!("https://127.0.0.1:{nacre_port}/hello/"),
        nacre_echo: format!("https://127.0.0.1:{nacre_port}/echo/"),
        nacre_floor: format!("https://127.0.0.1:{nacre_port}/floor/"),
        native: format!("https://127.0.0.1:{native_port}/"),
        native_echo: format!("https://127.0.0.1:{native_port}/echo/"),
        rt_pid: rt.pid(),
        native_pid: native_server.child.pid(),
    };
    let rounds = measure_rounds(plan, tools, &targets)?;
    let nacre_rss = vec![
        ("runtime", rss_kib(targets.rt_pid).1),
        ("host proxy", rss_kib(nacre_proxy.pid()).1),
    ];
    let native_rss = vec![
        ("server", rss_kib(targets.native_pid).1),
        ("host proxy", rss_kib(native_proxy.pid()).1),
    ];
    let nacre = scenario(rounds.a, &nacre_rss, NACRE_COMMAND);
    let native = scenario(rounds.c, &native_rss, NATIVE_COMMAND);
    let nacre_echo = scenario(rounds.ae, &nacre_rss, NACRE_COMMAND);
    let native_echo = scenario(rounds.ce, &native_rss, NATIVE_COMMAND);
    let nacre_floor = scenario(rounds.af, &nacre_rss, NACRE_COMMAND);
    drop((rt, nacre_proxy, native_server, native_proxy));

    let wasmtime = measure_wasmtime(plan, tools, hello)?;
    Ok(HttpResults {
        nacre,
        wasmtime,
        native,
        nacre_echo,
        native_echo,
        nacre_floor,
    })
}

/// How (a), its echo and floor rounds were started, for the report.
const NACRE_COMMAND: &str = "nacre-runtime --listen unix:… --attestation dev --wait-for-app \
                             --guest hello=hello.wasm --guest echo=echo.wasm \
                             --guest floor=floor.wasm; \
                             nacre-host-proxy --inbound tcp://127.0.0.1:0=unix:…";
/// How (c) and its echo rounds were started, for the report.
const NATIVE_COMMAND: &str = "nacre-bench-native --listen unix:…; \
                              nacre-host-proxy --inbound tcp://127.0.0.1:0=unix:…";

/// (a)'s server: a runtime running `hello`, `echo` and `floor`, behind a
/// host proxy.
fn start_nacre(hello: &Path, echo: &Path, floor: &Path) -> (Runtime, HostProxy) {
    let hello_guest = format!("hello={}", hello.display());
    let echo_guest = format!("echo={}", echo.display());
    let floor_guest = format!("floor={}", floor.display());
    nacre_behind_proxy(&[
        "--wait-for-app",
        "--guest",
        &hello_guest,
        "--guest",
        &echo_guest,
        "--guest",
        &floor_guest,
    ])
}

/// (c)'s server: `nacre-bench-native` with `pki`'s certificate, on a unix
/// socket behind a host proxy.
fn start_native(pki: &TestPki) -> anyhow::Result<(Server, HostProxy)> {
    let sock = unix_socket("bench-native");
    let mut cmd = Command::new(nacre_tests::bin("nacre-bench-native"));
    cmd.args(["--listen", &sock, "--cert"])
        .arg(pki.dir.join("cert.pem"))
        .arg("--key")
        .arg(pki.dir.join("key.pem"));
    let native_server = Server::start(cmd, "native-hello listening on ")?;
    let native_proxy = proxy_to(&sock);
    Ok((native_server, native_proxy))
}

/// Where the rounds' loads go, and the server processes whose CPU they
/// measure.
struct Targets {
    nacre: String,
    nacre_echo: String,
    nacre_floor: String,
    native: String,
    native_echo: String,
    rt_pid: u32,
    native_pid: u32,
}

/// Each round's figures, by scenario: (a), (c), (a) echo, (c) echo, (a₀).
struct Rounds {
    a: Vec<Load>,
    c: Vec<Load>,
    ae: Vec<Load>,
    ce: Vec<Load>,
    af: Vec<Load>,
}

/// Runs `plan.http_rounds` rounds (at least one), each loading (a), (c),
/// (a) echo, (c) echo, then (a₀), in that order.
fn measure_rounds(plan: &Plan, tools: &Tools, t: &Targets) -> anyhow::Result<Rounds> {
    let get = |pid| Shape {
        post_bytes: None,
        cpu_of: Some(pid),
        ..Shape::default()
    };
    let post = |pid| Shape {
        post_bytes: Some(ECHO_BODY),
        cpu_of: Some(pid),
        ..Shape::default()
    };
    let [mut a, mut c, mut ae, mut ce, mut af] = [(); 5].map(|_| Vec::new());
    for round in 1..=plan.http_rounds.max(1) {
        println!("  round {round}: (a), (c), both with echo, then (a) with floor");
        a.push(tools.load_shaped(&t.nacre, plan.http_secs, get(t.rt_pid))?);
        c.push(tools.load_shaped(&t.native, plan.http_secs, get(t.native_pid))?);
        ae.push(tools.load_shaped(&t.nacre_echo, plan.http_secs, post(t.rt_pid))?);
        ce.push(tools.load_shaped(&t.native_echo, plan.http_secs, post(t.native_pid))?);
        af.push(tools.load_shaped(&t.nacre_floor, plan.http_secs, get(t.rt_pid))?);
    }
    Ok(Rounds { a, c, ae, ce, af })
}

/// A scenario measured in `rounds`, combined.
fn scenario(rounds: Vec<Load>, rss: &[(&'static str, u64)], command: &str) -> Scenario {
    Scenario {
        load: Load::combine(&rounds),
        rounds,
        peak_rss_kib: rss.to_vec(),
        command: command.into(),
    }
}

/// Scenario (b): `wasmtime serve` with `hello`, measured once.
fn measure_wasmtime(plan: &Plan, tools: &Tools, hello: &Path) -> anyhow::Result<Scenario> {
    println!("(b) wasmtime serve");
    let wasmtime = tools
        .wasmtime
        .as_ref()
        .context("wasmtime-cli was not prepared, yet (b) runs")?;
    let mut cmd = Command::new(wasmtime);
    cmd.args(["serve", "-Scli", "--addr", "127.0.0.1:0"])
        .arg(hello);
    let server = Server::start(cmd, "Serving HTTP on ")?;
    let url = server.addr.trim_end_matches('/').to_string() + "/";
    let load = tools.load(&url, plan.http_secs)?;
    Ok(Scenario {
        load,
        rounds: vec![load],
        peak_rss_kib: vec![("wasmtime", rss_kib(server.child.pid()).1)],
        command: "wasmtime serve -Scli --addr 127.0.0.1:0 hello.wasm".into(),
    })
}

/// A server process killed on drop.
pub struct Server {
    /// The server process.
    pub child: Supervised,
    /// What followed the ready marker on its ready line.
    pub addr: String,
}

impl Server {
    /// Starts `cmd` and waits for a line (stdout or stderr) starting with
    /// `ready`.
    pub fn start(mut cmd: Command, ready: &'static str) -> anyhow::Result<Server> {
        // Backtrace capture on every error would slow wasmtime serve down
        // (it builds one per store drop); production runs without it.
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        let described = format!("{cmd:?}");
        let mut child = Supervised::spawn(cmd, Stderr::Keep { watch: true })
            .with_context(|| format!("starting {described}"))?;
        let addr = child
            .wait_for(Duration::from_secs(60), |l| {
                l.strip_prefix(ready).map(|a| a.trim().to_string())
            })
            .map_err(anyhow::Error::msg)?;
        Ok(Server { child, addr })
    }
}
