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

cargo fmt --all -- --check
cargo test --workspace --release --locked --no-fail-fast "$@"

# The ClientHello parser is fuzzed for a minute on every run (stable toolchain: no sanitizer).
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
(cd gateway/fuzz && cargo fuzz run --sanitizer none --fuzz-dir . clienthello -- -max_total_time=60 2>&1 | tail -3)
