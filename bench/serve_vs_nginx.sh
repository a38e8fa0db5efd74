#!/usr/bin/env bash
# Serving throughput: Headwater vs nginx on the same bytes.
#
# Builds Headwater (release), publishes ~20 s of 720p30 test video, copies the final media
# playlist and one full ~1 MB segment into an nginx root with the same paths, checks both servers
# return identical bodies, then runs wrk against each (interleaved, never in parallel):
# playlist/Headwater, playlist/nginx, segment/Headwater, segment/nginx. Waits for running
# cargo/rustc to finish before each run and flags runs that were contended anyway. Prints a
# Markdown table.
#
# Env: DURATION (wrk -d, default 10s), CONNECTIONS (wrk -c, 100), THREADS (wrk -t, 2),
#      ROUNDS (1; >1 repeats the four runs and reports medians), PUBLISH_SECONDS (20),
#      NGINX_SENDFILE (on; "off" for a comparison), SKIP_BUILD=1, QUIET_WAIT (seconds to wait in
#      all for cargo/rustc to finish before measuring, default 600; 0 = don't wait),
#      KEEP_TMP=1 (keep the temp dir).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-100}"
THREADS="${THREADS:-2}"
PUBLISH_SECONDS="${PUBLISH_SECONDS:-20}"
NGINX_SENDFILE="${NGINX_SENDFILE:-on}"
ROUNDS="${ROUNDS:-1}"
readonly NGINX_HTTP="127.0.0.1:18081"
readonly MEDIA_PATH="live/demo/source/index.m3u8"

ensure_cmd ffmpeg ffmpeg
ensure_cmd nginx nginx-light
ensure_cmd wrk wrk
ensure_cmd curl curl
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"

require_port_free "$HW_HTTP" "Headwater HTTP"
require_port_free "$HW_RTMP" "Headwater RTMP"
require_port_free "$NGINX_HTTP" "nginx"

build_release

# --- Headwater + publisher -------------------------------------------------------------------
bench_config "$BENCH_TMP/headwater.toml" 6s
start_headwater "$BENCH_TMP/headwater.toml" "$BENCH_TMP/headwater.log"
log "Headwater pid $HW_PID on $HW_HTTP; publishing ${PUBLISH_SECONDS}s"
start_publisher "$PUBLISH_SECONDS" 60 "$BENCH_TMP/ffmpeg.log"

media_url="http://$HW_HTTP/$MEDIA_PATH"
segments_listed() {
    curl -sf --max-time 2 "$media_url" 2>/dev/null | grep -c '^#EXTINF' || true
}
deadline=$((SECONDS + PUBLISH_SECONDS + 30))
until (($(segments_listed) >= 2)); do
    ((SECONDS < deadline)) || die "media playlist never listed 2 segments (see $BENCH_TMP/headwater.log)"
    kill -0 "$HW_PID" 2>/dev/null || die "Headwater died: $(tail -n 5 "$BENCH_TMP/headwater.log")"
    sleep 0.5
done
log "media playlist lists >= 2 segments"
wait_pid "$PUB_PID" $((PUBLISH_SECONDS + 30)) || {
    cat "$BENCH_TMP/ffmpeg.log" >&2
    die "the publisher (ffmpeg) failed"
}
log "publisher exited; waiting for EXT-X-ENDLIST so the playlist stops changing"
deadline=$((SECONDS + 30))
until curl -sf --max-time 2 "$media_url" | grep -q '^#EXT-X-ENDLIST'; do
    ((SECONDS < deadline)) || die "no EXT-X-ENDLIST 30s after the publisher stopped"
    sleep 0.5
done

