// Links and navigation inside the console: every view has a URL under the base, and
// following a link or a form changes the URL (history.pushState) and renders the view.

import {base} from './api.js';
import {h} from './dom.js';

/** The URL of a view: href('/namespaces/config', {prefix: 'a/'}). */
export function href(path, params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return `${base}${path}${text ? `?${text}` : ''}`;
}

/** The console path of an entry's page. */
export function entryHref(ns, key, params = {}) {
  return href(`/namespaces/${encodeURIComponent(ns)}/entries/${key.split('/').map(encodeURIComponent).join('/')}`, params);
}

/** Go to a view (a new history entry); with replace, change the URL in place; with
 * render false, only record the URL (the view on screen already shows it). */
export function navigate(url, {replace = false, render = true} = {}) {
  if (url === location.pathname + location.search && !render) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  if (render) window.dispatchEvent(new Event('ssot:navigate'));
}

/** A link to a view that stays in the page. */
export function link(url, ...children) {
  return h('a', {href: url, 'data-nav': true}, ...children);
}
