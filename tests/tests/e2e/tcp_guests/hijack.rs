//! The runtime's egress link, through a front the tests turn hostile: it
//! relays to the real host proxy, or answers every `CONNECT` itself and
//! sends the tunnel where the host likes, as a host that controls DNS and
//! every link can. It records what the runtime sends, to show what the host
//! could read.

use std::path::Path;
use std::sync::{Arc, Mutex};

use nacre_transport::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The front; dropped with the test's runtime.
pub(super) struct Hijacker {
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Where tunnels go instead of the proxy, when hostile.
    divert: Mutex<Option<std::net::SocketAddr>>,
    /// Every byte the runtime sent on the link.
    recorded: Mutex<Vec<u8>>,
}

impl Hijacker {
    /// Listens at `path`, relaying to the proxy's egress listener `proxy`.
    pub(super) fn start(path: &Path, proxy: Address) -> Hijacker {
        let Address::Unix(proxy) = proxy else {
            panic!("the proxy's egress listener is not a unix socket: {proxy}")
        };
        let listener = UnixListener::bind(path).expect("bind the egress front");
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (state, proxy) = (shared.clone(), proxy.clone());
                tokio::spawn(async move {
                    let divert = *state.divert.lock().unwrap();
                    let _ = match divert {
                        Some(to) => state.hijack(conn, to).await,
                        None => state.relay(conn, &proxy).await,
                    };
                });
            }
        });
        Hijacker { state }
    }

    /// From now on, answer every `CONNECT` and send it to `to` (`None`:
    /// relay to the proxy again).
    pub(super) fn divert(&self, to: Option<std::net::SocketAddr>) {
        *self.state.divert.lock().unwrap() = to;
    }

    /// What the runtime sent on the link so far.
    pub(super) fn recorded(&self) -> Vec<u8> {
        self.state.recorded.lock().unwrap().clone()
    }
}

impl State {
    async fn relay(&self, conn: UnixStream, proxy: &Path) -> std::io::Result<()> {
        let upstream = UnixStream::connect(proxy).await?;
        self.splice(conn, upstream).await
    }

    /// Reads the `CONNECT` head, says yes, and splices to `to`.
    async fn hijack(&self, mut conn: UnixStream, to: std::net::SocketAddr) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        self.recorded.lock().unwrap().extend_from_slice(&head);
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        let upstream = tokio::net::TcpStream::connect(to).await?;
        self.splice(conn, upstream).await
    }

    /// Copies both ways, recording what comes from the runtime.
    async fn splice<U>(&self, conn: UnixStream, upstream: U) -> std::io::Result<()>
    where
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut from_rt, mut to_rt) = conn.into_split();
        let (mut up_read, mut up_write) = tokio::io::split(upstream);
        let outbound = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = from_rt.read(&mut buf).await?;
                if n == 0 {
                    return up_write.shutdown().await;
                }
                self.recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                up_write.write_all(&buf[..n]).await?;
            }
        };
        let inbound = async {
            let copied = tokio::io::copy(&mut up_read, &mut to_rt).await;
            let _ = to_rt.shutdown().await;
            copied
        };
        let _ = tokio::join!(outbound, inbound);
        Ok(())
    }
}