# --- nginx root with the same paths ----------------------------------------------------------
www="$BENCH_TMP/nginx/www"
mkdir -p "$www/live/demo/source" "$BENCH_TMP/nginx/logs"
curl -sf -o "$www/$MEDIA_PATH" "$media_url"
# The first listed segment at least 5 s long (a full ~6 s one, not the short tail).
segment_uri="$(awk -F'[:,]' '/^#EXTINF:/ { d = $2; next }
    /^[^#]/ && d >= 5 { print; exit }' "$www/$MEDIA_PATH")"
[[ -n "$segment_uri" ]] || die "no segment of >= 5 s in the playlist: $(cat "$www/$MEDIA_PATH")"
segment_path="live/demo/source/$segment_uri"
curl -sf -o "$www/$segment_path" "http://$HW_HTTP/$segment_path"
segment_bytes="$(wc -c <"$www/$segment_path")"
playlist_bytes="$(wc -c <"$www/$MEDIA_PATH")"
log "segment $segment_uri: $segment_bytes bytes; playlist: $playlist_bytes bytes"
# nginx workers run as nobody when started as root: make the tree readable.
chmod 755 "$BENCH_TMP" "$BENCH_TMP/nginx"
chmod -R a+rX "$www"

nginx_conf="$BENCH_TMP/nginx/nginx.conf"
cat >"$nginx_conf" <<EOF
worker_processes 2;
daemon off;
pid $BENCH_TMP/nginx/nginx.pid;
error_log $BENCH_TMP/nginx/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    sendfile $NGINX_SENDFILE;
    tcp_nopush on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    types {
        application/vnd.apple.mpegurl m3u8;
        video/iso.segment m4s;
        video/mp4 mp4;
    }
    default_type application/octet-stream;
    client_body_temp_path $BENCH_TMP/nginx/client_body;
    proxy_temp_path $BENCH_TMP/nginx/proxy;
    fastcgi_temp_path $BENCH_TMP/nginx/fastcgi;
    uwsgi_temp_path $BENCH_TMP/nginx/uwsgi;
    scgi_temp_path $BENCH_TMP/nginx/scgi;
    server {
        listen $NGINX_HTTP;
        root $www;
    }
}
EOF
"$NGINX_BIN" -t -q -p "$BENCH_TMP/nginx" -e "$BENCH_TMP/nginx/logs/error.log" -c "$nginx_conf"
"$NGINX_BIN" -p "$BENCH_TMP/nginx" -e "$BENCH_TMP/nginx/logs/error.log" -c "$nginx_conf" &
NGINX_PID=$!
CHILD_PIDS+=("$NGINX_PID")
wait_http "http://$NGINX_HTTP/$MEDIA_PATH" 10

# --- identical bodies, and the headers each server sends --------------------------------------
for path in "$MEDIA_PATH" "$segment_path"; do
    name="$(basename "$path")"
    curl -sf -D "$BENCH_TMP/hw-$name.headers" -o "$BENCH_TMP/hw-$name" "http://$HW_HTTP/$path"
    curl -sf -D "$BENCH_TMP/ng-$name.headers" -o "$BENCH_TMP/ng-$name" "http://$NGINX_HTTP/$path"
    cmp -s "$BENCH_TMP/hw-$name" "$BENCH_TMP/ng-$name" ||
        die "Headwater and nginx bodies differ for /$path"
    log "identical bodies for /$path ($(wc -c <"$BENCH_TMP/hw-$name") bytes)"
    printf '\n--- response headers for /%s ---\nHeadwater:\n' "$path"
    tr -d '\r' <"$BENCH_TMP/hw-$name.headers" | sed '/^$/d; s/^/  /'
    printf 'nginx:\n'
    tr -d '\r' <"$BENCH_TMP/ng-$name.headers" | sed '/^$/d; s/^/  /'
done

# --- wrk --------------------------------------------------------------------------------------
# Converts a wrk latency ("812.00us", "1.20ms", "2.01s", "1.00m") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u == "h") n *= 3600000
        printf "%.3f", n }'
}
# Converts a wrk size ("812.00KB", "1.20GB") to MB (2^20 bytes, as wrk counts).
to_mb() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "B") n /= 1048576; else if (u == "KB") n /= 1024; else if (u == "GB") n *= 1024
        else if (u == "TB") n *= 1048576
        printf "%.1f", n }'
}

# Seconds in a wrk duration ("10s", "2m", "30").
duration_secs() {
    awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600; print int(n) }'
}

declare -A RESULT
# Runs wrk once; stores its numbers in RESULT[label.metric.round].
run_wrk() {
    local label="$1" url="$2" round="$3" out="$BENCH_TMP/wrk-$1-$3.txt" sampler before
    wait_for_quiet
    curl -sf -o /dev/null --max-time 5 "$url" ||
        die "$url no longer answers 200 (server down, or the ended stream expired while waiting)"
    log "wrk $label (round $round): -t$THREADS -c$CONNECTIONS -d$DURATION $url"
    before="$(contention_line)"
    printf '\n=== %s, round %s: %s\nbefore: %s\n' "$label" "$round" "$url" "$before"
    # Samples CPU use halfway through the run (shows wrk, the server, and anything competing).
    (
        sleep $(($(duration_secs "$DURATION") / 2))
        contention_line >"$out.mid"
    ) &
    sampler=$!
    CHILD_PIDS+=("$sampler")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" | tee "$out"
    wait "$sampler" || true
    printf 'during: %s\n' "$(cat "$out.mid" 2>/dev/null)"
    RESULT[$label.rps.$round]="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    RESULT[$label.mbps.$round]="$(to_mb "$(awk '/^Transfer\/sec:/ { print $2 }' "$out")")"
    local pct
    for pct in 50 90 99; do
        RESULT[$label.p$pct.$round]="$(to_ms "$(awk -v p="$pct%" '$1 == p { print $2 }' "$out")")"
    done
    # Non-2xx responses and socket errors (0 when wrk prints none).
    RESULT[$label.errors.$round]="$(awk '/Non-2xx or 3xx responses:/ { e += $NF }
        /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 } END { print e + 0 }' "$out")"
    # A run is contended when cargo/rustc ran before it or halfway through it.
    if [[ "$before$(cat "$out.mid" 2>/dev/null)" =~ cargo/rustc:\ [0-9] ]]; then
        RESULT[$label.contended.$round]=1
    else
        RESULT[$label.contended.$round]=0
    fi
}

