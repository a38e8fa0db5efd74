#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit + property tests, and the end-to-end tests
# with the real ffmpeg/ffprobe. Installs what it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages ffmpeg:ffmpeg ffprobe:ffmpeg nginx:nginx-light promtool:prometheus \
  srt-live-transmit:srt-tools
# Headless Chromium + hls.js (npm, pinned by tests/browser/package-lock.json) for the HTTP/3
# browser test (tests/e2e/browser.rs).
ensure_packages chromium:chromium npm:npm
if [ ! -d tests/browser/node_modules/hls.js ] || [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi
ensure_gstreamer
ensure_ffmpeg_dev

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --doc --locked
