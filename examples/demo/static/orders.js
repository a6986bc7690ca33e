// Orders dashboard: order counts per status, recomputed by Postgres whenever `orders` changes.
//
// pgcast.notify_trigger('orders') sends {op, id, changed}; the page refetches the counts
// (one GROUP BY over an index), coalescing bursts: at most one fetch in flight and one queued.
// Refetching is idempotent, so the counts are exact however events are batched.
//
// Who is viewing: the page tracks its presence in `orders` (meta: a display name) and the
// same subscription receives the channel's members; the list is redrawn on every change.
import { displayName, startClient, logActivity, serial } from './live.js';

const viewers = document.getElementById('viewers');

const cards = document.getElementById('cards');
const meta = document.getElementById('meta');
const run = serial();
let queued = false;
let previous = {};

function render(counts, total) {
  cards.replaceChildren(
    ...Object.entries(counts).map(([status, n]) => {
      const card = document.createElement('div');
      card.className = previous[status] !== undefined && previous[status] !== n ? 'card fresh' : 'card';
      card.dataset.status = status;
      card.innerHTML = '<div class="n"></div><div class="label"></div>';
      card.querySelector('.n').textContent = n;
      card.querySelector('.label').textContent = status;
      setTimeout(() => card.classList.remove('fresh'), 1500);
      return card;
    }),
  );
  meta.textContent = `${total} orders — live`;
  previous = counts;
}

function refresh() {
  if (queued) return;
  queued = true;
  run(async () => {
    queued = false;
    const { counts, total } = await fetch('api/orders/counts').then((r) => r.json());
    render(counts, total);
  });
}

function renderViewers(members) {
  viewers.replaceChildren(
    ...members.map((member) => {
      const li = document.createElement('li');
      li.dataset.sub = member.sub;
      li.dataset.conn = member.conn;
      const you = member.sub === window.pgcastSub ? ' (you)' : '';
      li.textContent = `${member.meta?.name ?? 'someone'} · ${member.sub}${you}`;
      return li;
    }),
  );
  document.getElementById('viewer-count').textContent = String(members.length);
}

refresh();
const client = await startClient({ onRecoveryFailed: refresh });
let subscribedOnce = false;
client.subscribe('orders', {
  onMessage: (event, info) => {
    logActivity(`${event.op} order ${event.id}`, info);
    refresh();
  },
  onSubscribed: () => {
    if (!subscribedOnce) refresh();
    subscribedOnce = true;
  },
  onPresence: renderViewers, // presence: a snapshot, then every join and leave
});
// Tracked again by the client after every reconnect; the gateway drops it when the page closes.
client.track('orders', { name: displayName() }).catch((err) => console.warn('pgcast: track', err));
