// Plays /live/<stream>/index.m3u8: native HLS where the browser has it (Safari), hls.js
// elsewhere; quality selector (auto + each rendition) and a live-latency readout.
'use strict';
(function () {
  const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
  const source = '/live/' + encodeURIComponent(stream) + '/index.m3u8';
  const video = document.getElementById('video');
  const quality = document.getElementById('quality');
  const latency = document.getElementById('latency');
  const status = document.getElementById('status');
  const heading = document.getElementById('title');
  // Read by the browser tests: fatal errors and the hls.js instance.
  window.headwater = { errors: [], hls: null, native: false };

  fetch('/api/v1/streams/' + encodeURIComponent(stream))
    .then((r) => (r.ok ? r.json() : null))
    .then((detail) => {
      const name = (detail && detail.title) || stream;
      heading.textContent = name;
      document.title = name + ' · Headwater';
    })
    .catch(() => {});
  heading.textContent = stream;

  async function waitForPlaylist() {
    for (;;) {
      try {
        const response = await fetch(source, { method: 'HEAD', cache: 'no-store' });
        if (response.ok) return;
        status.textContent = response.status === 404 ? 'Waiting for the stream to start…' : 'Server answered ' + response.status + '; retrying…';
      } catch (e) {
        status.textContent = 'Connection lost; retrying…';
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  function showError(message) {
    window.headwater.errors.push(message);
    status.textContent = message;
    status.className = 'error';
  }

  // Safari plays HLS natively: no hls.js there. Recent Chromium also answers "maybe" to
  // canPlayType, but its native player offers no quality control, so it gets hls.js.
  const nativeHls = video.canPlayType('application/vnd.apple.mpegurl') !== '';
  const apple = (navigator.vendor || '').startsWith('Apple');
  if (nativeHls && (apple || !(window.Hls && Hls.isSupported()))) {
    window.headwater.native = true;
    video.src = source;
    quality.disabled = true;
  } else if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ cmcd: { useHeaders: false } });
    window.headwater.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      const options = [new Option('Auto', '-1')];
      data.levels.forEach((level, index) => {
        const label = (level.height ? level.height + 'p' : level.name || 'level ' + index) +
          ' · ' + Math.round(level.bitrate / 1000) + ' kbps';
        options.push(new Option(label, String(index)));
      });
      quality.replaceChildren(...options);
      quality.disabled = false;
      status.textContent = '';
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
      if (hls.autoLevelEnabled) quality.options[0].textContent = 'Auto (' + (hls.levels[data.level].height || data.level) + 'p)';
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) showError('Playback error: ' + data.type + ' / ' + data.details);
    });
    quality.addEventListener('change', () => {
      hls.currentLevel = Number(quality.value);
    });
    // A stream is listed as soon as its publisher connects, but its playlist exists only after
    // the first segment: wait for it rather than fail on the 404.
    waitForPlaylist().then(() => {
      hls.loadSource(source);
      hls.attachMedia(video);
    });
  } else {
    showError('This browser cannot play HLS.');
  }
  video.play().catch(() => { status.textContent = 'Press play to start.'; });

  setInterval(() => {
    const hls = window.headwater.hls;
    let seconds = hls && Number.isFinite(hls.latency) && hls.latency > 0 ? hls.latency : null;
    if (seconds === null && video.seekable.length) {
      seconds = video.seekable.end(video.seekable.length - 1) - video.currentTime;
    }
    latency.textContent = seconds === null ? '–' : seconds.toFixed(1) + ' s behind live';
  }, 500);
})();
