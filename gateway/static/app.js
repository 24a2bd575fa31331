// The draft page and the overlay: a thin client of the public GraphQL API (queries and mutations
// over POST /graphql, live updates over the draftUpdates subscription with graphql-transport-ws).
// Plain ES module, no build step. The access token lives in memory only; the refresh token is an
// HttpOnly cookie the page never sees (POST /auth/refresh with the CSRF header renews it).

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-') || key.startsWith('aria-') || key === 'role') node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
};
const VIEW = document.body.dataset.view; // "page" or "overlay"

const DRAFT_FIELDS = `
  fragment D on Draft {
    id mode patch bracket firstPickSide ourSide sequence completed
    actions { order kind side timedOut hero { id localizedName } }
    nextAction { order kind side deadline }
  }`;

// --- Session ---------------------------------------------------------------------------------

const session = { token: null, me: null, timer: null };

function cookie(name) {
  const hit = document.cookie.split('; ').find((c) => c.startsWith(name + '='));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : null;
}

async function refreshSession() {
  const csrf = cookie('cp_csrf');
  if (!csrf) return false;
  const response = await fetch('/auth/refresh', {
    method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf },
  });
  if (!response.ok) { session.token = null; return false; }
  const body = await response.json();
  session.token = body.access_token;
  const lifetime = Date.parse(body.expires_at) - Date.now();
  clearTimeout(session.timer);
  session.timer = setTimeout(refreshSession, Math.max(10_000, lifetime - 60_000));
  return true;
}

// An OBS overlay link carries a read-only API key in its fragment (never sent to a server):
// trade it for a short-lived access token, and again before that expires.
async function exchangeKey(key) {
  const response = await fetch('/auth/api-key', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ api_key: key }),
  });
  if (!response.ok) { session.token = null; return false; }
  const body = await response.json();
  session.token = body.access_token;
  const lifetime = Date.parse(body.expires_at) - Date.now();
  clearTimeout(session.timer);
  session.timer = setTimeout(() => exchangeKey(key), Math.max(10_000, lifetime - 60_000));
  return true;
}

async function logout() {
  await fetch('/auth/logout', {
    method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': cookie('cp_csrf') || '' },
  });
  session.token = null;
  location.assign('/');
}

// --- GraphQL ---------------------------------------------------------------------------------

async function gql(query, variables = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] }));
  if (body.errors && body.errors.length) {
    const error = new Error(body.errors.map((e) => e.message).join('; '));
    const extensions = body.errors[0].extensions || {};
    error.code = extensions.code;
    error.reason = extensions.reason;
    error.retryAfter = extensions.retryAfter;
    throw error;
  }
  return body.data;
}

// graphql-transport-ws: connection_init (token in the payload, never in the URL), subscribe,
// next/error/complete, ping/pong. Reconnects with resumeAfter = the last sequence seen.
function subscribe(query, variables, onData, onState) {
  let socket = null;
  let closed = false;
  let attempt = 0;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${scheme}://${location.host}/graphql`, 'graphql-transport-ws');
    socket.onopen = () => {
      const payload = session.token ? { Authorization: `Bearer ${session.token}` } : {};
      socket.send(JSON.stringify({ type: 'connection_init', payload }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'connection_ack') {
        attempt = 0;
        onState('live');
        socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables: variables() } }));
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (message.type === 'next') {
        if (message.payload.errors) showError(message.payload.errors.map((e) => e.message).join('; '));
        else onData(message.payload.data);
      } else if (message.type === 'error') {
        showError(message.payload.map((e) => e.message).join('; '));
      }
    };
    socket.onclose = () => {
      if (closed) return;
      onState('reconnecting');
      attempt += 1;
      setTimeout(open, Math.min(10_000, 500 * 2 ** attempt));
    };
  };
  open();
  return () => { closed = true; socket && socket.close(); };
}

// --- State -----------------------------------------------------------------------------------

const state = {
  heroes: [], byId: new Map(), draft: null, mySide: null, both: false, spectator: true,
  filter: '', selected: 0, history: [], lastSequence: 0, insightKey: '', insightTicket: 0,
};

