# shellcheck shell=bash
# Helpers shared by the bench/ scripts. Sourced, not run. Expects `set -euo pipefail` in the caller
# and the current directory to be the repository root.

# Fixed addresses; they must match bench/headwater.bench.toml.
readonly HW_HTTP="127.0.0.1:18080"
readonly HW_RTMP="127.0.0.1:11935"
readonly HW_BIN="target/release/headwater"
readonly BENCH_TOML="bench/headwater.bench.toml"
readonly STREAM_KEY="demo"

# PIDs of everything this script started; killed (by PID only) on exit.
CHILD_PIDS=()
BENCH_TMP=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Kills what we started and removes the temp dir. Installed as the EXIT trap by bench_init.
bench_cleanup() {
    local pid
    for pid in "${CHILD_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${CHILD_PIDS[@]}"; do
        # Give each process a moment to exit, then insist.
        local i
        for i in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
            [[ $i -eq 10 ]] && kill -KILL "$pid" 2>/dev/null || true
        done
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" && -z "${KEEP_TMP:-}" ]]; then
        rm -rf -- "$BENCH_TMP"
    elif [[ -n "$BENCH_TMP" ]]; then
        log "kept temp dir $BENCH_TMP"
    fi
}

# cd to the repository root, create the temp dir, install the trap.
bench_init() {
    local here
    here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
    cd -- "$here/.."
    BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/headwater-bench.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Installs a Debian package when its command is missing.
ensure_cmd() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [[ -x "/usr/sbin/$cmd" ]] && return 0
    log "installing $pkg (for $cmd)"
    apt-get update
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$pkg"
}

# Fails with a clear message when something already listens on host:port.
require_port_free() {
    local addr="$1" what="$2"
    local host="${addr%:*}" port="${addr##*:}"
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        die "port $port on $host is busy (needed for $what); stop whatever listens there (ss -ltnp 'sport = :$port') and retry"
    fi
}

# Polls an URL until it answers 2xx or the timeout (seconds) passes.
wait_http() {
    local url="$1" timeout="$2" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        curl -sf -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.2
    done
    die "$url did not answer within ${timeout}s"
}

# Builds the release binary unless SKIP_BUILD=1.
build_release() {
    if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
        [[ -x "$HW_BIN" ]] || die "SKIP_BUILD=1 but $HW_BIN does not exist"
        log "SKIP_BUILD=1: using the existing $HW_BIN"
        return 0
    fi
    log "cargo build --release"
    cargo build --release
}

# Competing compilers (exact process names, so the pattern does not match environments or paths).
competing_builds() {
    pgrep -x 'cargo|rustc|cargo-fuzz' 2>/dev/null | tr '\n' ' ' || true
}

# Waits (QUIET_WAIT seconds, default 600; 0 = do not wait) until no cargo/rustc runs.
wait_for_quiet() {
    local limit="${QUIET_WAIT:-600}" deadline
    deadline=$((SECONDS + limit))
    while [[ -n "$(competing_builds)" ]] && ((SECONDS < deadline)); do
        log "cargo/rustc running (pids $(competing_builds)); waiting up to ${limit}s for them to finish"
        sleep 10
    done
    if [[ -n "$(competing_builds)" ]]; then
        log "WARNING: still contended after ${limit}s; measuring anyway"
    fi
}

# One line describing CPU contention right now: load average, competing builds, busiest processes.
contention_line() {
    local load busy
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    busy="$(ps -eo pcpu=,comm= --sort=-pcpu | head -n 4 | awk '{printf "%s(%s%%) ", $2, $1}')"
    printf 'loadavg %s | cargo/rustc: %s | top: %s' "$load" "$(competing_builds || true)" "$busy"
}

# Starts Headwater with a config file; sets HW_PID. Logs go to $2.
start_headwater() {
    local config="$1" logfile="$2"
    [[ -x "$HW_BIN" ]] || die "$HW_BIN missing; run cargo build --release"
    require_port_free "$HW_HTTP" "Headwater HTTP"
    require_port_free "$HW_RTMP" "Headwater RTMP"
    "$HW_BIN" check-config "$config" >/dev/null || die "$config is not a valid Headwater config"
    "$HW_BIN" serve --config "$config" >"$logfile" 2>&1 &
    HW_PID=$!
    CHILD_PIDS+=("$HW_PID")
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        kill -0 "$HW_PID" 2>/dev/null || {
            cat "$logfile" >&2
            die "Headwater exited during start-up (log above)"
        }
        curl -sf -o /dev/null --max-time 1 "http://$HW_HTTP/healthz" && return 0
        sleep 0.2
    done
    die "Headwater did not answer /healthz within 15s"
}

# Publishes the 720p30 test pattern for $1 seconds with a keyframe every $2 frames; sets PUB_PID.
start_publisher() {
    local seconds="$1" gop="$2" logfile="$3"
    ffmpeg -hide_banner -nostdin -loglevel warning \
        -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -c:v libx264 -preset veryfast -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
        -b:v 1300k -maxrate 1300k -bufsize 2600k -pix_fmt yuv420p \
        -c:a aac -b:a 96k -t "$seconds" \
        -f flv "rtmp://$HW_RTMP/live/$STREAM_KEY" >"$logfile" 2>&1 &
    PUB_PID=$!
    CHILD_PIDS+=("$PUB_PID")
}

# Waits up to $2 seconds for PID $1 to exit; returns its exit status (or dies on timeout).
wait_pid() {
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "process $pid still running after $2s"
        sleep 0.2
    done
    local rc=0
    wait "$pid" || rc=$?
    return "$rc"
}
