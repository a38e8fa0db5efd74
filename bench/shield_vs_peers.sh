#!/usr/bin/env bash
# Shield benchmark (issue 4): `headwater shield` vs nginx proxy_cache vs Varnish, same origin,
# same objects, same client.
#
#   origin   nginx          127.0.0.1:19080  static seg-N.m4s (random bytes) + index.m3u8 from a temp
#                                            root; /fanin/ is proxied to the slow upstream below
#   slow     shield_fanin.py 127.0.0.1:19081 sleeps FANIN_DELAY_MS, then answers (fan-in objects)
#   caches   Headwater      127.0.0.1:19082  headwater shield, [cache] dir in the temp dir
#            nginx          127.0.0.1:19083  proxy_cache + proxy_cache_lock, keepalive upstream
#            Varnish        127.0.0.1:19084  malloc 256m, builtin VCL (+ an X-Cache header)
#
# 1. Warms each cache (every object fetched once), checks every body is byte-identical to the
#    origin's file through all three, prints each cache's response headers.
# 2. wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency against the segment and the playlist on
#    each cache, one run at a time (interleaved; the cache order rotates each round), and prints
#    requests/s, MB/s, p50/p99 and the Headwater/nginx and Headwater/Varnish ratios.
# 3. Cold-object fan-in: FANIN_CLIENTS connections ask one never-seen object at the same instant
#    (bench/shield_fanin.py); the slow upstream makes them all wait. Reports the upstream
#    requests per cache and the time from the upstream's last byte to each waiter's last byte.
#
# Env: DURATION (10s), CONNECTIONS (100), THREADS (2), ROUNDS (1; >1 reports medians),
#      SEGMENTS (4), SEGMENT_BYTES (1048576), FANIN_CLIENTS (1000), FANIN_DELAY_MS (200),
#      FANIN_SIZES ("1048576 2048": object sizes for the fan-in), FANIN_ROUNDS (1),
#      SKIP_BUILD=1 (use target/release/headwater as is), HEADWATER_BIN=/abs/path,
#      HEADWATER_REV=<commit> (build that commit, clean, outside the repo; see below),
#      QUIET_WAIT (seconds in all to wait for running cargo/rustc before measuring; default 0),
#      NGINX_SENDFILE (on; "off" makes the nginx cache write from user space like the others),
#      KEEP_TMP=1, SKIP_WRK=1, SKIP_FANIN=1.
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd -- "$HERE/.." && pwd)"
cd -- "$REPO"

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-100}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-1}"
SEGMENTS="${SEGMENTS:-4}"
SEGMENT_BYTES="${SEGMENT_BYTES:-1048576}"
FANIN_CLIENTS="${FANIN_CLIENTS:-1000}"
FANIN_DELAY_MS="${FANIN_DELAY_MS:-200}"
FANIN_SIZES="${FANIN_SIZES:-1048576 2048}"
FANIN_ROUNDS="${FANIN_ROUNDS:-1}"
QUIET_WAIT="${QUIET_WAIT:-0}"
NGINX_SENDFILE="${NGINX_SENDFILE:-on}"
HW_BIN="${HEADWATER_BIN:-$REPO/target/release/headwater}"

readonly ORIGIN=127.0.0.1:19080 SLOW=127.0.0.1:19081
readonly HW=127.0.0.1:19082 NGX=127.0.0.1:19083 VAR=127.0.0.1:19084
readonly CACHES=(hw nginx varnish)
declare -A ADDR=([hw]=$HW [nginx]=$NGX [varnish]=$VAR)
declare -A NAME=([hw]=Headwater [nginx]="nginx proxy_cache" [varnish]=Varnish)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# --- process tracking and cleanup --------------------------------------------------------------
PIDS=()
TMP=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 25); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ -n "${KEEP_TMP:-}" ]]; then log "kept temp dir $TMP"; else rm -rf -- "$TMP"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- packages ----------------------------------------------------------------------------------
APT_UPDATED=0
ensure_pkg() { # command package
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] && return 0
    log "installing $2 (for $1)"
    if ((APT_UPDATED == 0)); then
        apt-get update
        APT_UPDATED=1
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$2"
}
ensure_pkg nginx nginx-light
ensure_pkg varnishd varnish
ensure_pkg wrk wrk
ensure_pkg curl curl
ensure_pkg python3 python3
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
VARNISHD="$(command -v varnishd || echo /usr/sbin/varnishd)"

