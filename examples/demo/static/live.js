// Shared by the demo pages: load the pgcast client, show the connection state, log events.
// The token callback asks this app's /api/token again on every reconnect and before expiry.

export async function startClient({ onRecoveryFailed }) {
  // Relative URLs throughout: the demo works at / and behind a prefix (nginx: /demo/).
  const config = await fetch('api/config').then((r) => r.json());
  const { PgcastClient } = await import(new URL(config.clientUrl, document.baseURI).href);
  const status = document.getElementById('status');
  const client = new PgcastClient({
    url: config.gatewayUrl ?? location.origin, // no DEMO_GATEWAY_URL: the gateway is this origin
    token: () =>
      fetch('api/token', { method: 'POST' })
        .then((r) => r.json())
        .then((j) => {
          window.pgcastSub = j.sub; // this visitor's user id, as other pages see it
          return j.token;
        }),
    onStateChange: ({ state, code, delay }) => {
      status.dataset.state = state;
      status.textContent = state === 'disconnected' ? `reconnecting in ${delay} ms (code ${code})` : state;
      window.pgcastStates.push(state);
    },
    onRecoveryFailed,
  });
  client.on('error', (err) => console.warn('pgcast:', err));
  // pgcast.disconnect(sub, reason) closes with 4003: the client stops; say why.
  client.on('closed', ({ code, reason }) => {
    status.textContent = code === 4003 ? `disconnected: ${reason || 'by the application'}` : `closed (${code})`;
  });
  window.pgcastClient = client; // for the browser tests and for curious developers
  return client;
}

window.pgcastStates = [];

/** Prepend one line to the activity list: what arrived, on which channel, at which offset. */
export function logActivity(text, info) {
  const list = document.getElementById('activity');
  const item = document.createElement('li');
  item.textContent = `${info.channel}#${info.offset} ${text}`;
  item.dataset.channel = info.channel;
  item.dataset.offset = info.offset;
  list.prepend(item);
  while (list.children.length > 50) list.lastElementChild.remove();
}

/** Run async jobs one at a time, in order (a search never overtakes an earlier check). */
export function serial() {
  let tail = Promise.resolve();
  return (job) => {
    tail = tail.then(job).catch((err) => console.warn('demo:', err));
    return tail;
  };
}

const NAMES = ['Ada', 'Grace', 'Linus', 'Barbara', 'Edsger', 'Margaret', 'Ken', 'Radia', 'Donald', 'Frances'];

/** A display name for this browser (kept in localStorage): the presence meta of the demo. */
export function displayName() {
  let name = localStorage.getItem('demoName');
  if (!name) {
    name = NAMES[Math.floor(Math.random() * NAMES.length)];
    localStorage.setItem('demoName', name);
  }
  return name;
}
