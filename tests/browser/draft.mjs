// Two captains, a spectator and an OBS overlay use the draft page in headless Chromium (Debian's,
// through playwright-core; no browser download). Run by tests/e2e/test_browser.py right after it
// starts `counterpick up` on a fresh state directory (nothing imported: the suggestions must come
// from the first-start seed) and the local OpenID provider. Env: EDGE_URL, OPENID_URL,
// ARTIFACTS_DIR, CHROMIUM (default /usr/bin/chromium), DOCS_SCREENSHOT (path of the committed
// screenshot, optional). Prints one JSON line of what it saw last; exits non-zero on the first
// failed expectation.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const edge = process.env.EDGE_URL;
const openid = process.env.OPENID_URL;
const artifacts = process.env.ARTIFACTS_DIR || 'tests/artifacts';
mkdirSync(artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const seen = { win: [], actions: [], note: '', joined: null };
// The seed is loaded and the model computed in the background after `up` prints its banner:
// about a minute on a quiet machine, more beside other jobs.
const SEED_MS = 240_000;

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
    r.url().startsWith(openid || '-') || r.url().startsWith('data:'), `request to ${r.url()}`));
};
// A browser context signed in through "Steam" (the local provider) as its own account.
async function signedIn(who, steamid, viewport) {
  const context = await browser.newContext({ viewport });
  await context.addCookies([{ name: 'steamid', value: String(steamid), url: openid }]);
  const page = await context.newPage();
  watch(page, who);
  await page.goto(`${edge}/`);
  await page.getByTestId('login-button').click(); // -> Steam -> callback -> /
  await page.getByTestId('user-name').waitFor({ timeout: 15_000 });
  assert.equal(new URL(page.url()).search, '', 'no token or code in the page URL');
  const refresh = (await context.cookies()).find((c) => c.name === 'cp_refresh');
  assert.ok(refresh && refresh.httpOnly && refresh.sameSite === 'Strict' && refresh.path === '/auth');
  assert.equal(await page.evaluate(() => document.cookie.includes('cp_refresh')), false);
  return page;
}