function showError(text) {
  const box = $('error');
  if (!box) return;
  box.textContent = text;
  box.hidden = !text;
}

function initials(name) {
  return name.split(/[\s-]+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase();
}

function taken() {
  return new Set((state.draft ? state.draft.actions : []).map((a) => a.hero.id));
}

function draftInput() {
  return { actions: state.draft.actions.map((a) => ({ kind: a.kind, side: a.side, heroId: a.hero.id })) };
}

function canAct() {
  const next = state.draft && state.draft.nextAction;
  if (!next || state.spectator || !session.token) return false;
  return state.both || next.side === state.mySide;
}

// --- Rendering -------------------------------------------------------------------------------

function renderHeroes() {
  const grid = $('grid');
  if (!grid) return;
  const used = taken();
  const needle = state.filter.trim().toLowerCase();
  const shown = state.heroes.filter((h) => !needle || h.localizedName.toLowerCase().includes(needle));
  state.shown = shown;
  state.selected = Math.min(state.selected, Math.max(0, shown.length - 1));
  grid.replaceChildren(...shown.map((hero, index) => {
    const button = el('button', {
      class: 'hero' + (index === state.selected ? ' sel' : ''), type: 'button', title: hero.localizedName,
      disabled: used.has(hero.id) || !canAct(), role: 'option', 'data-testid': `hero-${hero.id}`,
      'aria-selected': String(index === state.selected),
    }, el('span', { class: 'ini' }, initials(hero.localizedName)), el('span', {}, hero.localizedName));
    button.addEventListener('click', () => act(hero.id));
    return button;
  }));
}

function renderDraft() {
  const draft = state.draft;
  if (!draft) return;
  for (const side of ['RADIANT', 'DIRE']) {
    const key = side.toLowerCase();
    const mine = draft.actions.filter((a) => a.side === side);
    $(`${key}-picks`).replaceChildren(...mine.filter((a) => a.kind === 'PICK').map((a) =>
      el('li', { 'data-testid': `action-${a.order}` }, a.hero.localizedName)));
    $(`${key}-bans`).replaceChildren(...mine.filter((a) => a.kind === 'BAN').map((a) =>
      el('li', { 'data-testid': `action-${a.order}` }, a.hero.localizedName)));
  }
  const next = draft.nextAction;
  $('next').textContent = draft.completed ? 'Draft complete'
    : next ? `${next.side === 'RADIANT' ? 'Radiant' : 'Dire'} ${next.kind === 'PICK' ? 'picks' : 'bans'}` : '';
  if ($('room-title')) {
    $('room-title').textContent = `${draft.mode === 'CAPTAINS_MODE' ? 'Captains Mode' : 'All Pick'} · patch ${draft.patch || 'current'} · ${draft.bracket}`;
    $('role').textContent = state.spectator ? 'spectator' : state.both ? 'both sides' : state.mySide;
  }
  renderHeroes();
}

function renderSuggestions(list, target) {
  const box = $(target);
  if (!box) return;
  // Five, however many came: the pushed suggestions carry ten.
  box.replaceChildren(...list.slice(0, 5).map((s) => el('li', { 'data-testid': 'suggestion' },
    el('strong', {}, s.hero.localizedName), ` ${(s.winProbability * 100).toFixed(1)}% win`,
    el('span', { class: 'why' }, s.reasons.map((r) => r.text).join(' · ') || 'no matchup data'))));
}

function renderWin() {
  const history = state.history;
  const last = history[history.length - 1];
  const label = $('win-probability');
  if (last === undefined) { label.textContent = '-'; return; }
  label.textContent = `Radiant ${(last * 100).toFixed(1)}%`;
  label.dataset.value = String(last);
  const svg = $('win-chart');
  const ns = 'http://www.w3.org/2000/svg';
  const width = 240, height = 80, steps = Math.max(1, history.length - 1);
  const points = history.map((p, i) => `${(i / steps) * width},${(1 - p) * height}`).join(' ');
  const mid = document.createElementNS(ns, 'line');
  Object.entries({ x1: 0, x2: width, y1: height / 2, y2: height / 2, class: 'mid' }).forEach(([k, v]) => mid.setAttribute(k, v));
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', history.length > 1 ? points : `0,${(1 - last) * height} ${width},${(1 - last) * height}`);
  line.setAttribute('class', 'line');
  svg.replaceChildren(mid, line);
  svg.dataset.points = String(history.length);
}

// --- Suggestions and win probability ---------------------------------------------------------

// Suggestions reach the page two ways: the draft service computes them once per change for all
// watchers (the subscription's `suggestions`, for the room's side or the side to act), and the
// page asks the model itself when those are not for the side it shows. Waiting a moment for the
// pushed ones keeps a draft from spending the player's request quota (three model calls per
// step per open tab: a page and its overlay used up a free account's 120 a minute).
const PUSH_WAIT_MS = 1500;

function insightSide(draft) {
  return (draft.nextAction && draft.nextAction.side) || state.mySide || 'RADIANT';
}

function paintInsight(draft, insight) {
  renderSuggestions(insight.picks, 'sugg-picks');
  renderSuggestions(insight.bans, 'sugg-bans');
  if ($('model')) $('model').textContent = `model ${insight.modelVersion}`;
  const note = $('fallback');
  if (note) { note.textContent = insight.fallbackNote || ''; note.hidden = !insight.fallbackNote; }
  // One point per step of the draft: the history is indexed by the number of actions.
  const steps = draft.actions.length;
  for (let i = 0; i < steps; i += 1) {
    if (state.history[i] === undefined) state.history[i] = i ? state.history[i - 1] : insight.radiantWin;
  }
  state.history[steps] = insight.radiantWin;
  state.history.length = steps + 1;
  renderWin();
}

// Called when the step or the side to act changed (applyDraft).
function scheduleInsight() {
  const draft = state.draft;
  if (!draft || (!draft.nextAction && !draft.completed)) return; // the next step is on its way
  clearTimeout(state.insightTimer);
  const ticket = ++state.insightTicket;
  const pushed = state.pushed;
  if (pushed && pushed.sequence === draft.sequence && pushed.side === insightSide(draft)) {
    paintInsight(draft, pushed);
    return;
  }
  state.insightTimer = setTimeout(() => refreshInsight(ticket), PUSH_WAIT_MS);
}

function onPushedSuggestions(sequence, s) {
  const radiantWin = s.side === 'RADIANT' ? s.winProbability : 1 - s.winProbability;
  state.pushed = { sequence, side: s.side, picks: s.picks, bans: s.bans, modelVersion: s.modelVersion,
    fallbackNote: s.fallbackNote, radiantWin };
  const draft = state.draft;
  if (draft && sequence === draft.sequence && (draft.nextAction || draft.completed) && s.side === insightSide(draft)) {
    clearTimeout(state.insightTimer);
    state.insightTicket += 1; // a query already under way would paint an older view
    paintInsight(draft, state.pushed);
  }
}

async function refreshInsight(ticket) {
  const draft = state.draft;
  if (!draft || ticket !== state.insightTicket) return;
  const side = insightSide(draft);
  try {
    const data = await gql(`query Insight($d: DraftStateInput!, $s: Side!, $p: String, $b: SkillBracket) {
      picks: suggestPicks(draft: $d, side: $s, patch: $p, bracket: $b, limit: 5) { ...G }
      bans: suggestBans(draft: $d, side: $s, patch: $p, bracket: $b, limit: 5) { ...G }
      win: predictWin(draft: $d, patch: $p, bracket: $b)
    }
    fragment G on Suggestions { modelVersion fallbackNote winProbability
      picks { score winProbability hero { id localizedName } reasons { kind text value } }
      bans { score winProbability hero { id localizedName } reasons { kind text value } } }`,
    { d: draftInput(), s: side, p: draft.patch || null, b: draft.bracket });
    // Only the newest request may paint: an older answer is for a step already gone.
    if (ticket !== state.insightTicket) return;
    paintInsight(draft, { picks: data.picks.picks, bans: data.bans.bans, modelVersion: data.picks.modelVersion,
      fallbackNote: data.picks.fallbackNote, radiantWin: data.win });
    state.insightRetry = 0;
  } catch (error) {
    if (ticket !== state.insightTicket) return;
    // Right after the first start the model is still loading the bundled matches (about a
    // minute), a restarting model answers UNAVAILABLE, and a quota refills: say so and ask
    // again by itself.
    const note = $('fallback');
    let wait = null;
    if (error.reason === 'ERROR_REASON_MODEL_NOT_READY' || error.code === 'UNAVAILABLE') {
      state.insightRetry = Math.min((state.insightRetry || 0) + 1, 5);
      wait = 1000 * state.insightRetry;
      if (note) note.textContent = error.reason === 'ERROR_REASON_MODEL_NOT_READY'
        ? 'Preparing suggestions: the first start imports the bundled matches (about a minute)…'
        : 'Suggestions are briefly unavailable; retrying…';
    } else if (error.code === 'RATE_LIMITED') {
      wait = 1000 * Math.max(1, error.retryAfter || 5);
      if (note) note.textContent = `Too many requests from this account; suggestions resume in ${Math.ceil(wait / 1000)} s.`;
    }
    if (wait === null) { showError(`Suggestions unavailable: ${error.message}`); return; }
    if (note) note.hidden = false;
    state.insightTimer = setTimeout(() => refreshInsight(ticket), wait);
  }
}

// --- Actions ---------------------------------------------------------------------------------

async function act(heroId) {
  if (!canAct()) return;
  const next = state.draft.nextAction;
  try {
    const data = await gql(`mutation Act($id: ID!, $a: DraftActionInput!, $seq: Int) {
      submitDraftAction(id: $id, action: $a, expectedSequence: $seq) { ...D } } ${DRAFT_FIELDS}`,
    { id: state.draft.id, a: { kind: next.kind, side: next.side, heroId }, seq: state.draft.sequence });
    showError('');
    applyDraft(data.submitDraftAction);
    $('search').value = '';
    state.filter = '';
    renderHeroes();
    $('search').focus();
  } catch (error) {
    showError(`That ${next.kind.toLowerCase()} was refused: ${error.message}`);
  }
}

function applyDraft(draft) {
  if (state.draft && draft.sequence < state.draft.sequence) return; // an older view
  // Suggestions are for the side about to act: ask again when the step or that side changes.
  const next = draft.nextAction;
  const key = `${draft.actions.length}:${next ? `${next.order}:${next.side}:${next.kind}` : '-'}`;
  const changed = key !== state.insightKey;
  state.insightKey = key;
  state.draft = draft;
  state.lastSequence = Math.max(state.lastSequence, draft.sequence);
  renderDraft();
  if (changed) scheduleInsight();
}

function onUpdate(data) {
  const update = data.draftUpdates;
  if (!update) return;
  state.lastSequence = Math.max(state.lastSequence, update.sequence);
  if (update.snapshot) { applyDraft(update.snapshot); return; }
  if (!state.draft) return;
  if (update.action && !state.draft.actions.some((a) => a.order === update.action.order)) {
    // The next step comes in its own event; until then nobody is known to be acting.
    applyDraft({ ...state.draft, actions: [...state.draft.actions, update.action], sequence: update.sequence, nextAction: null });
  }
  if (update.nextAction) applyDraft({ ...state.draft, nextAction: update.nextAction });
  if (update.completed) applyDraft({ ...state.draft, completed: true, nextAction: null });
  if (update.suggestions) onPushedSuggestions(update.sequence, update.suggestions);
}

// --- Rooms -----------------------------------------------------------------------------------

function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (VIEW === 'overlay') return { draft: location.pathname.split('/').pop() };
  return { draft: params.get('draft'), join: params.get('join'), code: params.get('code') };
}