# 1000 client connections plus as many server-side sockets, in this one process tree.
if (($(ulimit -n) < 8192)); then
    ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
log "ulimit -n: $(ulimit -n) (hard $(ulimit -Hn))"
(($(ulimit -n) >= 2 * FANIN_CLIENTS + 100)) ||
    log "WARNING: ulimit -n $(ulimit -n) may be too low for $FANIN_CLIENTS fan-in clients"

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$ORIGIN" "$SLOW" "$HW" "$NGX" "$VAR"; do
    port_busy "$addr" && die "$addr is busy; stop whatever listens there (ss -ltnp 'sport = :${addr##*:}')"
done

# --- Headwater build ---------------------------------------------------------------------------
# Default: `cargo build --release --locked` of the working tree (other engineers' uncommitted
# changes included). HEADWATER_REV=<commit> instead builds exactly that commit from `git archive`
# in SHIELD_BUILD_DIR (outside the repository; the first build is seeded with a copy of
# target/release so only what differs is recompiled), for numbers tied to one revision.
HW_SOURCE="working tree"
HW_CONFIG_SRC="$REPO/config/headwater.toml"
if [[ -n "${HEADWATER_BIN:-}" ]]; then
    log "HEADWATER_BIN: $HW_BIN"
    HW_SOURCE="HEADWATER_BIN"
elif [[ -n "${HEADWATER_REV:-}" ]]; then
    rev="$(git rev-parse --verify "${HEADWATER_REV}^{commit}")" || die "HEADWATER_REV=$HEADWATER_REV is not a commit"
    build_dir="${SHIELD_BUILD_DIR:-${TMPDIR:-/tmp}/headwater-shield-build}"
    mkdir -p "$build_dir"
    if [[ ! -d "$build_dir/target/release" && -d target/release && -z "$(pgrep '^(cargo|rustc)' || true)" ]]; then
        log "seeding $build_dir/target with a copy of target/release"
        mkdir -p "$build_dir/target"
        cp -a target/release "$build_dir/target/"
        rm -f "$build_dir/target/release/headwater"
    fi
    if [[ ! -d "$build_dir/src-$rev" ]]; then
        mkdir -p "$build_dir/src-$rev.partial"
        git archive "$rev" | tar -x -C "$build_dir/src-$rev.partial"
        mv "$build_dir/src-$rev.partial" "$build_dir/src-$rev"
    fi
    log "cargo build --release --locked of $rev in $build_dir/src-$rev"
    cargo build --release --locked --manifest-path "$build_dir/src-$rev/Cargo.toml" --target-dir "$build_dir/target"
    HW_BIN="$build_dir/bin/headwater-$rev"
    mkdir -p "$build_dir/bin"
    cp "$build_dir/target/release/headwater" "$HW_BIN"
    HW_SOURCE="commit $rev (clean git archive)"
    HW_CONFIG_SRC="$build_dir/src-$rev/config/headwater.toml"
