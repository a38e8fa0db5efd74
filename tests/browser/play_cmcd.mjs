// Plays a Headwater HLS stream in headless Chromium with hls.js sending CMCD (query form) and
// prints one JSON line: playback progress, hls.js fatal errors and the CMCD session id.
// Usage: node play_cmcd.mjs <http-origin> <playlist-path> <session-id> [seconds]
// Driven by tests/e2e/observability.rs; chromium from Debian, hls.js and playwright-core from npm.
import { launch } from './chromium.mjs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [origin, playlist, sessionId, seconds = '4'] = process.argv.slice(2);
if (!origin || !playlist || !sessionId) {
  console.error('usage: play_cmcd.mjs <http-origin> <playlist-path> <session-id> [seconds]');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const { browser, close } = await launch();
let result;
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  await page.goto(`${origin}/healthz`, { timeout: 20000 });
  await page.addScriptTag({ path: join(here, 'node_modules/hls.js/dist/hls.min.js') });
  result = await page.evaluate(async ({ playlist, sessionId, seconds }) => {
    document.body.innerHTML = '<video id="v" muted playsinline></video>';
    const video = document.getElementById('v');
    const errors = [];
    const hls = new Hls({ cmcd: { sessionId, contentId: 'headwater-e2e', useHeaders: false } });
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) errors.push(`${data.type}: ${data.details}`); });
    hls.loadSource(playlist);
    hls.attachMedia(video);
    video.play().catch((e) => errors.push(`play(): ${e}`));
    const deadline = Date.now() + 45000;
    while (video.currentTime < Number(seconds) && Date.now() < deadline && errors.length === 0) {
      await new Promise((r) => setTimeout(r, 250));
    }
    const cmcdRequests = performance.getEntriesByType('resource').filter((e) => e.name.includes('CMCD=')).length;
    return { currentTime: video.currentTime, errors, cmcdRequests };
  }, { playlist, sessionId, seconds });
} finally {
  await close();
}
console.log(JSON.stringify(result));
