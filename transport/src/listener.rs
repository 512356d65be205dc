//! Listening on any transport.

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener};

use crate::stream::unix_tuned;
use crate::{Address, Stream};

/// A bound listener on TCP, a Unix socket or vsock.
#[derive(Debug)]
pub enum Listener {
    /// TCP listener.
    Tcp(TcpListener),
    /// Unix domain socket listener; the socket file is removed on drop.
    Unix(UnixListener, UnixPathGuard),
    /// vsock listener.
    Vsock(VsockListener),
}

/// Removes a Unix socket file when the listener that made it goes away.
#[derive(Debug)]
pub struct UnixPathGuard(std::path::PathBuf);

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Binds `addr`. A leftover Unix socket file from a previous run is
    /// replaced, but only when nothing answers on it any more.
    pub async fn bind(addr: &Address) -> io::Result<Listener> {
        match addr {
            Address::Tcp { host, port } => Ok(Listener::Tcp(
                TcpListener::bind((host.as_str(), *port)).await?,
            )),
            Address::Unix(path) => {
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{} is in use by a running process", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let l = UnixListener::bind(path)?;
                Ok(Listener::Unix(l, UnixPathGuard(path.clone())))
            }
            Address::Vsock { cid, port } => Ok(Listener::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            Listener::Tcp(l) => {
                let a = l.local_addr()?;
                Ok(Address::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                })
            }
            Listener::Unix(_, guard) => Ok(Address::Unix(guard.0.clone())),
            Listener::Vsock(l) => {
                let a = l.local_addr()?;
                Ok(Address::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                })
            }
        }
    }

    /// Accepts the next connection, returning it with a printable peer name.
    ///
    /// Errors that concern one connection only (the peer reset it, the
    /// process ran out of file descriptors for a moment) are retried here
    /// after a short pause, so a caller's accept loop never dies of them.
    pub async fn accept(&self) -> (Stream, String) {
        loop {
            let r = match self {
                Listener::Tcp(l) => l.accept().await.map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), a.to_string())
                }),
                Listener::Unix(l, _) => l
                    .accept()
                    .await
                    .map(|(s, _)| (Stream::Unix(unix_tuned(s)), "unix".to_string())),
                Listener::Vsock(l) => l
                    .accept()
                    .await
                    .map(|(s, a)| (Stream::Vsock(s), format!("vsock:{}:{}", a.cid(), a.port()))),
            };
            match r {
                Ok(c) => return c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    // EMFILE and friends clear up as connections close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_unix_round_trip() {
        let dir = std::env::temp_dir().join(format!("nacre-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("t.sock");
        for addr in [
            "tcp://127.0.0.1:0".parse::<Address>().unwrap(),
            Address::Unix(sock.clone()),
        ] {
            let l = Listener::bind(&addr).await.unwrap();
            let bound = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await;
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
            let mut c = connect(&bound).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            server.await.unwrap();
        }
        // The guard removed the socket file with the listener.
        assert!(!sock.exists());
    }

    #[tokio::test]
    async fn unix_connections_get_the_larger_send_buffer_on_both_ends() {
        let path = std::env::temp_dir().join(format!("nacre-sndbuf-{}.sock", std::process::id()));
        let l = Listener::bind(&Address::Unix(path)).await.unwrap();
        let bound = l.local_addr().unwrap();
        let client = connect(&bound).await.unwrap();
        let (server, _) = l.accept().await;
        // Linux doubles the value it is given, after capping it at wmem_max.
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = 2 * crate::stream::UNIX_SEND_BUFFER.min(wmem_max);
        for s in [&client, &server] {
            let Stream::Unix(u) = s else {
                panic!("a unix address gave {s:?}")
            };
            let got = socket2::SockRef::from(u).send_buffer_size().unwrap();
            assert_eq!(got, want, "SO_SNDBUF of a unix connection");
        }
    }

    #[tokio::test]
    async fn refuses_a_live_unix_socket() {
        let path = std::env::temp_dir().join(format!("nacre-live-{}.sock", std::process::id()));
        let addr = Address::Unix(path.clone());
        let _first = Listener::bind(&addr).await.unwrap();
        let err = Listener::bind(&addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// A connection accepted on one runtime and served on another, as the
    /// runtime's serving threads do: after `detach`/`attach` its reads and
    /// writes are driven by the second runtime alone, which keeps working
    /// after the first one is gone.
    #[test]
    fn a_detached_connection_is_served_by_the_runtime_that_attaches_it() {
        let dir = std::env::temp_dir().join(format!("nacre-detach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for addr in [
            "tcp://127.0.0.1:0".parse::<Address>().unwrap(),
            Address::Unix(dir.join("d.sock")),
        ] {
            let first = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (detached, mut client) = first.block_on(async {
                let l = Listener::bind(&addr).await.unwrap();
                let bound = l.local_addr().unwrap();
                let client = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let c = rt.block_on(connect(&bound)).unwrap();
                    (rt, c)
                });
                let (s, _) = l.accept().await;
                (s.detach().unwrap(), client.join().unwrap())
            });
            // The runtime that accepted is gone before any byte moves.
            drop(first);
            let second = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let served = std::thread::spawn(move || {
                second.block_on(async {
                    let mut s = detached.attach().unwrap();
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                })
            });
            let (rt, c) = &mut client;
            rt.block_on(async {
                c.write_all(b"lanes").await.unwrap();
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"lanes");
            });
            served.join().unwrap();
        }
    }
}
