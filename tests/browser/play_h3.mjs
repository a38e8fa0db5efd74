// Plays a Headwater HLS stream in headless Chromium with hls.js over HTTP/3 and prints one JSON
// line: playback progress and the nextHopProtocol of every playlist/segment fetch.
// Usage: node play_h3.mjs <https-origin> <spki-sha256-base64> <playlist-path> [seconds]
// Driven by tests/e2e/browser.rs; chromium from Debian, hls.js and playwright-core from npm.
import { launch } from './chromium.mjs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [origin, spki, playlist, seconds = '4'] = process.argv.slice(2);
if (!origin || !spki || !playlist) {
  console.error('usage: play_h3.mjs <https-origin> <spki> <playlist-path> [seconds]');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const hostPort = new URL(origin).host;
const { browser, close } = await launch([
  '--enable-quic', `--origin-to-force-quic-on=${hostPort}`,
  `--ignore-certificate-errors-spki-list=${spki}`,
]);
let result;
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  // Any same-origin document will do: the player is injected into it.
  await page.goto(`${origin}/healthz`, { timeout: 20000 });
  await page.addScriptTag({ path: join(here, 'node_modules/hls.js/dist/hls.min.js') });
  result = await page.evaluate(async ({ playlist, seconds }) => {
    document.body.innerHTML = '<video id="v" muted playsinline></video>';
    const video = document.getElementById('v');
    const errors = [];
    const hls = new Hls({ lowLatencyMode: false });
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) errors.push(`${data.type}: ${data.details}`); });
    hls.loadSource(playlist);
    hls.attachMedia(video);
    video.play().catch((e) => errors.push(`play(): ${e}`));
    const deadline = Date.now() + 45000;
    while (video.currentTime < Number(seconds) && Date.now() < deadline && errors.length === 0) {
      await new Promise((r) => setTimeout(r, 250));
    }
    const entries = performance.getEntriesByType('resource')
      .filter((e) => /\.(m3u8|m4s|mp4)(\?|$)/.test(e.name))
      .map((e) => ({ name: new URL(e.name).pathname, protocol: e.nextHopProtocol }));
    const navigation = performance.getEntriesByType('navigation')[0]?.nextHopProtocol;
    return { currentTime: video.currentTime, errors, entries, navigation };
  }, { playlist, seconds });
} finally {
  await close();
}
console.log(JSON.stringify(result));
