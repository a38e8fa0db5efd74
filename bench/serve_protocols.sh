#!/usr/bin/env bash
# Segment and playlist serving over HTTP/1.1 (plain and TLS), h2 (TLS) and HTTP/3, from one
# Headwater, with nginx (TLS, h1 and h2) on the same bytes side by side. Throughput, p50/p99 and
# server CPU per GB served. Loads are bounded by request count (REQ). 127.0.0.1 only.
#   bench/serve_protocols.sh            REQ=10000 CONC=8 STREAMS=4 by default
# Tools: h2load (nghttp2-client) for h1/h2, examples/h3_load.rs for h3 (no packaged h3 load tool
# here), nginx-light, ffmpeg, openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages h2load:nghttp2-client nginx:nginx-light ffmpeg:ffmpeg openssl:openssl curl:curl

REQ=${REQ:-10000}
CONC=${CONC:-8}
STREAMS=${STREAMS:-4}
OUT=bench/out/protocols
HTTP=127.0.0.1:28080
TLS=127.0.0.1:28443
RTMP=127.0.0.1:21935
NGINX=127.0.0.1:28444
rm -rf "$OUT"
mkdir -p "$OUT/www" "$OUT/nginx"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --locked --bin headwater --example h3_load

# Headwater: the committed shipped config with bench ports, 2 s segments, no disk tier, passthrough only,
# no access log, long retention.
sed -e "s/^listen = \"127.0.0.1:8080\"/listen = \"$HTTP\"/" \
  -e "s/^listen = \"127.0.0.1:1935\"/listen = \"$RTMP\"/" \
  -e "s/^# listen = \"0.0.0.0:443\"/listen = \"$TLS\"/" \
  -e "s/^self_signed = false/self_signed = true/" \
  -e 's/^segment_target = "6s"/segment_target = "2s"/' \
  -e 's/^reconnect_grace = "10s"/reconnect_grace = "1s"/' \
  -e 's/^ended_retention = "60s"/ended_retention = "30m"/' \
  -e 's/^disk = "1 GiB"/disk = "0 B"/' \
  -e 's/^access_log = true/access_log = false/' \
  <(git show HEAD:config/headwater.toml) >"$OUT/headwater.toml"
printf '\n[[ladder.overrides]]\nstream = "demo"\nsource = true\n' >>"$OUT/headwater.toml"
./target/release/headwater check-config "$OUT/headwater.toml"
RUST_LOG=warn ./target/release/headwater serve --config "$OUT/headwater.toml" --dev-tls \
  2>"$OUT/headwater.log" &
HW=$!
PIDS+=("$HW")
for _ in $(seq 100); do curl -fs "http://$HTTP/healthz" >/dev/null && break; sleep 0.1; done

# 10 s of 720p30 at 4 Mbit/s: 2 s segments of ~1 MB.
ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 10 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 -b:v 4000k -maxrate 4000k -bufsize 4000k \
  -c:a aac -b:a 128k -f flv "rtmp://$RTMP/live/demo"
for _ in $(seq 100); do
  curl -fs "http://$HTTP/live/demo/source/index.m3u8" | grep -q ENDLIST && break
  sleep 0.2
done
PLAYLIST=/live/demo/source/index.m3u8
SEGMENT=/live/demo/source/$(curl -fs "http://$HTTP$PLAYLIST" | grep -v '^#' | sed -n 2p)
mkdir -p "$OUT/www/live/demo/source"
curl -fs "http://$HTTP$PLAYLIST" -o "$OUT/www$PLAYLIST"
curl -fs "http://$HTTP$SEGMENT" -o "$OUT/www$SEGMENT"

