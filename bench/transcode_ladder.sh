#!/usr/bin/env bash
# CPU cost and latency of the default ABR ladder: Headwater vs the ffmpeg CLI doing the same
# ladder in one process (one decode, split, bicubic scale, libx264 veryfast with the same rate
# control / keyframe settings, the source copied as a 4th variant, fMP4 HLS), same source.
#
#   bash bench/transcode_ladder.sh            # 60 s 720p30 source
#   DURATION=20 bash bench/transcode_ladder.sh
#
# Runs, one after the other (never concurrently, so neither steals the other's cores):
#   1. Headwater, source pushed unpaced (ffmpeg -c copy, no -re): CPU seconds and realtime
#      factor = media seconds / wall seconds until the last 360p segment is listed.
#   2. ffmpeg CLI, unpaced: CPU seconds (getrusage of the process) and realtime factor.
#   3. Headwater, paced (-re, 2 s segments): CPU seconds and latency from /metrics:
#      headwater_transcode_latency_seconds{rendition="360p"} (frame arrival -> encoded) and
#      headwater_transcode_segment_publish_latency_seconds{rendition="360p"} (arrival of the
#      frame that closes a segment -> that segment listed in the 360p playlist).
#   4. ffmpeg CLI, paced (-re): CPU seconds.
# Prints the CPU-seconds ratio Headwater / ffmpeg (goal <= 1.05).
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init

DURATION="${DURATION:-60}"
readonly TR_HTTP="127.0.0.1:18090"
readonly TR_RTMP="127.0.0.1:11945"

ensure_cmd ffmpeg ffmpeg
ensure_cmd python3 python3
require_port_free "$TR_HTTP" "Headwater HTTP"
require_port_free "$TR_RTMP" "Headwater RTMP"

log "building Headwater (release)"
cargo build --release --locked --quiet

mkdir -p bench/out
SRC="bench/out/transcode_src_${DURATION}s.flv"
if [[ ! -s "$SRC" ]]; then
    log "encoding the ${DURATION}s 720p30 source ($SRC)"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -t "$DURATION" -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
        -g 60 -keyint_min 60 -sc_threshold 0 -b:v 4000k -maxrate 4000k -bufsize 8000k \
        -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
fi

# Config: the shipped demo config (default ladder) on bench ports, no disk cache, a lag limit
# no unpaced push reaches (nothing is shed), a grace longer than a run.
config() {
    local target="$1" out="$2"
    sed -e "s/^listen = \"127.0.0.1:8080\"/listen = \"$TR_HTTP\"/" \
        -e "s/^listen = \"127.0.0.1:1935\"/listen = \"$TR_RTMP\"/" \
        -e 's/^listen = "127.0.0.1:8082"/listen = "127.0.0.1:18092"/' \
        -e 's/^disk = .*/disk = "0 B"/' \
        -e "s/^segment_target = .*/segment_target = \"${target}s\"/" \
        -e 's/^reconnect_grace = .*/reconnect_grace = "60s"/' \
        -e 's/^max_lag = .*/max_lag = "30m"/' \
        config/headwater.toml >"$out"
    grep -q "listen = \"$TR_HTTP\"" "$out" || die "could not derive the bench config"
}
config 6 "$BENCH_TMP/cpu.toml"
config 2 "$BENCH_TMP/latency.toml"

wait_for_quiet
log "contention before measuring: $(contention_line)"
python3 - "$SRC" "$DURATION" "$BENCH_TMP" "$TR_HTTP" "$TR_RTMP" <<'PY'
import os, re, signal, subprocess, sys, time, urllib.request

src, duration, tmp, http, rtmp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
TICK = os.sysconf("SC_CLK_TCK")

