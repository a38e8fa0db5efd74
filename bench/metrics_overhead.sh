#!/usr/bin/env bash
# Metrics overhead: segment serving throughput of Headwater with metrics on vs off, same run.
# Two shields (identical but for `[observe] metrics`) in front of one static nginx upstream serve
# the same ~1 MB cached segment; wrk runs against each in turn, ROUNDS times, interleaved, so
# machine noise hits both alike. Access logs are off in both (they are measured separately, once).
# Usage: bash bench/metrics_overhead.sh   (env: DURATION=8 CONNECTIONS=100 ROUNDS=3 HEADWATER_BIN=path)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-100}"
ROUNDS="${ROUNDS:-3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/headwater-metrics.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

for cmd in wrk:wrk nginx:nginx-light; do
  command -v "${cmd%%:*}" >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${cmd#*:}" >/dev/null; }
done
# HEADWATER_BIN benchmarks an existing build instead of building one.
BIN="${HEADWATER_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release --locked -q
  BIN=target/release/headwater
fi

# Upstream: nginx serving one segment.
mkdir -p "$TMP/root/live/s/v" "$TMP/nginx"
chmod 755 "$TMP"  # nginx workers run unprivileged
head -c 1000000 /dev/urandom > "$TMP/root/live/s/v/seg-1.m4s"
chmod -R a+rX "$TMP/root"
cat > "$TMP/nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $TMP/nginx/pid; error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $TMP/nginx/b; proxy_temp_path $TMP/nginx/p;
  fastcgi_temp_path $TMP/nginx/f; uwsgi_temp_path $TMP/nginx/u; scgi_temp_path $TMP/nginx/s;
  server { listen 127.0.0.1:19180; root $TMP/root;
    location / { add_header Cache-Control "public, max-age=31536000, immutable"; } } }
CONF
nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" & PIDS+=($!)

start_shield() { # name port metrics
  sed -e "s|^listen = \"127.0.0.1:8082\"|listen = \"127.0.0.1:$2\"|" \
      -e "s|^upstream = .*|upstream = \"http://127.0.0.1:19180\"|" \
      -e "s|^dir = \"data/cache\"|dir = \"$TMP/cache-$1\"|" \
      -e "s|^access_log = true|access_log = ${4:-false}|" \
      -e "s|^metrics = true|metrics = $3|" config/headwater.toml > "$TMP/$1.toml"
  RUST_LOG=warn "$BIN" shield --config "$TMP/$1.toml" > "$TMP/$1.log" 2>&1 & PIDS+=($!)
}
start_shield on 19181 true
start_shield off 19182 false
start_shield logs 19183 true true
for port in 19180 19181 19182 19183; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/live/s/v/seg-1.m4s" && break; sleep 0.1; done
done
cmp <(curl -fs http://127.0.0.1:19181/live/s/v/seg-1.m4s) "$TMP/root/live/s/v/seg-1.m4s"
cmp <(curl -fs http://127.0.0.1:19182/live/s/v/seg-1.m4s) "$TMP/root/live/s/v/seg-1.m4s"
curl -fs http://127.0.0.1:19181/metrics > "$TMP/metrics.txt"
grep -q headwater_http_requests_total "$TMP/metrics.txt" || { echo "metrics missing on the 'on' shield" >&2; exit 1; }
if curl -fs -o /dev/null http://127.0.0.1:19182/metrics; then echo "the 'off' shield still serves /metrics" >&2; exit 1; fi

run() { # port -> requests/s
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$1/live/s/v/seg-1.m4s" | awk '/Requests\/sec/ {print $2}'
}
declare -a ON OFF
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  ON+=("$(run 19181)"); OFF+=("$(run 19182)")
  echo "round $round: metrics on ${ON[-1]} req/s, off ${OFF[-1]} req/s"
done
LOGS="$(run 19183)"
python3 - "${ON[*]}" "${OFF[*]}" "$LOGS" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
logs = float(sys.argv[3])
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"median req/s (1 MB segment): metrics on {m_on:.0f}, off {m_off:.0f}; overhead {100 * (1 - m_on / m_off):+.1f}% (goal < 3%)")
print(f"with access log + metrics (one run): {logs:.0f} req/s ({100 * (1 - logs / m_off):+.1f}% vs off)")
PY