async function openRoom(id) {
  const data = await gql(`query Room($id: ID!) { draft(id: $id) { ...D } } ${DRAFT_FIELDS}`, { id });
  if (!data.draft) throw new Error('no such room');
  const seats = JSON.parse(sessionStorage.getItem(`seat:${id}`) || 'null');
  state.spectator = !seats;
  state.mySide = seats ? seats.side : null;
  state.both = Boolean(seats && seats.both);
  if ($('lobby')) { $('lobby').hidden = true; $('room').hidden = false; }
  if (state.unsubscribe) state.unsubscribe();
  if (state.draft && state.draft.id !== id) {
    // Another room: nothing of the last one's history or sequence applies here.
    Object.assign(state, { draft: null, history: [], lastSequence: 0, insightKey: '', pushed: null });
  }
  applyDraft(data.draft);
  state.unsubscribe = subscribe(`subscription Watch($id: ID!, $after: Int) { draftUpdates(id: $id, resumeAfter: $after) {
      sequence snapshot { ...D } action { order kind side timedOut hero { id localizedName } }
      nextAction { order kind side deadline } completed { radiantWinProbability modelVersion } banSkipped
      suggestions { side winProbability modelVersion fallbackNote
        picks { score winProbability hero { id localizedName } reasons { kind text value } }
        bans { score winProbability hero { id localizedName } reasons { kind text value } } } } }
    ${DRAFT_FIELDS}`,
  () => ({ id, after: state.lastSequence || null }), onUpdate,
  (s) => { const c = $('connection'); if (c) c.textContent = s; });
  if ($('search')) $('search').focus();
}

