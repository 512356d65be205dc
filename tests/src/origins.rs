//! Origins nobody here wrote, for guests to fetch from: Python's
//! `http.server` wrapped in TLS, and nginx from the distribution. Our own
//! hyper on both ends of a connection hid bugs that these found at once.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nacre_cli::process::{Stderr, Supervised};

use crate::{TestPki, root, temp_dir};

/// The body both origins serve for `path` with `n` pattern bytes: the path,
/// a newline, then `0123456789abcdef` repeated (tests/origins/https_origin.py).
pub fn pattern_body(path: &str, n: usize) -> Vec<u8> {
    let mut out = format!("{path}\n").into_bytes();
    out.extend(b"0123456789abcdef".iter().cycle().take(n));
    out
}

/// `python3 tests/origins/https_origin.py` on a loopback port, with a
/// `localhost` certificate from a fresh test CA; killed on drop.
pub struct PythonOrigin {
    _child: Supervised,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed its certificate.
    pub pki: TestPki,
}

impl PythonOrigin {
    /// Starts the origin and waits for its port.
    pub fn start() -> PythonOrigin {
        let pki = TestPki::generate();
        let mut command = Command::new("python3");
        command
            .arg(root().join("tests/origins/https_origin.py"))
            .arg(pki.dir.join("cert.pem"))
            .arg(pki.dir.join("key.pem"));
        let mut child = Supervised::spawn(command, Stderr::Keep { watch: false })
            .expect("python3 runs (the test command installs it when missing)")
            .report_on_panic();
        let port = child
            .wait_for(Duration::from_secs(30), |l| l.trim().parse().ok())
            .unwrap_or_else(|why| panic!("{why}"));
        PythonOrigin {
            _child: child,
            port,
            pki,
        }
    }
}

/// nginx on two loopback ports, one offering HTTP/2 and HTTP/1.1 by ALPN,
/// one HTTP/1.1 only, with a `localhost` certificate from a fresh test CA.
///
/// - `/length.bin`: a static file (Content-Length)
/// - `/chunked.shtml`: the same bytes through SSI, which drops the length
///   (chunked over HTTP/1.1, DATA frames over HTTP/2)
pub struct Nginx {
    child: Supervised,
    /// The port offering `h2` and `http/1.1`.
    pub h2_port: u16,
    /// The port offering `http/1.1` only.
    pub h1_port: u16,
    /// The CA that signed its certificate.
    pub pki: TestPki,
    dir: PathBuf,
}

impl Nginx {
    /// Pattern bytes in each file nginx serves.
    pub const SIZE: usize = 200_000;

    /// The body of `path` (`/length.bin` or `/chunked.shtml`).
    pub fn body(path: &str) -> Vec<u8> {
        pattern_body(path, Nginx::SIZE)
    }

    /// Starts nginx in the foreground on two loopback ports bound for it
    /// beforehand and handed over (tests/origins/nginx_held.py), and waits
    /// until its worker runs. nginx takes sockets over only with a master
    /// process (without one it crashes), whose worker keeps this user (as
    /// root too: `user root`).
    pub fn start() -> Nginx {
        let pki = TestPki::generate();
        let dir = temp_dir("nginx");
        let template_path = dir.join("nginx.conf.in");
        std::fs::write(&template_path, Nginx::site(&dir, &pki)).unwrap();
        let conf_path = dir.join("nginx.conf");
        let mut command = Command::new("python3");
        command
            .arg(root().join("tests/origins/nginx_held.py"))
            .arg(&template_path)
            .arg(&conf_path)
            .args(["H2", "H1", "--"])
            .arg(nginx_binary())
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        let mut child = Supervised::spawn(command, Stderr::Keep { watch: false })
            .expect("python3 and nginx run (the test command installs them when missing)")
            .report_on_panic();
        let mut ports = Vec::new();
        let (h2_port, h1_port) = child
            .wait_for(Duration::from_secs(30), |l| {
                let (_, port) = l.split_once('=')?;
                ports.push(port.trim().parse::<u16>().ok()?);
                (ports.len() == 2).then(|| (ports[0], ports[1]))
            })
            .unwrap_or_else(|why| panic!("nginx_held.py printed no ports: {why}"));
        let mut nginx = Nginx {
            child,
            h2_port,
            h1_port,
            pki,
            dir,
        };
        // The ports take connections already; wait for the worker that
        // answers them.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nginx.log().contains("start worker process") {
            assert!(
                Instant::now() < deadline && matches!(nginx.child.try_wait(), Ok(None)),
                "nginx did not start:\n{}",
                nginx.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// The files nginx serves, written into `dir`, and its configuration
    /// with the two ports left as `@H2@` and `@H1@` for nginx_held.py.
    fn site(dir: &std::path::Path, pki: &TestPki) -> String {
        let html = dir.join("html");
        std::fs::create_dir_all(&html).unwrap();
        std::fs::write(html.join("length.bin"), Nginx::body("/length.bin")).unwrap();
        // An SSI directive that prints nothing: the file's bytes, no length.
        let mut shtml = b"<!--# set var=\"x\" value=\"\" -->".to_vec();
        shtml.extend(Nginx::body("/chunked.shtml"));
        std::fs::write(html.join("chunked.shtml"), shtml).unwrap();
        let d = dir.display();
        let p = pki.dir.display();
        let user = if crate::is_root() {
            "user root root;"
        } else {
            ""
        };
        format!(
            r#"daemon off;
master_process on;
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    ssl_certificate {p}/cert.pem;
    ssl_certificate_key {p}/key.pem;
    root {d}/html;
    types {{ text/html shtml; application/octet-stream bin; }}
    server {{ listen 127.0.0.1:@H2@ ssl http2; server_name localhost; location ~ \.shtml$ {{ ssi on; }} }}
    server {{ listen 127.0.0.1:@H1@ ssl; server_name localhost; location ~ \.shtml$ {{ ssi on; }} }}
}}
"#
        )
    }

    /// nginx's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// nginx's access log so far: one line per request it answered.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker, then itself (killed, it
        // would leave the worker running).
        self.child.terminate();
        if self.child.wait_exit(Duration::from_secs(10)).is_none() {
            self.child.kill();
        }
        if std::thread::panicking() {
            eprintln!("---- nginx error log ----\n{}", self.log());
        }
    }
}

/// Debian installs nginx under /usr/sbin, which a user's PATH may lack.
fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}
