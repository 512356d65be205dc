//! What `nacre dev` prints once everything is up.

use std::path::Path;

use super::random_hex;

/// What `nacre dev` prints once everything is up: where things are, and
/// commands to try against them.
pub(super) struct Banner<'a> {
    pub(super) url: &'a str,
    pub(super) token: &'a str,
    pub(super) dir: &'a Path,
    pub(super) cert: &'a Path,
    pub(super) dev_root: &'a Path,
    pub(super) pcr0: &'a [u8],
    pub(super) runtime_log: &'a Path,
    pub(super) proxy_log: &'a Path,
    pub(super) allow: &'a [String],
    pub(super) nacre: &'a Path,
    pub(super) hello_wasm: &'a Path,
    pub(super) hello_sha: &'a str,
    /// Where the `tcp-echo` TCP guest is reached on 127.0.0.1.
    pub(super) tcp_port: u16,
    pub(super) store: &'a Path,
}

impl Banner<'_> {
    /// The banner's lines, joined; the `verify` example gets a fresh nonce.
    pub(super) fn render(&self) -> String {
        let Banner { url, token, .. } = *self;
        let c = self.cert.display();
        let d = self.dir.display();
        let log = self.runtime_log.display();
        let plog = self.proxy_log.display();
        let nacre = self.nacre.display().to_string();
        let hello = self.hello_wasm.display();
        let hello_sha = self.hello_sha;
        let nonce = random_hex::<20>();
        let pins = format!(
            "--root {c} --attestation-root {} --pcr 0={}",
            self.dev_root.display(),
            hex::encode(self.pcr0)
        );
        let banner = [
            String::new(),
            "Nacre dev is up: host proxy on 127.0.0.1, runtime behind it on a unix socket.".into(),
            String::new(),
            format!("  URL          {url}"),
            format!("  admin token  {token}"),
            format!("  dev root     {d}/root"),
            format!("  TLS cert     {c}  (made inside the runtime, pinned by the commands below)"),
            format!("  runtime log  {log}"),
            format!("  proxy log    {plog}"),
            format!(
                "  egress       {}  (runtime and host proxy; --allow to change)",
                self.allow.join(", ")
            ),
            format!(
                "  sealed in    {}  (KMS stand-in; restart nacre dev and the deployment comes back; delete it to start anew)",
                self.store.display()
            ),
            String::new(),
            "Try:".into(),
            format!("  curl --cacert {c} {url}/hello/world"),
            format!("  curl --cacert {c} -d 'some body' '{url}/echo/path?x=1'"),
            format!(
                "  curl --cacert {c} '{url}/fetch/?url=https://{}/'",
                self.allow[0]
                    .trim_start_matches("*.")
                    .split(':')
                    .next()
                    .unwrap_or("example.com")
            ),
            format!("  curl --cacert {c} -X POST {url}/kv-counter/incr"),
            format!("  curl --cacert {c} {url}/attested-signer/public-key"),
            format!("  curl --cacert {c} -d 'a message' {url}/attested-signer/sign"),
            format!(
                "  echo 'hello over TCP' | socat -t 2 - OPENSSL:localhost:{},cafile={c}",
                self.tcp_port
            ),
            format!(
                "  openssl s_client -quiet -connect localhost:{} -CAfile {c}   (tcp-echo, a TCP guest: type a line)",
                self.tcp_port
            ),
            format!("  curl --cacert {c} {url}/enclave/manifest"),
            format!("  curl --cacert {c} -H 'Authorization: Bearer {token}' {url}/enclave/guests"),
            format!(
                "  curl -s --cacert {c} '{url}/enclave/attestation?nonce={nonce}' > {d}/attestation.b64"
            ),
            format!(
                "  {nacre} verify {d}/attestation.b64 --root {d}/root/root.pem --nonce {nonce}"
            ),
            format!("  {nacre} attest {url} --root {d}/root/root.pem --guest hello={hello_sha}"),
            format!("  {nacre} guests {url} --token {token} {pins}"),
            format!("  {nacre} deploy {url} hi {hello} --route /hi --token {token} {pins}"),
            String::new(),
            "Press Ctrl-C to stop.".into(),
        ];
        banner.join("\n")
    }
}