async function createRoom(form) {
  const values = Object.fromEntries(new FormData(form));
  const both = form.elements.both.checked;
  const data = await gql(`mutation Create($mode: DraftMode!, $first: Side!, $our: Side, $seat: CreatorSeat, $patch: String, $bracket: SkillBracket) {
      createDraft(mode: $mode, firstPickSide: $first, ourSide: $our, creatorSeat: $seat, patch: $patch, bracket: $bracket) {
        inviteCode draft { id } } }`, {
    mode: values.mode, first: values.firstPickSide, our: values.side, seat: both ? 'BOTH' : 'OUR_SIDE',
    patch: values.patch || null, bracket: values.bracket,
  });
  const id = data.createDraft.draft.id;
  sessionStorage.setItem(`seat:${id}`, JSON.stringify({ side: values.side, both }));
  // replaceState, not location.hash: a hashchange would open the room a second time.
  history.replaceState(null, '', `/#draft=${encodeURIComponent(id)}`);
  const code = data.createDraft.inviteCode;
  if (code && !both) {
    // The code rides in the fragment, which browsers never send to a server or a Referer.
    $('invite').value = `${location.origin}/#join=${encodeURIComponent(id)}&code=${encodeURIComponent(code)}`;
    $('invite-box').hidden = false;
  }
  await openRoom(id);
}

