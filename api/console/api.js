// The console's only way to the ledger: the HTTP API, with the bearer token the user
// pasted. The token lives in this tab's sessionStorage and goes in the Authorization
// header, never in a URL (URLs end up in history, logs and Referer headers).

const TOKEN = 'ssot.console.token';

/** Where the console is served (e.g. "/ui"), and the API's root beside it. */
export const base = document.querySelector('meta[name="ssot-base"]').content;
export const apiBase = base.replace(/\/ui$/, '');

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN, value);
  else sessionStorage.removeItem(TOKEN);
}

/** An answer other than 2xx: ``problem`` is the RFC 9457 body when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let unauthenticated = () => {};
/** What to do when the API says the token is missing, expired or revoked. */
export function onUnauthenticated(handler) {
  unauthenticated = handler;
}

function headers(extra = {}) {
  const all = {...extra};
  const t = token();
  if (t) all.Authorization = `Bearer ${t}`;
  return all;
}

/** The query string of the given parameters, leaving out empty ones. */
export function qs(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** The path of an entry: each key segment encoded, the slashes kept. */
export function entryPath(ns, key) {
  return `/v1/namespaces/${encodeURIComponent(ns)}/entries/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/** Call the API: JSON in and out (or text with accept). Throws ApiError. */
export async function call(path, {method = 'GET', body, accept = 'application/json', signal,
  reason} = {}) {
  const extra = {Accept: accept};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (reason) extra['X-Reason'] = reason;
  const response = await fetch(apiBase + path, {
    method, headers: headers(extra), body: body === undefined ? undefined : JSON.stringify(body),
    signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
  });
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  if (response.status === 401) unauthenticated();
  if (!response.ok) throw new ApiError(response.status, typeof data === 'object' ? data : null);
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once this tab is visible (at once when it is). */
function visible() {
  if (document.visibilityState !== 'hidden') return Promise.resolve();
  return new Promise((resolve) => {
    const seen = () => {
      if (document.visibilityState === 'hidden') return;
      document.removeEventListener('visibilitychange', seen);
      resolve();
    };
    document.addEventListener('visibilitychange', seen);
  });
}

/**
 * Follow the live change feed (GET /v1/events/stream, Server-Sent Events) through fetch,
 * so the token goes in a header (EventSource cannot send one). Reconnects with
 * Last-Event-ID, waiting 0.5 s doubling to 5 s. A hidden tab lets its stream go and
 * resumes where it stopped once shown again: a browser keeps six connections per server,
 * and every open stream holds one. onEvent(cloudEvent); onState(text).
 */
export function follow({namespace, key} = {}, onEvent, onState = () => {}) {
  let control = null; // the current connection's
  let last = null;
  let closed = false;
  let delay = 500;
  const onVisibility = () => {
    if (document.visibilityState === 'hidden' && control) control.abort();
  };
  document.addEventListener('visibilitychange', onVisibility);
  (async () => {
    while (!closed) {
      await visible();
      if (closed) return;
      control = new AbortController();
      try {
        const extra = {Accept: 'text/event-stream'};
        if (last !== null) extra['Last-Event-ID'] = String(last);
        const response = await fetch(`${apiBase}/v1/events/stream${qs({namespace, key})}`, {
          headers: headers(extra), signal: control.signal, cache: 'no-store',
          credentials: 'omit', referrerPolicy: 'no-referrer',
        });
        if (response.status === 401) {
          unauthenticated();
          onState('signed out');
          return;
        }
        if (!response.ok) throw new ApiError(response.status, null);
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        let started = false;
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = [];
            for (const line of frame.split('\n')) {
              if (line.startsWith('id:')) last = Number(line.slice(3).trim());
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (!started) {
              started = true;
              onState('live');
            }
            if (data.length) onEvent(JSON.parse(data.join('\n')));
          }
        }
      } catch (error) {
        if (closed) return;
      }
      if (closed) return;
      if (document.visibilityState === 'hidden') {
        onState('paused (tab hidden)');
        continue; // no wait: it resumes as soon as the tab is shown
      }
      onState('reconnecting');
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  })();
  return {close() {
    closed = true;
    document.removeEventListener('visibilitychange', onVisibility);
    if (control) control.abort();
  }};
}