# nginx: same bytes, TLS with h1 and h2 (ALPN), self-signed.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$OUT/nginx/key.pem" -out "$OUT/nginx/cert.pem" 2>/dev/null
cat >"$OUT/nginx/nginx.conf" <<NGINX
worker_processes 2;
error_log $PWD/$OUT/nginx/error.log warn;
pid $PWD/$OUT/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile off;
  tcp_nopush off;
  keepalive_requests 1000000;
  types { application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }
  client_body_temp_path $PWD/$OUT/nginx/tmp; proxy_temp_path $PWD/$OUT/nginx/tmp;
  server {
    listen $NGINX ssl http2;
    ssl_certificate $PWD/$OUT/nginx/cert.pem;
    ssl_certificate_key $PWD/$OUT/nginx/key.pem;
    root $PWD/$OUT/www;
    location ~ \.m4s$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    location ~ \.m3u8$ { add_header Cache-Control "public, max-age=1"; }
  }
}
NGINX
mkdir -p "$OUT/nginx/tmp"
nginx -c "$PWD/$OUT/nginx/nginx.conf" -g 'daemon off;' &
NG=$!
PIDS+=("$NG")
for _ in $(seq 50); do curl -fsk "https://$NGINX$SEGMENT" -o /dev/null && break; sleep 0.1; done

TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user+system ticks of PID and its children processes (nginx workers).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

echo "| server | protocol | object | requests | req/s | MB/s | p50 ms | p99 ms | CPU s | CPU s/GB |" >"$OUT/results.md"
echo "|---|---|---|---|---|---|---|---|---|---|" >>"$OUT/results.md"

# run SERVER PID PROTO OBJECT-NAME COMMAND...: runs a bounded load, records one row.
run() {
  local server=$1 pid=$2 proto=$3 object=$4
  shift 4
  local before after log="$OUT/$server-$proto-$object"
  before=$(cpu_ticks "$pid")
  "$@" >"$log.out" 2>&1
  after=$(cpu_ticks "$pid")
  python3 - "$log" "$server" "$proto" "$object" "$((after - before))" "$TCK" >>"$OUT/results.md" <<'PY'
import json, re, sys
log, server, proto, obj, ticks, tck = sys.argv[1:]
cpu = int(ticks) / int(tck)
text = open(log + ".out").read()
if text.lstrip().startswith("{"):
    r = json.loads(text.strip().splitlines()[-1])
    n, secs, total, p50, p99 = r["requests"], r["seconds"], r["bytes"], r["p50_ms"], r["p99_ms"]
    assert r["errors"] == 0, text
else:
    m = re.search(r"finished in ([\d.]+)(ms|s),", text)
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", text)
    n = int(m.group(2))
    assert n == int(m.group(1)), text
    total = int(re.search(r"traffic: .*?\((\d+)\) total", text).group(1))
    lat = sorted(int(l.split()[2]) / 1000 for l in open(log + ".log") if l.strip())
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
print(f"| {server} | {proto} | {obj} | {n} | {n/secs:.0f} | {total/secs/1e6:.1f} | {p50:.2f} | {p99:.2f} | {cpu:.2f} | {cpu/(total/1e9):.2f} |")
PY
}

for object in segment playlist; do
  path=$SEGMENT
  [ "$object" = playlist ] && path=$PLAYLIST
  h2=(h2load -n "$REQ" -c "$CONC")
  run headwater "$HW" h1 "$object" "${h2[@]}" --h1 --log-file="$OUT/headwater-h1-$object.log" "http://$HTTP$path"
  run headwater "$HW" h1+tls "$object" "${h2[@]}" --h1 --log-file="$OUT/headwater-h1+tls-$object.log" "https://$TLS$path"
  run headwater "$HW" h2 "$object" "${h2[@]}" -m "$STREAMS" --log-file="$OUT/headwater-h2-$object.log" "https://$TLS$path"
  run headwater "$HW" h3 "$object" ./target/release/examples/h3_load --addr "$TLS" --path "$path" \
    --requests "$REQ" --connections "$CONC" --streams "$STREAMS"
  run nginx "$NG" h1+tls "$object" "${h2[@]}" --h1 --log-file="$OUT/nginx-h1+tls-$object.log" "https://$NGINX$path"
  run nginx "$NG" h2 "$object" "${h2[@]}" -m "$STREAMS" --log-file="$OUT/nginx-h2-$object.log" "https://$NGINX$path"
done
echo "segment: $(stat -c %s "$OUT/www$SEGMENT") bytes, playlist: $(stat -c %s "$OUT/www$PLAYLIST") bytes" | tee -a "$OUT/results.md"
cat "$OUT/results.md"