// A link for OBS: the overlay view with a read-only key of the signed-in user (draft:read and
// model:read only; revocable like any API key), so the streaming PC needs no sign-in.
async function overlayLink() {
  const id = state.draft.id;
  const data = await gql(`mutation Key($name: String!) { createApiKey(name: $name, scopes: ["draft:read", "model:read"]) { secret } }`,
    { name: `overlay ${id}` });
  $('overlay-link').value = `${location.origin}/overlay/${encodeURIComponent(id)}#key=${encodeURIComponent(data.createApiKey.secret)}`;
  $('overlay-link').hidden = false;
  $('overlay-link').select();
}

// An invite link opened (or pasted into the address bar of an open page): the join form,
// filled in; taking the seat stays one deliberate click.
function offerJoin() {
  if (!$('join')) return;
  $('join').elements.invite.value = location.href;
  if ($('room')) { $('room').hidden = true; $('lobby').hidden = false; }
  $('join').querySelector('button').focus();
}

async function joinRoom(text) {
  let id = null, code = null;
  const hash = text.includes('#') ? text.slice(text.indexOf('#') + 1) : '';
  if (hash) { const p = new URLSearchParams(hash); id = p.get('join'); code = p.get('code'); }
  else [id, code] = text.trim().split(/\s+/);
  if (!id || !code) throw new Error('paste the invite link, or the room id and the code');
  const data = await gql(`mutation Join($id: ID!, $code: String!) { joinDraft(id: $id, inviteCode: $code) { side draft { id } } }`, { id, code });
  sessionStorage.setItem(`seat:${id}`, JSON.stringify({ side: data.joinDraft.side, both: false }));
  history.replaceState(null, '', `/#draft=${encodeURIComponent(id)}`);
  await openRoom(id);
}

