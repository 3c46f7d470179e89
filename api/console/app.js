// The console's shell: signs in (or says auth is off), routes each /ui URL to its view, and keeps links in the
// page (history.pushState) so every view has a URL that can be shared or reloaded.

import {base, call, onUnauthenticated, setToken, token} from './api.js';
import {fill, field, h, problemBox} from './dom.js';
import {href, link, navigate} from './nav.js';
import {auditView} from './views/audit.js';
import {cutView} from './views/cut.js';
import {entryView} from './views/entry.js';
import {healthView} from './views/health.js';
import {namespaceView} from './views/namespace.js';
import {namespacesView} from './views/namespaces.js';
import {tailView} from './views/tail.js';

const main = document.getElementById('main');
const who = document.getElementById('who');
let current = null; // the view on screen: {close()} to stop its live feeds

/** The views, by URL path (below the console's base). */
const ROUTES = [
  [/^\/?$/, () => namespacesView],
  [/^\/namespaces\/([^/]+)\/?$/, () => namespaceView],
  [/^\/namespaces\/([^/]+)\/cut\/?$/, () => cutView],
  [/^\/namespaces\/([^/]+)\/entries\/(.+)$/, () => entryView],
  [/^\/tail\/?$/, () => tailView],
  [/^\/health\/?$/, () => healthView],
  [/^\/audit\/?$/, () => auditView],
];

document.addEventListener('click', (event) => {
  const a = event.target.closest('a[data-nav]');
  if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => route());
window.addEventListener('ssot:navigate', () => route());

function signInView() {
  const input = h('input', {type: 'password', name: 'token', autocomplete: 'off',
    spellcheck: 'false', required: true, size: 60});
  const message = h('div', {'aria-live': 'polite'});
  const form = h('form', {class: 'card signin', onsubmit: async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await showIdentity();
      route();
    } catch (error) {
      setToken(null);
      fill(message, problemBox(error));
    }
  }},
  h('h1', {}, 'Sign in'),
  h('p', {}, 'Paste a bearer token. With ', h('code', {}, 'make run'), ' or ',
    h('code', {}, 'ssot serve'), ' on the embedded servers, the operator\u2019s admin token is in ',
    h('code', {}, '.ssot/admin-token'), ' (', h('code', {}, 'cat .ssot/admin-token'),
    '); anyone else uses a token of their own (', h('code', {}, 'ssot token create'),
    '). The console sees and does exactly what the API lets that token see and do.'),
  field('Bearer token', input),
  h('p', {class: 'muted'}, 'Kept in this browser tab only (sessionStorage) until you sign out or close it.'),
  h('button', {type: 'submit'}, 'Sign in'), message);
  fill(main, form);
  input.focus();
}

async function showIdentity() {
  const me = await call('/v1/access/whoami');
  if (me.method === 'anonymous') {
    // Auth off (SSOT_AUTH=off, loopback only): the API takes no token and lets every
    // request do everything, so there is no one to sign in or out. A token kept from
    // before is of no use to it: forget it.
    setToken(null);
    fill(who, h('span', {class: 'auth-off'}, h('strong', {}, 'Auth off'),
      ': no sign-in, every request may do everything'));
    return me;
  }
  fill(who, h('span', {}, 'Signed in as ', h('strong', {class: 'subject'}, me.subject)),
    h('button', {type: 'button', class: 'link', onclick: () => {
      setToken(null);
      fill(who);
      navigate(href('/'));
    }}, 'Sign out'));
  return me;
}

let signedIn = false;
onUnauthenticated(() => {
  if (!signedIn) return; // signing in: the form says why
  signedIn = false;
  setToken(null);
  fill(who);
  if (current) current.close();
  current = null;
  signInView();
});

async function route() {
  if (current) current.close();
  current = null;
  if (!signedIn && token()) {
    // Render at once and ask who the token is meanwhile: an invalid token answers 401
    // there and on the view's own requests, and either brings back the sign-in form.
    signedIn = true;
    showIdentity().catch((error) => {
      if (error.status !== 401) fill(who, problemBox(error));
    });
  } else if (!signedIn) {
    try {
      await showIdentity(); // without a token this passes only when auth is off
      signedIn = true;
    } catch (error) {
      if (error.status !== 401) {
        fill(main, problemBox(error));
        return;
      }
      signInView();
      return;
    }
  }
  const path = decodeURI(location.pathname.slice(base.length));
  const params = new URLSearchParams(location.search);
  for (const [pattern, view] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      fill(main);
      current = view()(main, match.slice(1), params) || null;
      for (const a of document.querySelectorAll('header nav a')) {
        a.toggleAttribute('aria-current', a.getAttribute('href') === location.pathname);
      }
      main.focus({preventScroll: true});
      return;
    }
  }
  fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No view at ', h('code', {}, location.pathname), '. ',
    link(href('/'), 'The namespaces')));
}

route();