elif [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    log "SKIP_BUILD=1: using $HW_BIN"
    HW_SOURCE="existing binary"
else
    log "cargo build --release --locked"
    cargo build --release --locked
fi
[[ -x "$HW_BIN" ]] || die "$HW_BIN is not an executable"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/headwater-shield-bench.XXXXXX")"
chmod 755 "$TMP" # nginx workers run as nobody

# --- machine and versions ----------------------------------------------------------------------
competing() { pgrep '^(cargo|rustc)' 2>/dev/null | tr '\n' ' ' || true; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
QUIET_DEADLINE=$((SECONDS + QUIET_WAIT))
wait_quiet() {
    while [[ -n "$(competing)" ]] && ((SECONDS < QUIET_DEADLINE)); do
        log "cargo/rustc running ($(competing)); waiting (up to $((QUIET_DEADLINE - SECONDS))s more)"
        sleep 5
    done
}
# Load now plus the busiest processes over the next half second.
contention() {
    local busy
    busy="$(top -b -n 2 -d 0.5 -w 200 2>/dev/null | awk '
        /^top -/ { frame++ }
        frame == 2 && $1 ~ /^[0-9]+$/ && NF >= 12 && shown < 4 { printf "%s(%s%%) ", $12, $9; shown++ }')"
    printf 'loadavg %s | cargo/rustc pids: %s| busiest: %s' "$(loadavg)" "$(competing)" "$busy"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
    if [[ "$HW_SOURCE" == "working tree" || "$HW_SOURCE" == "existing binary" ]]; then
        HW_SOURCE="$HW_SOURCE at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src ingest Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
    fi
    echo "headwater: $HW_SOURCE; binary $HW_BIN built $(date -u -r "$HW_BIN" '+%Y-%m-%d %H:%M UTC')"
    echo "nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
    echo "varnish: $("$VARNISHD" -V 2>&1 | head -n 1)"
    echo "wrk: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
    echo "python: $(python3 --version 2>&1)"
} | tee "$TMP/versions.txt"

# --- objects -----------------------------------------------------------------------------------
www="$TMP/www"
mkdir -p "$www/live/bench/source" "$TMP/logs"
for ((i = 0; i < SEGMENTS; i++)); do
    head -c "$SEGMENT_BYTES" /dev/urandom >"$www/live/bench/source/seg-$i.m4s"
done
{
    printf '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n'
    printf '#EXT-X-MAP:URI="init.mp4"\n'
    for ((i = 0; i < SEGMENTS; i++)); do
        printf '#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:%02d.000Z\n#EXTINF:6.000,\nseg-%d.m4s\n' $((i * 6 % 60)) "$i"
    done
} >"$www/live/bench/source/index.m3u8"
chmod -R a+rX "$www"
SEG_PATH=/live/bench/source/seg-0.m4s
PL_PATH=/live/bench/source/index.m3u8
OBJECTS=("$PL_PATH")
for ((i = 0; i < SEGMENTS; i++)); do OBJECTS+=("/live/bench/source/seg-$i.m4s"); done
# The fan-in blob: what the slow upstream serves (a prefix of it).
head -c 1048576 /dev/urandom >"$TMP/fanin.blob"
max_fanin=0
for s in $FANIN_SIZES; do ((s > max_fanin)) && max_fanin=$s; done
((max_fanin <= 1048576)) || head -c "$max_fanin" /dev/urandom >"$TMP/fanin.blob"

# --- origin nginx (+ slow upstream) ------------------------------------------------------------
nginx_common() { # prefix
    cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
EOF
}
nginx_http_common() { # prefix [sendfile]
    cat <<EOF
    sendfile ${2:-on};
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    types { application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }
    default_type application/octet-stream;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}
start_nginx() { # prefix conf
    "$NGINX_BIN" -t -q -p "$1" -e "$1/error.log" -c "$2"
    "$NGINX_BIN" -p "$1" -e "$1/error.log" -c "$2" &
    PIDS+=($!)
}
wait_http() { # url seconds
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        ((SECONDS < deadline)) || die "$1 did not answer within $2s"
        sleep 0.2
    done
}

mkdir -p "$TMP/origin"
chmod 777 "$TMP/origin"
{
    nginx_common "$TMP/origin"
    cat <<EOF
worker_processes 2;
http {
$(nginx_http_common "$TMP/origin")
    # One line per request reaching the origin: how many requests each cache sends upstream.
    log_format up '\$msec \$status \$body_bytes_sent \$request_time "\$request" "\$http_user_agent"';
    access_log $TMP/logs/origin.access.log up;
    open_file_cache max=1000 inactive=60s;
    upstream slow { server $SLOW; keepalive 16; }
    server {
        listen $ORIGIN backlog=4096;
        root $www;
        location ~ \.m3u8\$ { add_header Cache-Control "public, max-age=1"; }
        location ~ \.m4s\$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
        # Fan-in objects come from the deliberately slow upstream, streamed through unbuffered.
        location ^~ /fanin/ {
            proxy_pass http://slow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
} >"$TMP/origin/nginx.conf"
start_nginx "$TMP/origin" "$TMP/origin/nginx.conf"

python3 "$HERE/shield_fanin.py" upstream --listen "$SLOW" --blob "$TMP/fanin.blob" \
    --delay-ms "$FANIN_DELAY_MS" --log "$TMP/logs/slow.jsonl" 2>"$TMP/logs/slow.log" &
PIDS+=($!)
wait_http "http://$ORIGIN$PL_PATH" 10
wait_http "http://$SLOW/" 10

# --- caches ------------------------------------------------------------------------------------
# Headwater: the shipped config with the cache in the temp dir (everything fits in memory). The
# config/headwater.toml of the source that was built first; if this binary rejects it (e.g. built
# before a config change in the working tree), HEAD's.
mkdir -p "$TMP/hw"
shield_config() { # source-toml-text on stdin
    awk -v dir="$TMP/hw/cache" '
        /^\[/ { section = $0 }
        section == "[cache]" && /^memory =/ { print "memory = \"256 MiB\""; next }
        section == "[cache]" && /^disk =/ { print "disk = \"256 MiB\""; next }
        section == "[cache]" && /^dir =/ { print "dir = \"" dir "\""; next }
        { print }'
}
shield_config <"$HW_CONFIG_SRC" >"$TMP/hw/shield.toml"
if ! "$HW_BIN" check-config "$TMP/hw/shield.toml" >/dev/null 2>"$TMP/hw/check.err"; then
    log "$HW_BIN rejects $HW_CONFIG_SRC; using git HEAD's config/headwater.toml"
    git show HEAD:config/headwater.toml | shield_config >"$TMP/hw/shield.toml"
    "$HW_BIN" check-config "$TMP/hw/shield.toml" >/dev/null ||
        die "no usable shield config (working tree: $(head -n 8 "$TMP/hw/check.err"))"
fi
grep -q "^dir = \"$TMP/hw/cache\"" "$TMP/hw/shield.toml" || die "could not set [cache] dir in the shield config"
(cd "$TMP/hw" && exec "$HW_BIN" shield --upstream "http://$ORIGIN" --listen "$HW" \
    --config "$TMP/hw/shield.toml") >"$TMP/logs/headwater.log" 2>&1 &
HW_PID=$!
PIDS+=("$HW_PID")

# nginx proxy_cache: lock on (one fill per object), stale-while-updating for the playlist.
mkdir -p "$TMP/ngx/cache"
chmod -R 777 "$TMP/ngx"
{
    nginx_common "$TMP/ngx"
    cat <<EOF
worker_processes 2;
http {
$(nginx_http_common "$TMP/ngx" "$NGINX_SENDFILE")
    access_log off;
    proxy_cache_path $TMP/ngx/cache levels=1:2 keys_zone=shield:16m max_size=1g inactive=1h use_temp_path=off;
    upstream origin { server $ORIGIN; keepalive 32; }
    server {
        listen $NGX backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache shield;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            proxy_cache_use_stale updating error timeout;
            proxy_cache_background_update on;
            add_header X-Cache \$upstream_cache_status always;
        }
    }
}
EOF
} >"$TMP/ngx/nginx.conf"
start_nginx "$TMP/ngx" "$TMP/ngx/nginx.conf"
NGX_PID="${PIDS[-1]}"

# Varnish: the builtin VCL (honours Cache-Control, coalesces on its waiting list) plus X-Cache.
mkdir -p "$TMP/varnish"
cat >"$TMP/varnish/default.vcl" <<EOF
vcl 4.1;
backend origin { .host = "${ORIGIN%:*}"; .port = "${ORIGIN##*:}"; }
sub vcl_deliver {
    if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
EOF
"$VARNISHD" -F -a "$VAR" -f "$TMP/varnish/default.vcl" -s malloc,256m -n "$TMP/varnish/work" \
    -T 127.0.0.1:0 >"$TMP/logs/varnish.log" 2>&1 &
VARNISH_PID=$!
PIDS+=("$VARNISH_PID")

wait_http "http://$HW/healthz" 20
# Not a listed object: the warm-up below must see every object's first fetch.
wait_http "http://$NGX/ready" 10
wait_http "http://$VAR/ready" 20
log "origin $ORIGIN, slow upstream $SLOW, caches: Headwater $HW, nginx $NGX, Varnish $VAR"

origin_lines() { wc -l <"$TMP/logs/origin.access.log"; }
declare -A SERVER_PID=([hw]=$HW_PID [nginx]=$NGX_PID [varnish]=$VARNISH_PID)
CLK_TCK="$(getconf CLK_TCK)"
# CPU time (clock ticks, user + system, all threads) of a process and its descendants: the
# server's own work, whatever share of the CPUs it managed to get on a busy machine.
tree_cpu() {
    local pids=("$1") i=0 total=0 pid t
    while ((i < ${#pids[@]})); do
        # shellcheck disable=SC2207
        pids+=($(pgrep -P "${pids[$i]}" || true))
        i=$((i + 1))
    done
    for pid in "${pids[@]}"; do
        t="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
threads() { # pid: threads of the process and its descendants
    local pids=("$1") i=0 n=0 pid
    while ((i < ${#pids[@]})); do
        # shellcheck disable=SC2207
        pids+=($(pgrep -P "${pids[$i]}" || true))
        i=$((i + 1))
    done
    for pid in "${pids[@]}"; do n=$((n + $(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l))); done
    echo "$n"
}
hw_metric() { # name: sum of a counter over its label sets
    curl -s --max-time 2 "http://$HW/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'
}

# --- warm-up, identical bodies, headers --------------------------------------------------------
printf '\n## Warm-up: every object once through each cache, bodies compared with the origin files\n'
for c in "${CACHES[@]}"; do
    for path in "${OBJECTS[@]}"; do
        curl -sf -o "$TMP/body" -D "$TMP/h1" "http://${ADDR[$c]}$path" ||
            die "${NAME[$c]}: GET $path failed: $(cat "$TMP/h1" 2>/dev/null)"
        cmp -s "$TMP/body" "$www$path" || die "${NAME[$c]}: body of $path differs from the origin's file"
        printf '%-9s %-32s first:  %s\n' "$c" "$path" "$(tr -d '\r' <"$TMP/h1" | grep -i '^x-cache:' || echo 'no X-Cache')"
    done
done
log "all ${#OBJECTS[@]} objects byte-identical to the origin through all three caches"
for path in "$SEG_PATH" "$PL_PATH"; do
    for c in "${CACHES[@]}"; do
        curl -sf -o "$TMP/body" -D "$TMP/h2" "http://${ADDR[$c]}$path"
        cmp -s "$TMP/body" "$www$path" || die "${NAME[$c]}: second GET $path differs from the origin's file"
        printf '\n--- %s, second GET %s ---\n' "${NAME[$c]}" "$path"
        tr -d '\r' <"$TMP/h2" | sed '/^$/d; s/^/  /'
    done
done

# --- wrk ---------------------------------------------------------------------------------------
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}
to_mb() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "B") n /= 1048576; else if (u == "KB") n /= 1024; else if (u == "GB") n *= 1024
        printf "%.1f", n }'
}
duration_secs() { awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print int(n) }'; }

declare -A R
run_wrk() { # cache object(segment|playlist) round
    local c="$1" obj="$2" round="$3" path url out up0 up1 hw0=0 before
    [[ "$obj" == segment ]] && path="$SEG_PATH" || path="$PL_PATH"
    url="http://${ADDR[$c]}$path"
    out="$TMP/wrk-$c-$obj-$round.txt"
    wait_quiet
    before="$(contention)"
    printf '\n=== %s / %s, round %s: %s\nbefore: %s\n' "${NAME[$c]}" "$obj" "$round" "$url" "$before"
    up0="$(origin_lines)"
    [[ "$c" == hw ]] && hw0="$(hw_metric headwater_upstream_requests_total)"
    local cpu0 cpu1
    cpu0="$(tree_cpu "${SERVER_PID[$c]}")"
    (
        sleep $(($(duration_secs "$DURATION") / 2))
        contention >"$out.mid"
    ) &
    local sampler=$!
    PIDS+=("$sampler")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" | tee "$out"
    cpu1="$(tree_cpu "${SERVER_PID[$c]}")"
    wait "$sampler" || true
    up1="$(origin_lines)"
    printf 'during: %s\n' "$(cat "$out.mid" 2>/dev/null)"
    R[$c.$obj.rps.$round]="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    R[$c.$obj.mbps.$round]="$(to_mb "$(awk '/^Transfer\/sec:/ { print $2 }' "$out")")"
    R[$c.$obj.p50.$round]="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
    R[$c.$obj.p99.$round]="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
    R[$c.$obj.errors.$round]="$(awk '/Non-2xx or 3xx responses:/ { e += $NF }
        /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 } END { print e + 0 }' "$out")"
    R[$c.$obj.upstream.$round]=$((up1 - up0))
    R[$c.$obj.load.$round]="$(awk '{ print $2 }' <<<"$before")"
    local requests
    requests="$(awk '/ requests in / { print $1 }' "$out")"
    R[$c.$obj.cpu_us.$round]="$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print 0 }')"
    R[$c.$obj.cpu_pct.$round]="$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v d="$(duration_secs "$DURATION")" \
        'BEGIN { printf "%.0f", t / hz / d * 100 }')"
    printf 'server CPU: %s%% of one core, %s us per request\n' "${R[$c.$obj.cpu_pct.$round]}" "${R[$c.$obj.cpu_us.$round]}"
    if [[ "$c" == hw ]]; then
        printf 'Headwater upstream requests during the run (metrics): %s\n' \
            "$(($(hw_metric headwater_upstream_requests_total) - hw0))"
    fi
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
value() { # cache obj metric
    local r vals=()
    for ((r = 1; r <= ROUNDS; r++)); do vals+=("${R[$1.$2.$3.$r]}"); done
    case "$3" in
        errors | upstream) printf '%s\n' "${vals[@]}" | awk '{ s += $1 } END { print s + 0 }' ;;
        load) printf '%s' "${vals[*]}" ;;
        *) printf '%s\n' "${vals[@]}" | median ;;
    esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

if [[ "${SKIP_WRK:-0}" != 1 ]]; then
    for ((round = 1; round <= ROUNDS; round++)); do
        # Rotate the cache order each round so none always runs first or last.
        order=("${CACHES[@]:$(((round - 1) % 3))}" "${CACHES[@]:0:$(((round - 1) % 3))}")
        for obj in segment playlist; do
            for c in "${order[@]}"; do run_wrk "$c" "$obj" "$round"; done
        done
    done
fi

# --- fan-in ------------------------------------------------------------------------------------
FANIN_JSON="$TMP/fanin.jsonl"
if [[ "${SKIP_FANIN:-0}" != 1 ]]; then
    for ((round = 1; round <= FANIN_ROUNDS; round++)); do
        order=("${CACHES[@]:$(((round - 1) % 3))}" "${CACHES[@]:0:$(((round - 1) % 3))}")
        for size in $FANIN_SIZES; do
            for c in "${order[@]}"; do
                wait_quiet
                path="/fanin/$c-r$round-$RANDOM$RANDOM-$size.m4s"
                printf '\n=== fan-in %s: %s clients, one cold %s B object, upstream delay %s ms\nbefore: %s\n' \
                    "${NAME[$c]}" "$FANIN_CLIENTS" "$size" "$FANIN_DELAY_MS" "$(contention)"
                o0="$(origin_lines)"
                python3 "$HERE/shield_fanin.py" client --url "http://${ADDR[$c]}$path" -n "$FANIN_CLIENTS" \
                    --upstream-log "$TMP/logs/slow.jsonl" --expect-file "$TMP/fanin.blob" \
                    --expect-bytes "$size" --label "$c $size $round" --json "$FANIN_JSON" ||
                    log "WARNING: fan-in against ${NAME[$c]} produced no usable measurement"
                printf 'origin access-log lines for %s: %s\n' "$path" \
                    "$(tail -n +"$((o0 + 1))" "$TMP/logs/origin.access.log" | grep -c -- "$path" || true)"
                sleep 1
            done
        done
    done
fi

# --- summary -----------------------------------------------------------------------------------
printf '\n\n# Summary\n\n'
cat "$TMP/versions.txt"
printf 'objects: %s segments of %s B (random bytes), playlist %s B\n' "$SEGMENTS" "$SEGMENT_BYTES" \
    "$(wc -c <"$www$PL_PATH")"

if [[ "${SKIP_WRK:-0}" != 1 ]]; then
    printf '\n## Hot objects: wrk -t%s -c%s -d%s --latency, %s round(s)%s\n\n' "$THREADS" "$CONNECTIONS" \
        "$DURATION" "$ROUNDS" "$(if ((ROUNDS > 1)); then echo ', medians'; fi)"
    printf '| object | cache | requests/s | MB/s | p50 ms | p99 ms | errors | upstream requests | server CPU %% | server CPU us/request | loadavg(1m) before |\n'
    printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    for obj in segment playlist; do
        for c in "${CACHES[@]}"; do
            printf '| %s | %s | %.0f | %.1f | %.2f | %.2f | %s | %s | %s | %s | %s |\n' "$obj" "${NAME[$c]}" \
                "$(value "$c" "$obj" rps)" "$(value "$c" "$obj" mbps)" "$(value "$c" "$obj" p50)" \
                "$(value "$c" "$obj" p99)" "$(value "$c" "$obj" errors)" "$(value "$c" "$obj" upstream)" \
                "$(value "$c" "$obj" cpu_pct)" "$(value "$c" "$obj" cpu_us)" "$(value "$c" "$obj" load)"
        done
    done
    printf '\n| object | ratio | requests/s | MB/s | p50 | p99 | server CPU us/request |\n|---|---|---:|---:|---:|---:|---:|\n'
    for obj in segment playlist; do
        for peer in nginx varnish; do
            printf '| %s | Headwater/%s | %s | %s | %s | %s | %s |\n' "$obj" "${NAME[$peer]%% *}" \
                "$(ratio "$(value hw "$obj" rps)" "$(value "$peer" "$obj" rps)")" \
                "$(ratio "$(value hw "$obj" mbps)" "$(value "$peer" "$obj" mbps)")" \
                "$(ratio "$(value hw "$obj" p50)" "$(value "$peer" "$obj" p50)")" \
                "$(ratio "$(value hw "$obj" p99)" "$(value "$peer" "$obj" p99)")" \
                "$(ratio "$(value hw "$obj" cpu_us)" "$(value "$peer" "$obj" cpu_us)")"
        done
    done
    printf '\nRatios above 1 are better for requests/s and MB/s, worse for latency and CPU per request.\n'
    printf 'Server CPU: user+system time of the server process tree during the run (%% of one core),\n'
    printf 'and per request. Threads: Headwater %s, nginx %s (master, 2 workers, cache manager + loader),\nVarnish %s (manager + child). nginx proxy_cache sendfile: %s.\n' \
        "$(threads "$HW_PID")" "$(threads "$NGX_PID")" "$(threads "$VARNISH_PID")" "$NGINX_SENDFILE"
fi

if [[ "${SKIP_FANIN:-0}" != 1 && -s "$FANIN_JSON" ]]; then
    printf '\n## Cold-object fan-in: %s clients, upstream answers after %s ms\n\n' "$FANIN_CLIENTS" "$FANIN_DELAY_MS"
    printf 'Times are from the slow upstream'"'"'s last byte sent to each client'"'"'s last (first) byte received.\n\n'
    python3 - "$FANIN_JSON" <<'EOF'
import json, sys
names = {"hw": "Headwater", "nginx": "nginx proxy_cache", "varnish": "Varnish"}
print("| cache | object B | round | upstream requests | ok | errors | X-Cache | last byte p50 / p99 / max ms | first byte p50 / p99 / max ms | requests sent over ms | loadavg(1m) |")
print("|---|---:|---:|---:|---:|---|---|---|---|---:|---|")
notes = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    cache, size, rnd = r["label"].split()
    lb, fb = r["last_byte_after_upstream_ms"], r["first_byte_after_upstream_ms"]
    errors = "; ".join("%s x%d" % (k, v) for k, v in r["errors"].items()) or "0"
    xc = " ".join("%s:%d" % kv for kv in sorted(r["x_cache"].items()))
    if r["body_mismatch"] or r["wrong_length"]:
        errors += " (BODY MISMATCH %d, wrong length %d)" % (r["body_mismatch"], r["wrong_length"])
    mark = "" if r.get("reference", "upstream log") == "upstream log" else " (a)"
    if mark:
        notes.append("(a) %s %s B round %s: reference = %s" % (names[cache], size, rnd, r["reference"]))
    print("| %s | %s | %s | %d | %d | %s | %s | %s / %s / %s%s | %s / %s / %s | %s | %s |" % (
        names[cache], size, rnd, r["upstream_requests"], r["ok"], errors, xc,
        lb["p50"], lb["p99"], lb["max"], mark, fb["p50"], fb["p99"], fb["max"], r["burst_ms"], r["loadavg"][0]))
if notes:
    print()
    print("\n".join(notes))
EOF
fi

# --- Headwater health after all that -----------------------------------------------------------
kill -0 "$HW_PID" 2>/dev/null || die "Headwater exited during the benchmark: $(tail -n 20 "$TMP/logs/headwater.log")"
printf '\n## Headwater counters at the end\n\n'
curl -s --max-time 2 "http://$HW/metrics" | grep -E '^headwater_(cache|upstream_requests|upstream_errors|http_requests)' | sed 's/^/    /' || true
if grep -Eiq 'warn|error' "$TMP/logs/headwater.log"; then
    printf '\nHeadwater logged warnings/errors:\n'
    grep -Ei 'warn|error' "$TMP/logs/headwater.log" | head -n 20 | sed 's/^/    /'
fi
if [[ -s "$TMP/ngx/error.log" ]]; then
    printf '\nnginx proxy_cache error log (tail):\n'
    tail -n 5 "$TMP/ngx/error.log" | sed 's/^/    /'
fi
