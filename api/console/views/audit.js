// The audit trail: events with who, when and why, filtered like GET /v1/audit, paged.

import {call, qs} from '../api.js';
import {field, fill, h, problemBox, when} from '../dom.js';
import {entryHref, href, link, navigate} from '../nav.js';

const FILTERS = ['namespace', 'key_prefix', 'actor', 'type', 'correlation_id', 'since', 'until'];
const LABELS = {namespace: 'Namespace', key_prefix: 'Key prefix', actor: 'Actor', type: 'Event type',
  correlation_id: 'Correlation id', since: 'Since (RFC 3339)', until: 'Until (RFC 3339)'};

export function auditView(main, _match, params) {
  let closed = false;
  const inputs = Object.fromEntries(FILTERS.map((name) => [name, h('input', {type: 'text', name, value: params.get(name) || '', spellcheck: 'false', size: name === 'since' || name === 'until' ? 24 : 16})]));
  const rows = h('tbody');
  const pager = h('div', {class: 'pager'});
  const message = h('div');
  const chosen = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || '']));
  fill(main, h('h1', {}, 'Audit'),
    h('form', {class: 'inline card', role: 'search', onsubmit: (event) => {
      event.preventDefault();
      navigate(href('/audit', Object.fromEntries(FILTERS.map((name) => [name, inputs[name].value.trim()]))));
    }}, FILTERS.map((name) => field(LABELS[name], inputs[name])), h('button', {type: 'submit'}, 'Search')),
    message,
    h('table', {class: 'grid audit'}, h('caption', {class: 'sr-only'}, 'Audit trail'),
      h('thead', {}, h('tr', {}, ['Position', 'When', 'Actor', 'Event', 'Entry', 'Reason', 'Changed'].map((t) => h('th', {scope: 'col'}, t)))),
      rows),
    pager);

  async function load(cursor) {
    try {
      const page = await call(`/v1/audit${qs({...chosen, limit: 100, cursor})}`);
      if (closed) return;
      fill(message);
      for (const e of page.items) {
        rows.append(h('tr', {},
          h('td', {class: 'num'}, e.position), h('td', {}, when(e.recorded_at)), h('td', {}, e.actor),
          h('td', {}, e.event_type),
          h('td', {}, e.namespace.startsWith('_') ? `${e.namespace}/${e.key}` : link(entryHref(e.namespace, e.key, {version: e.version}), `${e.namespace}/${e.key} v${e.version}`)),
          h('td', {}, e.reason || ''),
          h('td', {class: 'preview'}, h('code', {}, JSON.stringify(e.patch).slice(0, 120)))));
      }
      if (!rows.children.length) rows.append(h('tr', {}, h('td', {colspan: 7, class: 'muted'}, 'No events match.')));
      fill(pager, page.next_cursor ? h('button', {type: 'button', onclick: () => load(page.next_cursor)}, 'More') : null);
    } catch (error) {
      if (!closed) fill(message, problemBox(error));
    }
  }
  load(null);
  return {close() { closed = true; }};
}
