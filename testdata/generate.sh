#!/usr/bin/env bash
# Generates the fixtures under testdata/out/ (git-ignored) with the ffmpeg CLI.
# demo.flv: 20 s of testsrc2 720p30 + 440 Hz sine, H.264 High (2 s GOP, no scene cuts) + AAC-LC,
# the demo feed that scripts/demo.sh loops with -c copy.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p out
if [ ! -s out/demo.flv ]; then
  ffmpeg -hide_banner -loglevel error -nostdin -y \
    -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -t 20 -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
    -g 60 -keyint_min 60 -sc_threshold 0 -b:v 2500k -maxrate 2500k -bufsize 5000k \
    -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv out/demo.flv.tmp
  mv out/demo.flv.tmp out/demo.flv
fi
