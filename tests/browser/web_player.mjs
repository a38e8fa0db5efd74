// Drives Headwater's own web pages in headless Chromium and prints one JSON line per step:
//   {"event":"home-ready"}                       the live list is open (publish now)
//   {"event":"listed","at":<ms>}                 the stream appeared on /
//   {"event":"watched", ...}                     /watch/<stream> played, every quality was tried,
//                                                a chat message went round trip
//   {"event":"unlisted","at":<ms>}               the stream left / after it ended
// Usage: node web_player.mjs <http-origin> <stream> <screenshot.png>
// Driven by tests/e2e/web.rs; chromium from Debian, playwright-core from npm.
import { launch } from './chromium.mjs';

const [origin, stream, screenshot] = process.argv.slice(2);
const emit = (event) => console.log(JSON.stringify(event));
const { browser, close } = await launch([], { viewport: { width: 1280, height: 800 } });
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  const link = `a[data-stream="${stream}"]`;
  await page.goto(`${origin}/`, { timeout: 20000 });
  emit({ event: 'home-ready' });
  await page.waitForSelector(link, { timeout: 30000, state: 'attached' });
  emit({ event: 'listed', at: Date.now() });

  await page.click(link);
  await page.waitForURL(`**/watch/${stream}`);
  await page.waitForFunction(() => {
    const v = document.getElementById('video');
    return (v && v.currentTime > 6) || (window.headwater && window.headwater.errors.length > 0);
  }, null, { timeout: 60000, polling: 250 });
  const played = await page.evaluate(() => ({
    currentTime: document.getElementById('video').currentTime,
    errors: window.headwater.errors,
    native: window.headwater.native,
    options: [...document.getElementById('quality').options].map((o) => o.textContent),
    latency: document.getElementById('latency').textContent,
  }));
  const levels = await page.evaluate(() => window.headwater.hls.levels.map((l) => ({ height: l.height, url: String(l.url) })));
  const switches = [];
  for (let i = 0; i < levels.length; i++) {
    const since = await page.evaluate(() => performance.now());
    await page.selectOption('#quality', String(i));
    const result = await page.waitForFunction(({ i, since, url }) => {
      const hls = window.headwater.hls;
      const path = new URL(url, location.href).pathname;
      const fetched = performance.getEntriesByType('resource')
        .some((e) => e.startTime >= since && new URL(e.name).pathname === path);
      return hls.currentLevel === i && fetched ? { level: hls.currentLevel, path } : null;
    }, { i, since, url: levels[i].url }, { timeout: 30000, polling: 200 }).then((h) => h.jsonValue()).catch(() => null);
    switches.push({ requested: i, result });
  }
  // Chat: set a name, post, and see the message come back from the room.
  await page.fill('#chat-name', 'viewer-1');
  await page.fill('#chat-text', 'hello from chromium');
  await page.click('#chat-form button');
  const chat = await page.waitForFunction(() => [...document.querySelectorAll('#chat-messages li')]
    .some((li) => li.textContent.includes('viewer-1') && li.textContent.includes('hello from chromium')),
  null, { timeout: 15000, polling: 200 }).then(() => true).catch(() => false);
  await page.screenshot({ path: screenshot, fullPage: true });
  const errors = await page.evaluate(() => window.headwater.errors);
  emit({ event: 'watched', ...played, errors, levels, switches, chat });

  await page.goto(`${origin}/`, { timeout: 20000 });
  await page.waitForSelector(link, { timeout: 10000, state: 'attached' }).catch(() => {});
  await page.waitForSelector(link, { timeout: 60000, state: 'detached' });
  emit({ event: 'unlisted', at: Date.now() });
} catch (error) {
  emit({ event: 'error', message: String(error) });
} finally {
  await close();
}
