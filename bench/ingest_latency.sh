#!/usr/bin/env bash
# Ingest-to-playlist latency with 2 s segments.
#
# Starts Headwater with bench/headwater.bench.toml but segment_target = "2s", publishes 60 s of
# 720p30 test video (GOP 60 frames = 2 s, x264 veryfast), then reads
# headwater_segment_publish_latency_seconds from /metrics: the time from the arrival of the
# keyframe that closes a segment to that segment being listed in the playlist.
#
# Caveats on the internal number:
#  * The 1-frame interval (33 ms at 30 fps): Headwater assigns audio by decode time, so it closes a
#    segment only once an audio frame at or after the cut has arrived too. ffmpeg's FLV muxer
#    interleaves by DTS and releases a packet only when every stream has one queued, so that
#    audio frame leaves ffmpeg together with the next video frame, one frame interval after the
#    keyframe. About 33 ms of the metric is therefore the publisher's packet cadence, not
#    Headwater's work (subtract ~33 ms for processing time). A player sees at least the segment
#    duration on top of all this.
#  * The exporter renders the histogram as a summary whose quantiles cover a rolling window of
#    3 x 20 s buckets (at most the last ~60 s), while _count/_sum are cumulative. So /metrics is
#    scraped while publishing (the last scrape before the publisher exits) and once after it.
#  * The segment flushed when the publisher disconnects is timed from the last keyframe, so the
#    "after" scrape contains one sample of roughly a GOP (up to ~2 s).
#
# External cross-check: bench/poll_playlist.py polls the media playlist every 5 ms and records
# when each new segment appears; the intervals between appearances should be ~2 s.
#
# Env: PUBLISH_SECONDS (60), POLL_MS (5), AUDIO (1; 0 publishes video only, so segments close
#      on the keyframe itself and the metric shows Headwater's processing alone), SKIP_BUILD=1, QUIET_WAIT (default 600; 0 = don't wait
#      for cargo/rustc to finish), KEEP_TMP=1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init

PUBLISH_SECONDS="${PUBLISH_SECONDS:-60}"
POLL_MS="${POLL_MS:-5}"
AUDIO="${AUDIO:-1}"
readonly METRIC="headwater_segment_publish_latency_seconds"

ensure_cmd ffmpeg ffmpeg
ensure_cmd curl curl
ensure_cmd python3 python3

require_port_free "$HW_HTTP" "Headwater HTTP"
require_port_free "$HW_RTMP" "Headwater RTMP"
build_release

config="$BENCH_TMP/headwater.latency.toml"
bench_config "$config" 2s
grep -q '^segment_target = "2s"' "$config" || die "could not set segment_target in $config"

wait_for_quiet
start_headwater "$config" "$BENCH_TMP/headwater.log"
log "Headwater pid $HW_PID; contention: $(contention_line)"

media_url="http://$HW_HTTP/live/demo/source/index.m3u8"
python3 bench/poll_playlist.py "$media_url" $((PUBLISH_SECONDS + 40)) "$POLL_MS" \
    >"$BENCH_TMP/poll.txt" 2>&1 &
POLL_PID=$!
CHILD_PIDS+=("$POLL_PID")

log "publishing ${PUBLISH_SECONDS}s (GOP 2 s, audio=$AUDIO) to rtmp://$HW_RTMP/live/$STREAM_KEY"
start_publisher "$PUBLISH_SECONDS" 60 "$BENCH_TMP/ffmpeg.log" "$AUDIO"
deadline=$((SECONDS + PUBLISH_SECONDS + 30))
midpoint=$((SECONDS + PUBLISH_SECONDS / 2))
contention_mid=""
while kill -0 "$PUB_PID" 2>/dev/null; do
    if [[ -z "$contention_mid" ]] && ((SECONDS >= midpoint)); then
        contention_mid="$(contention_line)"
    fi
    ((SECONDS < deadline)) || die "publisher still running after $((PUBLISH_SECONDS + 30))s"
    curl -sf --max-time 1 -o "$BENCH_TMP/metrics.next" "http://$HW_HTTP/metrics" &&
        mv "$BENCH_TMP/metrics.next" "$BENCH_TMP/metrics.during"
    sleep 1
done
wait_pid "$PUB_PID" 5 || {
    cat "$BENCH_TMP/ffmpeg.log" >&2
    die "the publisher (ffmpeg) failed"
}
contention_end="$(contention_line)"
sleep 1
curl -sf --max-time 2 -o "$BENCH_TMP/metrics.after" "http://$HW_HTTP/metrics" ||
    die "could not scrape /metrics"
[[ -f "$BENCH_TMP/metrics.during" ]] || cp "$BENCH_TMP/metrics.after" "$BENCH_TMP/metrics.during"

# Prints one Markdown row: label, p50/p90/p99/max in ms, samples (cumulative _count), segments.
metrics_row() {
    awk -v m="$METRIC" -v label="$1" '
        index($0, m "{quantile=\"") == 1 {
            q = $0; sub(/^[^"]*"/, "", q); sub(/".*/, "", q); v[q] = $NF * 1000 }
        $1 == m "_count" { count = $2 }
        $1 == "headwater_segments_published_total" { segs = $2 }
        END {
            printf "| %s | %.1f | %.1f | %.1f | %.1f | %s | %s |\n", label,
                v["0.5"], v["0.9"], v["0.99"], v["1"], count, segs }' "$2"
}

wait_pid "$POLL_PID" $((PUBLISH_SECONDS + 45)) || die "the playlist poller failed"

tracks="video + audio"
[[ "$AUDIO" == 0 ]] && tracks="video only"
printf '\n## Segment publish latency (segment_target 2s, %ss publish, 720p30 GOP 2 s, %s)\n\n' \
    "$PUBLISH_SECONDS" "$tracks"
printf 'From /metrics, %s (ms):\n\n' "$METRIC"
printf '| scrape | p50 | p90 | p99 | max | samples (_count) | headwater_segments_published_total |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
metrics_row "last scrape while publishing" "$BENCH_TMP/metrics.during"
metrics_row "after the publisher exited" "$BENCH_TMP/metrics.after"
printf '\nQuantiles cover the exporter'"'"'s rolling ~60 s window; _count is cumulative. The "after" row\n'
printf 'includes the segment flushed at disconnect, timed from the last keyframe (hence its max).\n'
printf 'About one frame interval (33 ms at 30 fps) of each sample is waiting for the audio frame past\n'
printf 'the cut, which ffmpeg interleaves after the next video frame; see the comment at the top.\n'
printf '\nExternal cross-check (playlist polled every %s ms):\n\n' "$POLL_MS"
sed 's/^/    /' "$BENCH_TMP/poll.txt"
printf '\ncontention halfway through publishing: %s\n' "$contention_mid"
printf 'contention when the publisher exited: %s\n' "$contention_end"

if grep -Eiq 'warn|error' "$BENCH_TMP/headwater.log"; then
    printf '\nHeadwater logged warnings/errors:\n'
    grep -Ei 'warn|error' "$BENCH_TMP/headwater.log" | head -n 20
fi