def cpu_of(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK

def get(path):
    try:
        with urllib.request.urlopen(f"http://{http}{path}", timeout=2) as r:
            return r.read().decode()
    except Exception:
        return None

def last_sequence(text):
    if not text:
        return -1
    m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    return int(m.group(1)) + text.count("#EXTINF") - 1 if m else -1

def headwater(config, paced, target):
    segments = -(-duration // target)
    log = open(f"{tmp}/headwater-{'paced' if paced else 'unpaced'}.log", "w")
    hw = subprocess.Popen(["target/release/headwater", "serve", "--config", config],
                          stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while get("/healthz") is None:
        assert time.monotonic() < deadline, "headwater did not start"
        time.sleep(0.05)
    cpu0, t0 = cpu_of(hw.pid), time.monotonic()
    pub = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
                           + (["-re"] if paced else [])
                           + ["-i", src, "-c", "copy", "-f", "flv", f"rtmp://{rtmp}/live/demo"])
    deadline = t0 + duration * 3 + 60
    while last_sequence(get("/live/demo/360p/index.m3u8")) < segments - 1:
        assert time.monotonic() < deadline, "the 360p rendition did not finish"
        time.sleep(0.02)
    wall, cpu = time.monotonic() - t0, cpu_of(hw.pid) - cpu0
    metrics = get("/metrics") or ""
    multivariant = get("/live/demo/index.m3u8") or ""
    pub.wait()
    hw.send_signal(signal.SIGTERM)
    hw.wait()
    return wall, cpu, metrics, multivariant

def ffmpeg(paced, target):
    out = f"{tmp}/ffmpeg-{'paced' if paced else 'unpaced'}"
    os.makedirs(out, exist_ok=True)
    split = ("[0:v]split=3[s0][s1][s2];[s0]scale=-2:720:flags=bicubic[v0];"
             "[s1]scale=-2:480:flags=bicubic[v1];[s2]scale=-2:360:flags=bicubic[v2]")
    cmd = (["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
           + (["-re"] if paced else [])
           + ["-i", src, "-filter_complex", split,
              "-map", "[v0]", "-map", "[v1]", "-map", "[v2]", "-map", "0:v",
              "-map", "0:a", "-map", "0:a", "-map", "0:a", "-map", "0:a",
              "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
              "-x264-params", "keyint=infinite:scenecut=0:open-gop=0:repeat-headers=1",
              "-forced-idr", "1", "-force_key_frames", f"expr:gte(t,n_forced*{target})",
              "-b:v:0", "3000k", "-maxrate:v:0", "3300k", "-bufsize:v:0", "6000k", "-profile:v:0", "high",
              "-b:v:1", "1400k", "-maxrate:v:1", "1540k", "-bufsize:v:1", "2800k", "-profile:v:1", "high",
              "-b:v:2", "800k", "-maxrate:v:2", "880k", "-bufsize:v:2", "1600k", "-profile:v:2", "main",
              "-c:v:3", "copy", "-c:a", "copy",
              "-f", "hls", "-hls_time", str(target), "-hls_segment_type", "fmp4", "-hls_list_size", "6",
              "-var_stream_map", "v:0,a:0 v:1,a:1 v:2,a:2 v:3,a:3", "-master_pl_name", "index.m3u8",
              "-hls_segment_filename", f"{out}/v%v_seg%d.m4s", f"{out}/v%v.m3u8"])
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)
    _, status, usage = os.wait4(p.pid, 0)
    assert status == 0, f"ffmpeg failed ({status})"
    return time.monotonic() - t0, usage.ru_utime + usage.ru_stime

def quantiles(metrics, name, rendition):
    out = {}
    for q in ("0.5", "0.99", "1"):
        m = re.search(rf'^{name}{{rendition="{rendition}",quantile="{q}"}} (\S+)$', metrics, re.M)
        out[q] = float(m.group(1)) if m else float("nan")
    return out

print(f"source: {src} ({duration} s, 1280x720 30 fps H.264 + AAC); ladder: source + 720p/480p/360p veryfast", flush=True)
hw_wall, hw_cpu, _, multivariant = headwater(f"{tmp}/cpu.toml", False, 6)
print(f"headwater unpaced: wall {hw_wall:.1f} s, cpu {hw_cpu:.1f} s, realtime factor {duration / hw_wall:.2f}x", flush=True)
ff_wall, ff_cpu = ffmpeg(False, 6)
print(f"ffmpeg    unpaced: wall {ff_wall:.1f} s, cpu {ff_cpu:.1f} s, realtime factor {duration / ff_wall:.2f}x", flush=True)
print(f"CPU-seconds ratio headwater/ffmpeg (unpaced): {hw_cpu / ff_cpu:.3f}  (goal <= 1.05)", flush=True)
hp_wall, hp_cpu, metrics, _ = headwater(f"{tmp}/latency.toml", True, 2)
print(f"headwater paced:   wall {hp_wall:.1f} s, cpu {hp_cpu:.1f} s ({hp_cpu / duration:.2f} cores)", flush=True)
fp_wall, fp_cpu = ffmpeg(True, 2)
print(f"ffmpeg    paced:   wall {fp_wall:.1f} s, cpu {fp_cpu:.1f} s ({fp_cpu / duration:.2f} cores)", flush=True)
print(f"CPU-seconds ratio headwater/ffmpeg (paced): {hp_cpu / fp_cpu:.3f}", flush=True)
enc = quantiles(metrics, "headwater_transcode_latency_seconds", "360p")
seg = quantiles(metrics, "headwater_transcode_segment_publish_latency_seconds", "360p")
print(f"360p frame arrival -> encoded:        p50 {enc['0.5']*1000:.0f} ms, p99 {enc['0.99']*1000:.0f} ms, max {enc['1']*1000:.0f} ms")
print(f"360p segment-closing frame -> listed: p50 {seg['0.5']*1000:.0f} ms, p99 {seg['0.99']*1000:.0f} ms, max {seg['1']*1000:.0f} ms")
rtf = re.search(r'^headwater_transcode_realtime_factor\{stream="demo"\} (\S+)$', metrics, re.M)
print(f"realtime factor gauge at the end of the paced run: {rtf.group(1) if rtf else 'n/a'}")
print("multivariant playlist (unpaced run):")
print(multivariant)
PY
