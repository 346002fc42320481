#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# A test whose tool is missing fails; it never skips. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests call: command -> package.
declare -A PKGS=(
  [openssl]=openssl
  [taskset]=util-linux
  [ip]=iproute2
  [python3]=python3
  [node]=nodejs
  [npm]=npm
  [dig]=bind9-dnsutils
  [dnsmasq]=dnsmasq-base
  [shellcheck]=shellcheck
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for cmd in "${!PKGS[@]}"; do command -v "$cmd" >/dev/null || missing+=("${PKGS[$cmd]}"); done
if ! command -v kubectl >/dev/null; then
  # Debian 12's kubernetes-client is 1.20; Google's kubectl package is used when its repo is configured.
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then missing+=(kubectl)
  else missing+=(kubernetes-client); fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The xDS judges: gRPC's proxyless clients, grpcio (PyPI) and @grpc/grpc-js-xds (npm).
python3 -c 'import ensurepip' 2>/dev/null || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
venv=target/judges/venv
if ! "$venv/bin/python" -c 'import grpc' 2>/dev/null || [ ! "$venv/.installed" -nt e2e/judges/requirements.txt ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r e2e/judges/requirements.txt
  touch "$venv/.installed"
fi
if [ ! e2e/judges/node_modules/.package-lock.json -nt e2e/judges/package-lock.json ]; then
  (cd e2e/judges && npm ci --silent --no-audit --no-fund)
fi

# A clean CI build needs a few GiB; say how much there is, so a full disk is plain to see.
df -h . | tail -1 | awk '{print "disk free for the build: " $4}'
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

# Each phase says when it starts, so a slow run shows where its time went.
phase() { echo "== $1 ($(date -u +%T), ${SECONDS}s in)"; }
phase fmt
cargo fmt --all -- --check
phase clippy
cargo clippy --workspace --all-targets --release --locked -- -D warnings
phase test
cargo test --workspace --release --locked --no-fail-fast "$@"

phase fuzz
# The ClientHello parser is fuzzed for a minute on every run (stable toolchain: no sanitizer).
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
(cd gateway/fuzz && cargo fuzz run --sanitizer none --fuzz-dir . clienthello -- -max_total_time=60 2>&1 | tail -3)
phase done
