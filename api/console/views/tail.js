// The live change feed (Server-Sent Events), filtered by namespace, key prefix and event
// type: the namespace filter is the server's, the others are applied here.

import {follow} from '../api.js';
import {field, fill, h, when} from '../dom.js';
import {entryHref, href, link, navigate} from '../nav.js';

const TYPES = ['', 'entry.created', 'entry.updated', 'entry.patched', 'entry.deleted', 'entry.restored', 'namespace.configured'];
const KEEP = 500;

export function tailView(main, _match, params) {
  const namespace = params.get('namespace') || '';
  const prefix = params.get('prefix') || '';
  const type = params.get('type') || '';
  const nsInput = h('input', {type: 'text', name: 'namespace', value: namespace, spellcheck: 'false', placeholder: 'all'});
  const prefixInput = h('input', {type: 'text', name: 'prefix', value: prefix, spellcheck: 'false'});
  const typeSelect = h('select', {name: 'type'}, TYPES.map((t) => h('option', {value: t, selected: t === type}, t || 'any')));
  const state = h('span', {class: 'live-state muted', role: 'status'}, 'connecting…');
  const list = h('ol', {class: 'tail', 'aria-live': 'polite', 'aria-relevant': 'additions'});
  let seen = 0;
  const count = h('span', {class: 'muted'}, '0 events');

  fill(main, h('h1', {}, 'Live tail'),
    h('form', {class: 'inline card', onsubmit: (event) => {
      event.preventDefault();
      navigate(href('/tail', {namespace: nsInput.value.trim(), prefix: prefixInput.value.trim(), type: typeSelect.value}));
    }}, field('Namespace', nsInput), field('Key prefix', prefixInput), field('Event type', typeSelect),
    h('button', {type: 'submit'}, 'Follow'), state, count),
    list);

  const feed = follow({namespace: namespace || undefined}, (event) => {
    const data = event.data || {};
    const eventType = (event.type || '').replace('io.nexus.ssot.', '');
    if (prefix && !(data.key || '').startsWith(prefix)) return;
    if (type && eventType !== type) return;
    seen += 1;
    fill(count, `${seen} event${seen === 1 ? '' : 's'}`);
    const isEntry = eventType.startsWith('entry.');
    list.prepend(h('li', {class: 'tail-item', 'data-key': data.key},
      h('span', {class: 'pos'}, `#${data.position}`), ' ',
      h('span', {class: 'type'}, eventType), ' ',
      h('strong', {}, data.namespace), ' / ',
      isEntry ? link(entryHref(data.namespace, data.key), data.key) : h('span', {}, data.key), ' ',
      h('span', {class: 'muted'}, `v${data.version} by ${data.actor} · `), when(event.time),
      data.reason ? h('span', {class: 'reason'}, ` “${data.reason}”`) : null));
    while (list.children.length > KEEP) list.lastElementChild.remove();
  }, (text) => fill(state, text === 'live' ? '● live' : text));

  return {close() { feed.close(); }};
}
