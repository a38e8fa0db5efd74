# Shared by scripts/*.sh: install missing Debian packages (fresh machines have only Rust,
# gcc, Python and Node.js).

# install_packages PKG...: apt-get install, as root or through sudo.
install_packages() {
  [ $# -eq 0 ] && return 0
  echo "installing Debian packages: $*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "$@" >/dev/null
}

# ensure_packages CMD:PACKAGE ...: installs PACKAGE when CMD is not on PATH.
ensure_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  install_packages "${missing[@]}"
}

# ensure_gstreamer: the GStreamer elements the publisher tests use.
ensure_gstreamer() {
  local element
  for element in videotestsrc x264enc h264parse flvmux rtmp2sink mpegtsmux srtsink avenc_aac \
      aacparse; do
    if ! gst-inspect-1.0 "$element" >/dev/null 2>&1; then
      install_packages gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      return
    fi
  done
}

# FFmpeg development libraries and the toolchain ffmpeg-next (bindgen) builds against; the
# `headwater` crate links libavcodec/libavformat/libavutil/libswscale.
readonly FFMPEG_DEV_PACKAGES=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev
  libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev)

# ensure_ffmpeg_dev: installs whichever of FFMPEG_DEV_PACKAGES is missing.
ensure_ffmpeg_dev() {
  local missing=() pkg
  for pkg in "${FFMPEG_DEV_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  install_packages "${missing[@]}"
}
