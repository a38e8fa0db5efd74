// Headless Chromium for the browser tests: Debian's chromium driven by playwright-core, in a
// fresh profile, with the flags this machine needs (its network is closed, so no background
// networking, component updates or sync).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  '--autoplay-policy=no-user-gesture-required',
];

/** Launches Chromium with `extraArgs` and context `options`; `close()` ends it and removes the profile. */
export async function launch(extraArgs = [], options = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'headwater-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ...options,
    args: [...FLAGS, ...extraArgs],
  });
  const close = async () => {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { browser, close };
}
