//! `tcp-echo`: a TCP guest, written with `wstd`, that sends back what it
//! receives. Deploy it with `tcp=8080`: it binds `127.0.0.1:8080`, as a
//! program on a laptop would, and the runtime hands it the connections
//! clients make to port 8080 of the deployment (TLS ended in the enclave).

use wstd::io;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;

#[wstd::main]
async fn main() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:8080").await?;
    println!("tcp-echo listening on {}", listener.local_addr()?);
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let stream = stream?;
        wstd::runtime::spawn(async move {
            // A client that goes away mid-copy ends only its own copy.
            let _ = io::copy(&stream, &stream).await;
        })
        .detach();
    }
    Ok(())
}