let page = null;
try {
  const radiant = await signedIn('radiant', 76561198000031337, { width: 1440, height: 900 });
  page = radiant;
  await shot(radiant, '01-signed-in');

  // A Captains Mode room on the current patch (the form's default) for Radiant only.
  await radiant.locator('#create input[name=both]').uncheck();
  await radiant.getByTestId('create-button').click();
  await radiant.getByTestId('room').waitFor({ state: 'visible', timeout: 15_000 });
  const roomId = new URLSearchParams(new URL(radiant.url()).hash.slice(1)).get('draft');
  assert.ok(roomId, 'the room id is in the URL fragment');
  const invite = await radiant.getByTestId('invite-link').inputValue();
  assert.ok(invite.includes('#join=') && invite.includes('code='), `invite link: ${invite}`);

  // Right after up: the page says it is preparing, then shows suggestions from the seed.
  const firstSuggestion = radiant.getByTestId('suggestions-picks').getByTestId('suggestion').first();
  await firstSuggestion.waitFor({ timeout: SEED_MS });
  const reasons = await radiant.getByTestId('suggestions-picks').locator('.why').allTextContents();
  assert.ok(reasons.some((r) => /pts|games|with|vs/.test(r)), `reasons in words: ${reasons}`);
  seen.note = (await radiant.locator('#fallback').textContent()) || '';
  await radiant.waitForFunction(() => document.getElementById('win-probability').dataset.value);
  seen.win.push(Number(await radiant.getByTestId('win-probability').getAttribute('data-value')));
  await shot(radiant, '02-room');

  // The second captain opens the invite link, joins, and gets the Dire seat.
  const dire = await signedIn('dire', 76561198000042424, { width: 1280, height: 800 });
  await dire.goto(invite);
  await dire.getByTestId('join-button').click();
  await dire.getByTestId('room').waitFor({ state: 'visible', timeout: 15_000 });
  seen.joined = await dire.getByTestId('role').textContent();
  assert.equal(new URL(dire.url()).hash, `#draft=${encodeURIComponent(roomId)}`, 'the code left the URL');

  // A spectator (signed in, no seat) and an OBS overlay opened from the room's overlay link:
  // a read-only key in the fragment, in a browser with no session at all.
  const spectator = await signedIn('spectator', 76561198000053535, { width: 1280, height: 800 });
  await spectator.goto(`${edge}/#draft=${encodeURIComponent(roomId)}`);
  await spectator.getByTestId('room').waitFor({ state: 'visible', timeout: 15_000 });
  assert.equal(await spectator.getByTestId('role').textContent(), 'spectator');
  await spectator.getByTestId('connection').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
  await radiant.getByTestId('overlay-link-button').click();
  await radiant.getByTestId('overlay-link').waitFor({ state: 'visible', timeout: 10_000 });
  const overlayUrl = await radiant.getByTestId('overlay-link').inputValue();
  assert.ok(overlayUrl.includes(`/overlay/${encodeURIComponent(roomId)}#key=`), overlayUrl);
  const obs = await browser.newContext({ viewport: { width: 1280, height: 400 } });
  const overlay = await obs.newPage();
  watch(overlay, 'overlay');
  await overlay.goto(overlayUrl);
  await overlay.getByTestId('suggestions-picks').getByTestId('suggestion').first().waitFor({ timeout: 20_000 });

  // Each captain acts on their own turn with the keyboard: type the top suggestion's name,
  // Enter. Until two picks; every watcher sees each pick.
  const captains = { RADIANT: radiant, DIRE: dire };
  let picks = 0;
  for (let order = 0; order < 14 && picks < 2; order += 1) {
    // The next step arrives in its own event, after the action: wait until both captains have it.
    await radiant.waitForFunction(() => /picks|bans/.test(document.getElementById('next').textContent));
    const next = (await radiant.getByTestId('next-action').textContent()) || '';
    await dire.getByTestId('next-action').filter({ hasText: next }).waitFor({ timeout: 15_000 });
    const side = next.startsWith('Radiant') ? 'RADIANT' : 'DIRE';
    const actor = captains[side];
    const kind = next.includes('picks') ? 'picks' : 'bans';
    // The actor's suggestions are for this step (one chart point per step so far).
    await actor.waitForFunction((n) => Number(document.getElementById('win-chart').dataset.points) >= n + 1, order);
    const list = actor.getByTestId(`suggestions-${kind}`).getByTestId('suggestion');
    await list.first().waitFor({ timeout: 20_000 });
    const name = (await list.first().locator('strong').textContent()).trim();
    await actor.getByTestId('hero-search').fill(name);
    await actor.getByTestId('hero-search').press('Enter');
    for (const viewer of [radiant, dire]) {
      await viewer.getByTestId(`action-${order}`).filter({ hasText: name }).waitFor({ timeout: 15_000 });
    }
    seen.actions.push(`${next}: ${name}`);
    // One point per step on the chart: the insight after this action has arrived.
    await radiant.waitForFunction((n) => Number(document.getElementById('win-chart').dataset.points) >= n + 2, order);
    seen.win.push(Number(await radiant.getByTestId('win-probability').getAttribute('data-value')));
    if (kind === 'picks') {
      picks += 1;
      await spectator.getByTestId(`action-${order}`).filter({ hasText: name }).waitFor({ timeout: 10_000 });
      await overlay.locator(`[data-testid="${side.toLowerCase()}-picks"] li`).filter({ hasText: name })
        .waitFor({ timeout: 10_000 });
    }
  }
  assert.equal(picks, 2, `two picks made: ${seen.actions}`);
  await radiant.waitForTimeout(500); // the last insight request
  seen.win.push(Number(await radiant.getByTestId('win-probability').getAttribute('data-value')));
  assert.ok(new Set(seen.win.map((w) => w.toFixed(4))).size > 1, `win probability moved: ${seen.win}`);
  await radiant.getByTestId('hero-search').fill('');
  await radiant.getByTestId('hero-search').blur();
  await shot(radiant, '03-draft-with-suggestions');
  if (process.env.DOCS_SCREENSHOT) await radiant.screenshot({ path: process.env.DOCS_SCREENSHOT });
  await shot(spectator, '04-spectator');
  await shot(overlay, '05-overlay');
  await shot(dire, '06-second-captain');
  console.log(JSON.stringify({ ok: true, roomId, ...seen }));
} catch (error) {
  if (page) {
    seen.pageError = await page.locator('#error').textContent().catch(() => null);
    seen.note = seen.note || await page.locator('#fallback').textContent().catch(() => null);
    await shot(page, 'failure').catch(() => {});
  }
  console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