# Median over rounds (errors and contention: the sum).
value() {
    local label="$1" metric="$2" round values=()
    for ((round = 1; round <= ROUNDS; round++)); do
        values+=("${RESULT[$label.$metric.$round]}")
    done
    if [[ "$metric" == errors || "$metric" == contended ]]; then
        printf '%s\n' "${values[@]}" | awk '{ s += $1 } END { print s + 0 }'
    else
        printf '%s\n' "${values[@]}" | sort -g | awk '{ v[NR] = $1 }
            END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
    fi
}

# Table formatting: whole requests/s, one decimal for MB/s, two for milliseconds.
fmt() {
    case "$1" in
        rps) awk -v v="$2" 'BEGIN { printf "%.0f", v }' ;;
        mbps) awk -v v="$2" 'BEGIN { printf "%.1f", v }' ;;
        p*) awk -v v="$2" 'BEGIN { printf "%.2f", v }' ;;
        *) printf '%s' "$2" ;;
    esac
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

for ((round = 1; round <= ROUNDS; round++)); do
    run_wrk hw-playlist "http://$HW_HTTP/$MEDIA_PATH" "$round"
    run_wrk nginx-playlist "http://$NGINX_HTTP/$MEDIA_PATH" "$round"
    run_wrk hw-segment "http://$HW_HTTP/$segment_path" "$round"
    run_wrk nginx-segment "http://$NGINX_HTTP/$segment_path" "$round"
done

printf '\n## Headwater vs nginx: wrk -t%s -c%s -d%s --latency, %s round(s)%s\n\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$( ((ROUNDS > 1)) && echo ', medians')"
printf 'playlist %s B, segment %s B (%s); nginx sendfile %s\n\n' \
    "$playlist_bytes" "$segment_bytes" "$segment_uri" "$NGINX_SENDFILE"
printf '| metric | playlist Headwater | playlist nginx | HW/nginx | segment Headwater | segment nginx | HW/nginx |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for metric in rps mbps p50 p90 p99 errors contended; do
    case "$metric" in
        rps) title="requests/s" ;;
        mbps) title="transfer MB/s" ;;
        errors) title="errors (non-2xx + socket)" ;;
        contended) title="runs with cargo/rustc running" ;;
        *) title="latency ${metric} (ms)" ;;
    esac
    hp="$(value hw-playlist "$metric")" np="$(value nginx-playlist "$metric")"
    hs="$(value hw-segment "$metric")" ns="$(value nginx-segment "$metric")"
    if [[ "$metric" == errors || "$metric" == contended ]]; then
        printf '| %s | %s | %s | | %s | %s | |\n' "$title" "$hp" "$np" "$hs" "$ns"
    else
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$title" \
            "$(fmt "$metric" "$hp")" "$(fmt "$metric" "$np")" "$(ratio "$hp" "$np")" \
            "$(fmt "$metric" "$hs")" "$(fmt "$metric" "$ns")" "$(ratio "$hs" "$ns")"
    fi
done
printf '\nRatios are Headwater/nginx: above 1 is better for requests/s and MB/s, worse for latency.\n'
printf 'MB/s counts response headers too: %s B from Headwater, %s B from nginx (playlist response).\n' \
    "$(wc -c <"$BENCH_TMP/hw-index.m3u8.headers")" "$(wc -c <"$BENCH_TMP/ng-index.m3u8.headers")"

if grep -Eiq 'warn|error' "$BENCH_TMP/headwater.log"; then
    printf '\nHeadwater logged warnings/errors:\n'
    grep -Ei 'warn|error' "$BENCH_TMP/headwater.log" | head -n 20
fi
kill -0 "$HW_PID" 2>/dev/null || die "Headwater is no longer running after the benchmark"
