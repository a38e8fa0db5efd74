#!/usr/bin/env bash
# Starts Headwater on the embedded default config with a demo feed (a looping test pattern
# pushed over RTMP with ffmpeg) and prints the playback URL. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages ffmpeg:ffmpeg curl:curl
ensure_ffmpeg_dev

cargo build --release --locked
bash testdata/generate.sh

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

./target/release/headwater serve &
pids+=($!)
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs http://127.0.0.1:8080/healthz >/dev/null || { echo "headwater did not start" >&2; exit 1; }

# A pre-encoded clip copied in real time, looping: the publisher costs almost no CPU.
ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i testdata/out/demo.flv \
  -c copy -f flv rtmp://127.0.0.1:1935/live/demo &
pids+=($!)

for _ in $(seq 200); do
  curl -fs http://127.0.0.1:8080/live/demo/index.m3u8 >/dev/null 2>&1 && break
  sleep 0.1
done
echo
echo "Headwater is live. Play it with any HLS player, e.g.:"
echo "  ffplay http://127.0.0.1:8080/live/demo/index.m3u8"
echo "Playback URL: http://127.0.0.1:8080/live/demo/index.m3u8"
echo "(Ctrl-C to stop)"
echo
echo "Open in a browser: http://127.0.0.1:8080/"
wait "${pids[0]}"
