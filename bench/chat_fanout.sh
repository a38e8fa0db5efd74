#!/usr/bin/env bash
# Chat fan-out benchmark (issue 7): one room, SUBSCRIBERS read-only WebSocket subscribers, one
# sender posting RATE msgs/s for SEND_SECONDS s. Reports fan-out latency (receive - send, measured by
# the subscribers), lost deliveries, server RSS per connection, server CPU over the send period
# and the server's own headwater_chat_fanout_duration_seconds. Load generator:
# examples/chat_load.rs. Everything on 127.0.0.1; every phase is bounded in time.
#
# Env: SUBSCRIBERS (10000), RATE (20), SEND_SECONDS (30), BATCH (250 connections at a time),
# CONNECT_BUDGET (180 s for the whole connect phase), DRAIN (10 s), SKIP_BUILD=1,
# HEADWATER_BIN=/abs/path, QUIET_WAIT (600; 0 = do not wait for cargo/rustc), KEEP_TMP=1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init

SUBSCRIBERS="${SUBSCRIBERS:-10000}"
RATE="${RATE:-20}"
SECONDS_SEND="${SEND_SECONDS:-30}"
BATCH="${BATCH:-250}"
CONNECT_BUDGET="${CONNECT_BUDGET:-180}"
DRAIN="${DRAIN:-10}"
LOAD_BIN="target/release/examples/chat_load"

# Each subscriber costs one fd in the client and one in the server (both inherit this limit).
want_fds=$((SUBSCRIBERS + 1024))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds="$(ulimit -n)"
log "open files limit: $fds (hard $(ulimit -Hn)); needed about $want_fds per process"
if ((fds < want_fds)); then
    die "ulimit -n is $fds (hard limit $(ulimit -Hn)): not enough for $SUBSCRIBERS subscribers; lower SUBSCRIBERS to at most $((fds - 1024))"
fi
ports="$(cut -f1,2 /proc/sys/net/ipv4/ip_local_port_range)"
log "ephemeral ports: $ports (one per subscriber, all from 127.0.0.1)"