// --- Keyboard --------------------------------------------------------------------------------

function bindKeyboard() {
  const search = $('search');
  search.addEventListener('input', () => { state.filter = search.value; state.selected = 0; renderHeroes(); });
  search.addEventListener('keydown', (event) => {
    const columns = Math.max(1, Math.floor($('grid').clientWidth / 96));
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns };
    if (event.key in moves) {
      event.preventDefault();
      const count = (state.shown || []).length;
      state.selected = Math.max(0, Math.min(count - 1, state.selected + moves[event.key]));
      renderHeroes();
      const chosen = $('grid').children[state.selected];
      if (chosen) chosen.scrollIntoView({ block: 'nearest' });
    } else if (event.key === 'Enter') {
      event.preventDefault();
      const hero = (state.shown || [])[state.selected];
      if (hero) act(hero.id);
    } else if (event.key === 'Escape') {
      search.value = ''; state.filter = ''; renderHeroes();
    }
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === '/' && document.activeElement !== search) { event.preventDefault(); search.focus(); }
  });
}

// --- Start -----------------------------------------------------------------------------------

async function start() {
  if (new URLSearchParams(location.search).get('login') === 'failed') showError('Steam sign-in did not complete; try again.');
  const overlayKey = VIEW === 'overlay' ? new URLSearchParams(location.hash.slice(1)).get('key') : null;
  const signedIn = overlayKey ? await exchangeKey(overlayKey) : await refreshSession();
  if (VIEW === 'overlay' && !signedIn) {
    showError(overlayKey ? 'This overlay link\'s key was revoked or is wrong: make a new one in the room.'
      : 'Open this overlay with the link from the room\'s "Overlay link" button (it carries a read-only key).');
  }
  if (VIEW === 'page' && signedIn) {
    try {
      const data = await gql('{ me { userId personaName accountId } }');
      session.me = data.me;
      $('login').hidden = true;
      $('who').hidden = false;
      $('who').textContent = data.me.personaName || `player ${data.me.accountId ?? data.me.userId.slice(0, 8)}`;
      $('logout').hidden = false;
    } catch (error) {
      showError(`Signed in, but your profile did not load: ${error.message}`);
    }
  }
  if (VIEW === 'page') {
    $('logout').addEventListener('click', logout);
    $('create').addEventListener('submit', (e) => { e.preventDefault(); createRoom(e.target).catch((err) => showError(err.message)); });
    $('join').addEventListener('submit', (e) => { e.preventDefault(); joinRoom(e.target.elements.invite.value).catch((err) => showError(err.message)); });
    $('overlay-button').addEventListener('click', () => overlayLink().catch((err) => showError(err.message)));
    $('watch').addEventListener('submit', (e) => { e.preventDefault(); location.hash = `draft=${encodeURIComponent(e.target.elements.room.value.trim())}`; });
    window.addEventListener('hashchange', () => {
      const r = route();
      if (r.join && r.code) offerJoin();
      else if (r.draft && (!state.draft || state.draft.id !== r.draft)) openRoom(r.draft).catch((err) => showError(err.message));
    });
    bindKeyboard();
  }
  try {
    const data = await gql('{ heroes { id localizedName } }');
    state.heroes = data.heroes.slice().sort((a, b) => a.localizedName.localeCompare(b.localizedName));
    state.byId = new Map(state.heroes.map((h) => [h.id, h]));
    renderHeroes();
  } catch (error) {
    showError(`Heroes did not load: ${error.message}`);
  }
  const r = route();
  if (r.join && r.code) offerJoin();
  else if (r.draft) await openRoom(r.draft).catch((err) => showError(err.message));
}

start();
