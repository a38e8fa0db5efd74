# shellcheck shell=bash
# Helpers shared by the bench/ scripts. Sourced, not run. Expects `set -euo pipefail` in the caller
# and the current directory to be the repository root.

# Fixed addresses; they must match bench/headwater.bench.toml.
readonly HW_HTTP="127.0.0.1:18080"
readonly HW_RTMP="127.0.0.1:11935"
# HEADWATER_BIN benchmarks another build (absolute path) and skips cargo build.
HW_BIN="${HEADWATER_BIN:-target/release/headwater}"
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
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
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
    cd -- "$here/.." || exit 1
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

# Builds the release binary unless SKIP_BUILD=1 or HEADWATER_BIN is set.
build_release() {
    if [[ -n "${HEADWATER_BIN:-}" ]]; then
        [[ -x "$HW_BIN" ]] || die "HEADWATER_BIN=$HW_BIN is not an executable"
        log "HEADWATER_BIN: using $HW_BIN"
        return 0
    fi
    if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
        [[ -x "$HW_BIN" ]] || die "SKIP_BUILD=1 but $HW_BIN does not exist"
        log "SKIP_BUILD=1: using the existing $HW_BIN"
        return 0
    fi
    log "cargo build --release"
    cargo build --release
}

# Competing builds: process names starting with cargo or rustc (cargo-fuzz, cargo-nextest too).
# Not `pgrep -f`: that also matches any process whose command line merely mentions ~/.cargo.
competing_builds() {
    pgrep '^(cargo|rustc)' 2>/dev/null | tr '\n' ' ' || true
}

# Waits until no cargo/rustc runs. QUIET_WAIT (seconds, default 600; 0 = never wait) is a budget
# for the whole script, shared by every call.
QUIET_DEADLINE=""
wait_for_quiet() {
    local limit="${QUIET_WAIT:-600}"
    [[ -n "$QUIET_DEADLINE" ]] || QUIET_DEADLINE=$((SECONDS + limit))
    while [[ -n "$(competing_builds)" ]] && ((SECONDS < QUIET_DEADLINE)); do
        log "cargo/rustc running (pids $(competing_builds)); waiting (up to $((QUIET_DEADLINE - SECONDS))s more)"
        sleep 5
    done
    if [[ -n "$(competing_builds)" ]]; then
        log "WARNING: cargo/rustc still running and the ${limit}s wait budget is spent; measuring anyway"
    fi
}

# One line describing CPU contention now: load average, competing builds, and the busiest
# processes over the next half second (top's second sample; its first is since boot).
contention_line() {
    local load busy
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    busy="$(top -b -n 2 -d 0.5 -w 200 2>/dev/null | awk '
        /^top -/ { frame++ }
        frame == 2 && $1 ~ /^[0-9]+$/ && NF >= 12 && shown < 5 { printf "%s(%s%%) ", $12, $9; shown++ }')"
    printf 'loadavg %s | cargo/rustc: %s| busiest: %s' "$load" "$(competing_builds)" "$busy"
}

# Writes the benchmark config to $1 (segment_target $2, default "6s"): bench/headwater.bench.toml
# when the binary accepts it, otherwise the tree's config/headwater.toml (or
# HEADWATER_CONFIG_TEMPLATE) with the same listeners and [hls] values, the disk cache off and
# the other listeners moved off their default ports ([shield] 18082, [srt] 19000) and, when the
# build has an ABR ladder, the stream `demo` passthrough-only (LADDER=1 keeps the tree's ladder).
bench_config() {
    local out="$1" target="${2:-6s}" template="${HEADWATER_CONFIG_TEMPLATE:-config/headwater.toml}"
    sed "s/^segment_target = .*/segment_target = \"$target\"/" "$BENCH_TOML" >"$out"
    if "$HW_BIN" check-config "$out" >/dev/null 2>&1; then
        return 0
    fi
    log "$HW_BIN rejects $BENCH_TOML: $(RUST_BACKTRACE=0 "$HW_BIN" check-config "$out" 2>&1 |
        awk 'NF { last = $0 } END { sub(/^ +/, "", last); print last }')"
    log "deriving the bench config from $template instead"
    [[ -f "$template" ]] || die "no config template $template"
    awk -v http="$HW_HTTP" -v rtmp="$HW_RTMP" -v target="$target" -v dir="$BENCH_TMP/cache" '
        /^\[/ { section = $0 }
        section == "[http]" && /^listen *=/ { $0 = "listen = \"" http "\"" }
        section == "[rtmp]" && /^listen *=/ { $0 = "listen = \"" rtmp "\"" }
        section == "[shield]" && /^listen *=/ { $0 = "listen = \"127.0.0.1:18082\"" }
        section == "[srt]" && /^listen *=/ { $0 = "listen = \"127.0.0.1:19000\"" }
        section == "[hls]" && /^segment_target *=/ { $0 = "segment_target = \"" target "\"" }
        section == "[hls]" && /^reconnect_grace *=/ { $0 = "reconnect_grace = \"2s\"" }
        section == "[hls]" && /^ended_retention *=/ { $0 = "ended_retention = \"1h\"" }
        section == "[cache]" && /^disk *=/ { $0 = "disk = \"0 B\"" }
        section == "[cache]" && /^dir *=/ { $0 = "dir = \"" dir "\"" }
        { print }' "$template" >"$out"
    # Builds with an ABR ladder: keep the benchmark stream passthrough-only, as the checked-in
    # config measures, unless LADDER=1.
    if grep -q '^\[ladder\]' "$out" && [[ "${LADDER:-0}" != 1 ]]; then
        printf '\n[[ladder.overrides]]\nstream = "demo"\nsource = true\n' >>"$out"
    fi
    "$HW_BIN" check-config "$out" >/dev/null || die "the derived config $out is not valid either"
}

# Starts Headwater with a config file; sets HW_PID. Logs go to $2.
start_headwater() {
    local config="$1" logfile="$2"
    [[ -x "$HW_BIN" ]] || die "$HW_BIN missing; run cargo build --release"
    require_port_free "$HW_HTTP" "Headwater HTTP"
    require_port_free "$HW_RTMP" "Headwater RTMP"
    "$HW_BIN" check-config "$config" >/dev/null || die "$config is not a valid Headwater config"
    # Run from the temp dir, so relative paths Headwater may write to stay out of the repository.
    local bin config_abs
    bin="$(realpath "$HW_BIN")"
    config_abs="$(realpath "$config")"
    (cd "$BENCH_TMP" && exec "$bin" serve --config "$config_abs") >"$logfile" 2>&1 &
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

# Publishes the 720p30 test pattern for $1 seconds with a keyframe every $2 frames, logging to
# $3; with $4 = 0 the 440 Hz AAC track is left out (video only). Sets PUB_PID.
start_publisher() {
    local seconds="$1" gop="$2" logfile="$3" audio="${4:-1}"
    local audio_in=(-f lavfi -i sine=frequency=440:sample_rate=48000)
    local audio_out=(-c:a aac -b:a 96k)
    if [[ "$audio" == 0 ]]; then
        audio_in=()
        audio_out=(-an)
    fi
    ffmpeg -hide_banner -nostdin -loglevel warning \
        -re -f lavfi -i testsrc2=size=1280x720:rate=30 "${audio_in[@]}" \
        -c:v libx264 -preset veryfast -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
        -b:v 1300k -maxrate 1300k -bufsize 2600k -pix_fmt yuv420p \
        "${audio_out[@]}" -t "$seconds" \
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
