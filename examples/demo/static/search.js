// Live search: results for the query, kept current as articles are inserted, updated, deleted.
//
// One subscription, to `articles` (pgcast.notify_trigger on "Article": {op, id, changed}).
// Each event names a row; the page asks the search API whether that row matches the
// current query *now*, with the same SQL predicate as the search (one indexed lookup for
// a batch of ids). Postgres stays the only judge of a match, so ranking, stemming and
// stop words can never disagree between the first page and the live updates.
//
// "… is typing": typing in the search box publishes a client message on `articles` (at
// most one a second; the token's `publish` claim allows it); the other pages subscribed to
// `articles` get it as a broadcast naming the sender and show it for a few seconds.
import { startClient, logActivity, serial } from './live.js';

const TYPING_EVERY_MS = 1000;
const TYPING_SHOWN_MS = 3000;

const TEXT_COLUMNS = new Set(['title', 'body', 'search']);
const DEBOUNCE_MS = 200;
const CHECK_BATCH_MS = 30;

const input = document.getElementById('q');
const list = document.getElementById('results');
const meta = document.getElementById('meta');
const shown = new Map(); // article id -> row, what the page displays
const fresh = new Set();
const run = serial(); // searches, checks and deletions apply in arrival order
const toCheck = new Set();
let checkScheduled = false;
let query = new URLSearchParams(location.search).get('q') ?? '';
input.value = query;

async function searchApi(q, ids) {
  const params = new URLSearchParams({ q, limit: '20' });
  if (ids) params.set('ids', ids.join(','));
  const response = await fetch(`api/search?${params}`);
  if (!response.ok) throw new Error(`search failed: ${response.status}`);
  return (await response.json()).results;
}

function render() {
  const rows = [...shown.values()].sort((a, b) => b.rank - a.rank || b.id - a.id);
  list.replaceChildren(
    ...rows.map((row) => {
      const li = document.createElement('li');
      li.dataset.id = row.id;
      if (fresh.has(row.id)) li.className = 'fresh';
      const h3 = document.createElement('h3');
      h3.textContent = row.title;
      const p = document.createElement('p');
      p.innerHTML = row.snippet.replace(/<(?!\/?b>)/g, '&lt;'); // ts_headline's <b> only
      li.append(h3, p);
      return li;
    }),
  );
  const what = query ? `matching “${query}”` : '(latest articles)';
  meta.textContent = `${rows.length} result${rows.length === 1 ? '' : 's'} ${what} — live`;
}

function flash(id) {
  fresh.add(id);
  setTimeout(() => {
    fresh.delete(id);
    document.querySelector(`#results li[data-id="${id}"]`)?.classList.remove('fresh');
  }, 2500);
}

function runSearch() {
  return run(async () => {
    const q = query;
    const results = await searchApi(q);
    if (q !== query) return; // a newer search is queued behind this one
    shown.clear();
    for (const row of results) shown.set(row.id, row);
    render();
  });
}

async function check() {
  checkScheduled = false;
  const ids = [...toCheck];
  toCheck.clear();
  const q = query;
  const found = new Map((await searchApi(q, ids)).map((row) => [row.id, row]));
  if (q !== query) return; // the new query's search already reflects these rows
  for (const id of ids) {
    const row = found.get(id);
    if (row && !shown.has(id)) flash(id);
    if (row) shown.set(id, row);
    else shown.delete(id);
  }
  render();
}

function onArticleEvent(event, info) {
  logActivity(`${event.op} article ${event.id}`, info);
  if (event.op === 'DELETE') {
    run(async () => {
      if (shown.delete(event.id)) render();
    });
    return;
  }
  // An update that touched no searchable column cannot change whether a hidden row matches.
  const textChanged = !Array.isArray(event.changed) || event.changed.some((c) => TEXT_COLUMNS.has(c));
  if (!textChanged && !shown.has(event.id)) return;
  toCheck.add(event.id);
  if (!checkScheduled) {
    checkScheduled = true;
    setTimeout(() => run(check), CHECK_BATCH_MS); // one lookup for a burst of changes
  }
}

const typing = document.getElementById('typing');
let typingTimer = null;
let lastTyping = 0;
let client = null;

function showTyping(from) {
  typing.textContent = `${from} is typing…`;
  typing.dataset.from = from;
  typing.hidden = false;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => {
    typing.hidden = true;
    delete typing.dataset.from;
  }, TYPING_SHOWN_MS);
}

function announceTyping() {
  if (!client || Date.now() - lastTyping < TYPING_EVERY_MS) return;
  lastTyping = Date.now();
  // Ephemeral: waits at most requestTimeout for a connection, and is never replayed later.
  client.publish('articles', { typing: true }).catch((err) => console.warn('pgcast: publish', err.code));
}

let debounce = null;
input.addEventListener('input', () => {
  announceTyping();
  clearTimeout(debounce);
  debounce = setTimeout(() => {
    const next = input.value.trim();
    if (next === query) return;
    query = next;
    history.replaceState(null, '', next ? `?q=${encodeURIComponent(next)}` : location.pathname);
    runSearch();
  }, DEBOUNCE_MS);
});

runSearch();
client = await startClient({ onRecoveryFailed: () => runSearch() });
let subscribedOnce = false;
client.subscribe('articles', {
  onMessage: onArticleEvent,
  onBroadcast: (data, { from }) => {
    if (data?.typing) showTyping(from);
  },
  onSubscribed: () => {
    // Rows changed between the first search and the subscription: search once more.
    if (!subscribedOnce) runSearch();
    subscribedOnce = true;
  },
});
