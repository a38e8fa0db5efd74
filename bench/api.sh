#!/usr/bin/env bash
# API read path under load: GET /api/v1/streams and /api/v1/streams/{name} with 100 live streams
# (examples/api_bench_origin.rs), 100 connections with wrk; req/s, p99, and metadata-store
# (SQLite) statements per 1000 requests. Usage: bash bench/api.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
connections=${2:-100}
command -v wrk >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends wrk
cargo build --release --example api_bench_origin >/dev/null
out=$(mktemp -d)
data="$out/data"
./target/release/examples/api_bench_origin 127.0.0.1:8090 "$data" >"$out/origin.log" 2>&1 &
origin=$!
trap 'kill $origin 2>/dev/null || true; wait $origin 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 1 100); do grep -q '^ready' "$out/origin.log" && break; sleep 0.1; done
grep -q '^ready' "$out/origin.log" || { cat "$out/origin.log"; exit 1; }
queries() { sleep 1.1; grep '^queries=' "$out/origin.log" | tail -n 1 | cut -d= -f2; }
echo "machine: $(nproc) cores, $(uname -r); wrk $(wrk -v 2>&1 | head -n1 | cut -d' ' -f2)"
for path in /api/v1/streams /api/v1/streams/stream042; do
  curl -fsS "http://127.0.0.1:8090$path" >/dev/null
  before=$(queries)
  wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:8090$path" >"$out/wrk.txt"
  after=$(queries)
  requests=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
  rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$out/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$out/wrk.txt")
  errors=$(grep -E 'Non-2xx|Socket errors' "$out/wrk.txt" || true)
  per_k=$(awk -v q=$((after - before)) -v r="$requests" 'BEGIN {printf "%.3f", q * 1000 / r}')
  echo "GET $path: $rps req/s, p50 $p50, p99 $p99, $requests requests, SQLite statements $((after - before)) ($per_k per 1000) $errors"
done
