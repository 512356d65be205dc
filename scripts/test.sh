#!/usr/bin/env bash
# Runs every check and test of the project. The README's test command, and
# what CI runs (.ci/run). Needs only Rust (rustup); installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target and rustfmt/clippy"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path guest-examples/Cargo.toml --all -- --check
cargo fmt --manifest-path sdk/Cargo.toml -- --check

step "guest components (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml
cargo build --release --target wasm32-wasip2 --manifest-path sdk/Cargo.toml --lib --examples

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml -- -D warnings
cargo clippy --release --target wasm32-wasip2 --manifest-path sdk/Cargo.toml --lib --examples -- -D warnings

step "tests"
cargo test --workspace
