#!/usr/bin/env bash
# Runs every check and test of the project. The README's test command, and
# what CI runs (.ci/run). Needs only Rust (rustup); installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"; }

# CI builds once from scratch: incremental compilation would only write
# caches nobody reads (and costs time doing it).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step "disk space"
# A full run builds about 4.5 GiB under target/ (host, guests and sdk); running
# out of disk mid-build fails with a rustc I/O error far from the cause.
need_gib=6
avail_gib=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if [ "$avail_gib" -lt "$need_gib" ]; then
  echo "warning: $avail_gib GiB free in $PWD, a full run needs about $need_gib GiB;" \
       "free space (for example with cargo clean) if the build fails with 'No space left on device'" >&2
else
  echo "$avail_gib GiB free"
fi

step "toolchain: wasm32-wasip2 target and rustfmt/clippy"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "tools the tests talk to: curl, nginx, python3, openssl, socat, redis, clang, pebble, promtool, qemu"
# Clients and servers nobody here wrote: the tests drive the system's curl
# (HTTP/1.1 and HTTP/2) and openssl, guests fetch from nginx and Python's
# http.server, certificates come from Pebble, Let's Encrypt's ACME test
# server (with pebble-challtestsrv as its DNS), and Prometheus' promtool
# checks the metrics. Debian's packages, installed when missing.
missing=()
command -v curl >/dev/null || missing+=(curl)
{ [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null; } || missing+=(nginx)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
{ command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null; } || missing+=(pebble)
command -v promtool >/dev/null || missing+=(prometheus)
# TCP guests are reached with socat and openssl s_client, and talk RESP to
# Debian's redis-server.
command -v socat >/dev/null || missing+=(socat)
command -v redis-server >/dev/null || missing+=(redis-server)
# Guests doing their own TLS (tls-echo, tcp-probe) use rustls with ring,
# whose C and assembly build for wasm32-wasip2 with clang.
command -v clang >/dev/null || missing+=(clang)
# The enclave image boots in QEMU; its builder links OpenSSL (the EIF
# crate's signing) and fetches the kernel with apt-get download.
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
# The image's own kernel module is compiled with the kernel's compiler.
command -v x86_64-linux-gnu-gcc-12 >/dev/null || missing+=(gcc-12)
command -v make >/dev/null || missing+=(make)
command -v strip >/dev/null || missing+=(binutils)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt_get=(apt-get)
  elif command -v sudo >/dev/null; then
    apt_get=(sudo apt-get)
  else
    echo "error: the tests need ${missing[*]}; install them (apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${missing[@]}" >/dev/null
else
  echo "curl, nginx, python3, openssl, socat, redis-server, clang, pebble, promtool, qemu, gcc-12 and OpenSSL headers are here"
fi

step "package lists for the image's kernel"
# The image tests fetch Debian's kernel package with apt-get download,
# which needs the package lists.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
fi
echo "present"

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path image/Cargo.toml -- --check
cargo fmt --manifest-path guest-examples/Cargo.toml --all -- --check
cargo fmt --manifest-path sdk/Cargo.toml -- --check

# Clippy lints our crates as they are compiled for the tests: clippy-driver
# is the compiler wrapper for workspace members (what `cargo clippy` itself
# sets), and CLIPPY_ARGS its `-- -D warnings` (cargo clippy's own way of
# passing them). A separate `cargo clippy` would type-check every dependency
# a second time, about ten minutes on two cores. It stays set for every
# cargo run below, the tests' own included, so nothing is built twice.
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "guest components (wasm32-wasip2), linted"
cargo build --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml
cargo build --release --target wasm32-wasip2 --manifest-path sdk/Cargo.toml --lib --examples --all-features

step "build every target of both workspaces, linted"
# nacre-image is a workspace of its own (image/Cargo.toml says why), built
# into the main target directory so it lands beside nacre.
cargo test --locked --manifest-path image/Cargo.toml --target-dir target --all-targets --no-run
cargo test --workspace --all-targets --no-run

step "docs: every intra-doc link resolves, private items included"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --manifest-path image/Cargo.toml --target-dir target --no-deps --document-private-items --quiet

step "tests"
cargo test --locked --manifest-path image/Cargo.toml --target-dir target
cargo test --workspace
step "done"
