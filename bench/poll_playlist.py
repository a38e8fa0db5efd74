#!/usr/bin/env python3
"""Polls a live HLS media playlist and reports when each new segment first appears.

Usage: poll_playlist.py URL MAX_SECONDS [INTERVAL_MS]

Stdlib only (urllib). Polls every INTERVAL_MS (default 5) until EXT-X-ENDLIST is seen or
MAX_SECONDS pass, then prints a short summary:
  * intervals between consecutive segment appearances (~ the segment duration when the
    packager keeps up);
  * an approximate external publish latency per segment: appearance time minus the wall time at
    which the segment's closing keyframe should have arrived, estimated as
    EXT-X-PROGRAM-DATE-TIME + EXTINF. PROGRAM-DATE-TIME is anchored to the arrival of the first
    keyframe, so this is only meaningful for a real-time (ffmpeg -re) publisher and includes
    its pacing jitter.
"""

import datetime
import statistics
import sys
import time
import urllib.error
import urllib.request


def pct(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values, unit_scale=1.0, fmt="{:.3f}"):
    if not values:
        return "n=0"
    scaled = [v * unit_scale for v in values]
    parts = [
        f"n={len(scaled)}",
        "min " + fmt.format(min(scaled)),
        "p50 " + fmt.format(pct(scaled, 50)),
        "p90 " + fmt.format(pct(scaled, 90)),
        "max " + fmt.format(max(scaled)),
        "mean " + fmt.format(statistics.fmean(scaled)),
    ]
    if len(scaled) > 1:
        parts.append("stdev " + fmt.format(statistics.stdev(scaled)))
    return ", ".join(parts)


def parse(body):
    """Yields (uri, program_date_time or None, extinf seconds) for each segment."""
    pdt, extinf = None, None
    for line in body.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.datetime.fromisoformat(line.split(":", 1)[1].strip()).timestamp()
        elif line.startswith("#EXTINF:"):
            extinf = float(line[len("#EXTINF:"):].split(",")[0])
        elif line and not line.startswith("#"):
            yield line, pdt, extinf
            pdt, extinf = None, None


def main():
    url = sys.argv[1]
    max_seconds = float(sys.argv[2])
    interval = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.005
    deadline = time.monotonic() + max_seconds
    seen = {}  # uri -> (appearance wall time, pdt, extinf)
    order = []
    polls, errors, rtts, ended = 0, 0, [], False
    while time.monotonic() < deadline and not ended:
        start = time.time()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code != 404:  # 404 until the first segment exists
                errors += 1
            body = None
        except (urllib.error.URLError, OSError):
            errors += 1
            body = None
        end = time.time()
        polls += 1
        if body is not None:
            rtts.append(end - start)
            now = (start + end) / 2
            for uri, pdt, extinf in parse(body):
                if uri not in seen:
                    seen[uri] = (now, pdt, extinf)
                    order.append(uri)
            ended = "#EXT-X-ENDLIST" in body
        time.sleep(max(0.0, interval - (time.time() - start)))

    print(f"polls: {polls}, errors: {errors}, ENDLIST seen: {ended}, segments seen: {len(order)}")
    if rtts:
        print(f"playlist request time (ms): {summary(rtts, 1000, '{:.1f}')}")
    times = [seen[u][0] for u in order]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # With ENDLIST, the last segment was flushed when the publisher disconnected, off the cadence.
    steady = gaps[:-1] if ended and gaps else gaps
    print(f"interval between segment appearances (s): {summary(steady)}")
    if ended and gaps:
        print(
            f"last segment (flushed at publisher disconnect, EXTINF "
            f"{seen[order[-1]][2]:.3f}s) appeared {gaps[-1]:.3f}s after the previous one"
        )
    same_poll = sum(1 for g in gaps if g == 0)
    if same_poll:
        print(f"note: {same_poll} segment(s) appeared in the same poll as the previous one")
    lat = [t - (p + d) for u in order for (t, p, d) in [seen[u]] if p is not None and d]
    lat_steady = lat[:-1] if ended and lat else lat
    print(
        "approx. external publish latency, appearance - (PROGRAM-DATE-TIME + EXTINF) (ms): "
        + summary(lat_steady, 1000, "{:.0f}")
    )


if __name__ == "__main__":
    main()
