//! `nacre-bench-sink`, scenario (g)'s far end: swallows bulk streams and
//! echoes short messages, on loopback TCP and a unix socket.
//!
//! It is its own process so that the direct baseline crosses processes as
//! the proxied path does; in the benchmark's own process, the client and
//! server tasks could hand messages over on one thread without any
//! wake-up, which made the direct round trip look several times faster
//! than any real peer's.

use std::path::PathBuf;

use anyhow::Context;
use nacre_transport::{Address, Listener, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flags of `nacre-bench-sink`.
#[derive(clap::Parser)]
struct Args {
    /// Unix socket to listen on too (must not exist yet).
    #[arg(long)]
    unix: PathBuf,
}

/// Serves until killed; prints `sink listening on tcp://127.0.0.1:PORT`
/// when both listeners are up.
fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    // One thread, like a simple peer; transfers run one at a time.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let tcp = Listener::bind(&"tcp://127.0.0.1:0".parse()?).await?;
            let unix = Listener::bind(&Address::Unix(args.unix.clone()))
                .await
                .with_context(|| format!("--unix {}", args.unix.display()))?;
            println!("sink listening on {}", tcp.local_addr()?);
            loop {
                let (s, _) = tokio::select! {
                    c = tcp.accept() => c,
                    c = unix.accept() => c,
                };
                tokio::spawn(serve(s));
            }
        })
}

/// Swallows bulk streams and echoes short messages (pings).
async fn serve(mut s: Stream) {
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
