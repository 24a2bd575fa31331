// A player and a spectator use the draft page in headless Chromium (Debian's, through
// playwright-core; no browser download). Run by tests/e2e/test_browser.py, which starts the mesh
// and the local OpenID provider. Env: EDGE_URL, ARTIFACTS_DIR, CHROMIUM (default
// /usr/bin/chromium), DOCS_SCREENSHOT (path of the committed screenshot, optional).
// Prints one JSON line of what it saw last; exits non-zero on the first failed expectation.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const edge = process.env.EDGE_URL;
const artifacts = process.env.ARTIFACTS_DIR || 'tests/artifacts';
mkdirSync(artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const seen = { win: [], actions: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const watch = (page, who) => {
  page.on('console', (m) => console.error(`[${who} console] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[${who} error] ${e.message}`));
  // Nothing leaves for the internet (a CDN image, a font): everything is served by the edge.
  page.on('request', (r) => assert.ok(r.url().startsWith(edge) || r.url().startsWith('ws') ||
    r.url().startsWith(process.env.OPENID_URL || '-') || r.url().startsWith('data:'), `request to ${r.url()}`));
};

let page = null;
try {
  const player = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  page = await player.newPage();
  watch(page, 'player');
  await page.goto(`${edge}/`);
  await page.getByTestId('login-button').click(); // -> Steam (the local provider) -> callback -> /
  await page.getByTestId('user-name').waitFor({ timeout: 15_000 });
  assert.equal(new URL(page.url()).search, '', 'no token or code in the page URL');
  const cookies = await player.cookies();
  const refresh = cookies.find((c) => c.name === 'cp_refresh');
  assert.ok(refresh && refresh.httpOnly && refresh.sameSite === 'Strict' && refresh.path === '/auth');
  assert.equal(await page.evaluate(() => document.cookie.includes('cp_refresh')), false);
  await shot(page, '01-signed-in');

  // A room where this player drafts for both sides.
  // The patch the imported 2026-07 matches were played on (the current one has no matches yet).
  await page.locator('#create input[name=patch]').fill(process.env.DRAFT_PATCH || '7.41');
  await page.getByTestId('create-button').click();
  await page.getByTestId('room').waitFor({ state: 'visible', timeout: 15_000 });
  const roomId = new URLSearchParams(new URL(page.url()).hash.slice(1)).get('draft');
  assert.ok(roomId, 'the room id is in the URL fragment');
  const firstSuggestion = page.getByTestId('suggestions-picks').getByTestId('suggestion').first();
  await firstSuggestion.waitFor({ timeout: 20_000 });
  const reasons = await page.getByTestId('suggestions-picks').locator('.why').allTextContents();
  assert.ok(reasons.some((r) => /pts|games|with|vs/.test(r)), `reasons in words: ${reasons}`);
  await page.waitForFunction(() => document.getElementById('win-probability').dataset.value);
  seen.win.push(Number(await page.getByTestId('win-probability').getAttribute('data-value')));
  await shot(page, '02-room');

  // A spectator in another browser context (no seat in this room) watches it.
  const spectatorContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const spectator = await spectatorContext.newPage();
  watch(spectator, 'spectator');
  // Drafts are read with a token (the draft service refuses anonymous calls): sign in here too.
  await spectator.goto(`${edge}/`);
  await spectator.getByTestId('login-button').click();
  await spectator.getByTestId('user-name').waitFor({ timeout: 15_000 });
  await spectator.goto(`${edge}/#draft=${encodeURIComponent(roomId)}`);
  await spectator.getByTestId('room').waitFor({ state: 'visible', timeout: 15_000 });
  assert.equal(await spectator.getByTestId('role').textContent(), 'spectator');
  await spectator.getByTestId('connection').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });

  // Ban and pick with the keyboard: type the top suggestion's name, Enter. Until two picks.
  let picks = 0;
  for (let order = 0; order < 14 && picks < 2; order += 1) {
    const next = (await page.getByTestId('next-action').textContent()) || '';
    const kind = next.includes('picks') ? 'picks' : 'bans';
    const list = page.getByTestId(`suggestions-${kind}`).getByTestId('suggestion');
    await list.first().waitFor({ timeout: 20_000 });
    const name = (await list.first().locator('strong').textContent()).trim();
    await page.getByTestId('hero-search').fill(name);
    await page.getByTestId('hero-search').press('Enter');
    await page.getByTestId(`action-${order}`).waitFor({ timeout: 15_000 });
    seen.actions.push(`${next}: ${name}`);
    // One point per step on the chart: the insight after this action has arrived.
    await page.waitForFunction((n) => Number(document.getElementById('win-chart').dataset.points) >= n + 2, order);
    seen.win.push(Number(await page.getByTestId('win-probability').getAttribute('data-value')));
    if (kind === 'picks') {
      picks += 1;
      // The spectator sees the pick appear, live.
      await spectator.getByTestId(`action-${order}`).filter({ hasText: name }).waitFor({ timeout: 10_000 });
    }
  }
  assert.equal(picks, 2, `two picks made: ${seen.actions}`);
  await page.waitForTimeout(500); // the last insight request
  seen.win.push(Number(await page.getByTestId('win-probability').getAttribute('data-value')));
  assert.ok(new Set(seen.win.map((w) => w.toFixed(4))).size > 1, `win probability moved: ${seen.win}`);
  await page.getByTestId('hero-search').fill('');
  await page.getByTestId('hero-search').blur();
  await shot(page, '03-draft-with-suggestions');
  if (process.env.DOCS_SCREENSHOT) await page.screenshot({ path: process.env.DOCS_SCREENSHOT });
  await shot(spectator, '04-spectator');

  const overlay = await spectatorContext.newPage();
  watch(overlay, 'overlay');
  await overlay.goto(`${edge}/overlay/${encodeURIComponent(roomId)}`);
  await overlay.locator('[data-testid$="-picks"] li').first().waitFor({ timeout: 15_000 });
  await shot(overlay, '05-overlay');
  console.log(JSON.stringify({ ok: true, roomId, ...seen }));
} catch (error) {
  if (page) {
    seen.pageError = await page.locator('#error').textContent().catch(() => null);
    await shot(page, 'failure').catch(() => {});
  }
  console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