if [[ -z "${HEADWATER_BIN:-}" && "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bin headwater --example chat_load"
    cargo build --release --bin headwater --example chat_load
fi
[[ -x "$HW_BIN" ]] || die "$HW_BIN missing"
[[ -x "$LOAD_BIN" ]] || die "$LOAD_BIN missing; run cargo build --release --example chat_load"

# Free ports for HTTP, RTMP, SRT and the shield listener (the kernel picks them).
read -r HTTP_PORT RTMP_PORT SRT_PORT SHIELD_PORT < <(python3 - <<'EOF'
import socket
socks = []
for kind in (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)
ADDR="127.0.0.1:$HTTP_PORT"

# Temp config: the tree's config with the listeners on free ports, data and cache in the temp
# dir, the disk cache off, and the chat limits raised so SUBSCRIBERS connections from 127.0.0.1
# fit (per address, per room, per node) and the sender may post RATE msgs/s.
CONFIG="$BENCH_TMP/headwater.toml"
cap=$((SUBSCRIBERS + 100))
mkdir -p "$BENCH_TMP/data" "$BENCH_TMP/cache"
awk -v http="$ADDR" -v rtmp="127.0.0.1:$RTMP_PORT" -v srt="127.0.0.1:$SRT_PORT" \
    -v shield="127.0.0.1:$SHIELD_PORT" -v tmp="$BENCH_TMP" -v cap="$cap" -v rate="$RATE" '
    /^\[/ { section = $0 }
    section == "[http]" && /^listen *=/ { $0 = "listen = \"" http "\"" }
    section == "[rtmp]" && /^listen *=/ { $0 = "listen = \"" rtmp "\"" }
    section == "[srt]" && /^listen *=/ { $0 = "listen = \"" srt "\"" }
    section == "[shield]" && /^listen *=/ { $0 = "listen = \"" shield "\"" }
    section == "[limits]" && /^max_connections *=/ { $0 = "max_connections = " cap }
    section == "[cache]" && /^disk *=/ { $0 = "disk = \"0 B\"" }
    section == "[cache]" && /^dir *=/ { $0 = "dir = \"" tmp "/cache\"" }
    section == "[observe]" && /^access_log *=/ { $0 = "access_log = false" }
    section == "[api]" && /^data_dir *=/ { $0 = "data_dir = \"" tmp "/data\"" }
    section == "[chat]" && /^max_connections *=/ { $0 = "max_connections = " cap }
    section == "[chat]" && /^max_room_connections *=/ { $0 = "max_room_connections = " cap }
    section == "[chat]" && /^max_connections_per_address *=/ { $0 = "max_connections_per_address = " cap }
    section == "[chat]" && /^rate_limit *=/ { $0 = "rate_limit = " (rate * 2) }
    section == "[chat]" && /^rate_burst *=/ { $0 = "rate_burst = " (rate * 2) }
    { print }' config/headwater.toml >"$CONFIG"
"$HW_BIN" check-config "$CONFIG" >/dev/null || die "the derived config $CONFIG is not valid"
log "config: $CONFIG ([chat] caps $cap, rate_limit $((RATE * 2)); [limits] max_connections $cap; access log off)"

wait_for_quiet
log "before: $(contention_line)"
log "loadavg before: $(cat /proc/loadavg)"

bin="$(realpath "$HW_BIN")"
(cd "$BENCH_TMP" && exec "$bin" serve --config "$CONFIG") >"$BENCH_TMP/headwater.log" 2>&1 &
HW_PID=$!
CHILD_PIDS+=("$HW_PID")
wait_http "http://$ADDR/healthz" 15
log "headwater $($bin --version 2>/dev/null || true) pid $HW_PID on $ADDR (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"

OUT="$BENCH_TMP/chat_load.out"
timeout $((CONNECT_BUDGET + SECONDS_SEND + DRAIN + 120)) "$LOAD_BIN" \
    --addr "$ADDR" --subscribers "$SUBSCRIBERS" --batch "$BATCH" \
    --connect-budget "$CONNECT_BUDGET" --rate "$RATE" --seconds "$SECONDS_SEND" \
    --drain "$DRAIN" --server-pid "$HW_PID" --clk-tck "$(getconf CLK_TCK)" \
    >"$OUT" 2>"$BENCH_TMP/chat_load.err" &
LOAD_PID=$!
CHILD_PIDS+=("$LOAD_PID")
# Halfway through sending, a contention sample (the load generator shares the CPUs).
(
    sleep $((SECONDS_SEND / 2 + 5))
    kill -0 "$LOAD_PID" 2>/dev/null && log "during: $(contention_line)"
) &
CHILD_PIDS+=("$!")
wait "$LOAD_PID" || log "WARNING: chat_load exited with status $?"
grep '^\[chat_load\]' "$BENCH_TMP/chat_load.err" >&2 || true
log "loadavg after: $(cat /proc/loadavg)"
[[ -s "$OUT" ]] || {
    tail -20 "$BENCH_TMP/chat_load.err" >&2
    die "no results from chat_load"
}

v() { awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$OUT"; }
echo
echo "## Chat fan-out: $(v subscribers_connected) subscribers, one sender at $RATE msg/s for ${SECONDS_SEND} s"
echo
echo "| metric | value |"
echo "|---|---:|"
echo "| subscribers connected / failed | $(v subscribers_connected) / $(v subscribers_failed) (connect phase $(v connect_seconds) s) |"
echo "| messages sent | $(v messages_sent) in $(v send_seconds) s |"
echo "| deliveries expected / received / lost | $(v deliveries_expected) / $(v deliveries_received) / $(v deliveries_lost) |"
echo "| subscribers closed during the run | $(v subscribers_closed_during_run) |"
echo "| fan-out latency p50 / p90 / p99 / p99.9 / max (ms, send -> subscriber) | $(v latency_p50_ms) / $(v latency_p90_ms) / $(v latency_p99_ms) / $(v latency_p999_ms) / $(v latency_max_ms) |"
echo "| server fan-out histogram: samples, mean, p50, p99 (ms, broadcast -> written) | $(v server_fanout_samples), $(v server_fanout_mean_ms), $(v server_fanout_p50_ms), $(v server_fanout_p99_ms) |"
echo "| server RSS before / connected / after sending (kB) | $(v server_rss_before_kb) / $(v server_rss_connected_kb) / $(v server_rss_after_send_kb) |"
echo "| server RSS per connection (kB) | $(v server_rss_per_connection_kb) |"
echo "| server CPU over the send period (s, cores) | $(v server_cpu_seconds_send), $(v server_cpu_cores_send) |"
echo "| load generator CPU over the send period (s, cores) | $(v client_cpu_seconds_send), $(v client_cpu_cores_send) |"
echo
echo "server fan-out buckets (delta over the send period, cumulative, le in ms): $(v server_fanout_buckets_ms)"
grep '^closed_reason' "$OUT" || true
echo
echo "headwater_chat_* after sending:"
sed -n '/^--- after sending ---$/,$p' "$BENCH_TMP/chat_load.err" | grep -v '^---' | grep -v '_bucket' || true
if grep -qiE 'panic|error' "$BENCH_TMP/headwater.log"; then
    echo
    echo "headwater log (errors):"
    grep -iE 'panic|error' "$BENCH_TMP/headwater.log" | tail -5
fi
