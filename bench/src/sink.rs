//! `nacre-bench-sink`, scenario (g)'s far end: swallows bulk streams and
//! echoes short messages, on loopback TCP and a unix socket.
//!
//! It is its own process so that the direct baseline crosses processes as
//! the proxied path does; in the benchmark's own process, the client and
//! server tasks could hand messages over on one thread without any
//! wake-up, which made the direct round trip look several times faster
//! than any real peer's.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

/// Flags of `nacre-bench-sink`.
#[derive(clap::Parser)]
struct Args {
    /// Unix socket to listen on too (must not exist yet).
    #[arg(long)]
    unix: PathBuf,
}

/// Serves until killed; prints `sink listening on 127.0.0.1:PORT` when
/// both listeners are up.
fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    // One thread, like a simple peer; transfers run one at a time.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let tcp = TcpListener::bind("127.0.0.1:0").await?;
            let unix = UnixListener::bind(&args.unix)
                .with_context(|| format!("--unix {}", args.unix.display()))?;
            println!("sink listening on {}", tcp.local_addr()?);
            loop {
                tokio::select! {
                    Ok((s, _)) = tcp.accept() => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(serve(s));
                    }
                    Ok((s, _)) = unix.accept() => {
                        tokio::spawn(serve(s));
                    }
                }
            }
        })
}

/// Swallows bulk streams and echoes short messages (pings).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n <= 64 => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}
