// One namespace: its counts and settings, its live entries by key prefix (paged), search
// across keys and values, and the page kept current by the change feed.

import {call, follow, qs} from '../api.js';
import {field, fill, h, problemBox, when} from '../dom.js';
import {entryHref, href, link, navigate} from '../nav.js';

const PAGE = 50;

export function namespaceView(main, [encoded], params) {
  const ns = decodeURIComponent(encoded);
  const prefix = params.get('prefix') || '';
  const q = params.get('q') || '';
  let closed = false;
  let cursors = [null]; // the cursor of each page shown so far
  const summary = h('p', {class: 'summary', 'aria-live': 'polite'});
  const rows = h('tbody');
  const pager = h('div', {class: 'pager'});
  const liveState = h('span', {class: 'live-state muted'}, 'connecting…');
  const message = h('div');
  const prefixInput = h('input', {type: 'text', name: 'prefix', value: prefix, placeholder: 'services/', spellcheck: 'false'});
  const searchInput = h('input', {type: 'search', name: 'q', value: q, placeholder: 'text in keys or values', size: 30, spellcheck: 'false', minlength: 3, maxlength: 200, title: '3 to 200 characters'});

  fill(main,
    h('div', {class: 'crumbs'}, link(href('/'), 'Namespaces'), ' / ', h('span', {}, ns)),
    h('h1', {}, ns),
    summary,
    h('div', {class: 'toolbar'},
      h('form', {class: 'inline', role: 'search', onsubmit: (event) => {
        event.preventDefault();
        navigate(href(`/namespaces/${encodeURIComponent(ns)}`, {prefix: prefixInput.value.trim(), q: searchInput.value.trim()}));
      }}, field('Key prefix', prefixInput), field('Search', searchInput), h('button', {type: 'submit'}, q || prefix ? 'Apply' : 'Find')),
      h('div', {class: 'actions'},
        link(href(`/namespaces/${encodeURIComponent(ns)}/cut`), 'At a past time…'), ' ',
        link(href('/tail', {namespace: ns}), 'Live tail'), ' ',
        link(href('/audit', {namespace: ns}), 'Audit'), ' ', liveState)),
    message,
    h('table', {class: 'grid entries'}, h('caption', {class: 'sr-only'}, q ? `Entries of ${ns} matching ${q}` : `Entries of ${ns}`),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Key'), h('th', {scope: 'col', class: 'num'}, 'Version'),
        h('th', {scope: 'col'}, 'Changed'), h('th', {scope: 'col'}, 'Document'))),
      rows),
    pager);

  async function info() {
    try {
      const about = await call(`/v1/namespaces/${encodeURIComponent(ns)}`);
      if (closed) return;
      fill(summary, about.entries === null ? 'Entries you may see are listed below.'
        : `${about.entries} live entries, ${about.deleted} deleted. Conflict policy ${about.settings ? about.settings.conflict_policy : '—'}.`,
      q ? h('span', {}, ' Showing entries whose key or document contains ', h('mark', {}, q), '.') : null);
    } catch (error) {
      if (!closed) fill(summary, problemBox(error));
    }
  }

  async function load(index, fresh = new Set()) {
    const path = q ? `/v1/namespaces/${encodeURIComponent(ns)}/search` : `/v1/namespaces/${encodeURIComponent(ns)}/entries`;
    try {
      const page = await call(path + qs({q, prefix, limit: PAGE, cursor: cursors[index]}));
      if (closed) return;
      fill(message);
      fill(rows, page.items.map((entry) => h('tr', {class: fresh.has(entry.key) ? 'fresh' : null, 'data-key': entry.key},
        h('th', {scope: 'row'}, link(entryHref(ns, entry.key), entry.key)),
        h('td', {class: 'num'}, entry.version),
        h('td', {}, when(entry.recorded_at)),
        h('td', {class: 'preview'}, h('code', {}, JSON.stringify(entry.document).slice(0, 160))))));
      if (!page.items.length) rows.append(h('tr', {}, h('td', {colspan: 4, class: 'muted'}, q ? 'Nothing matches.' : 'No entries here.')));
      cursors = cursors.slice(0, index + 1);
      if (page.next_cursor) cursors.push(page.next_cursor);
      fill(pager,
        index > 0 ? h('button', {type: 'button', onclick: () => load(index - 1)}, '← Previous') : null,
        h('span', {class: 'muted'}, ` page ${index + 1} `),
        page.next_cursor ? h('button', {type: 'button', onclick: () => load(index + 1)}, 'Next →') : null);
      shown = index;
    } catch (error) {
      if (!closed) fill(message, problemBox(error));
    }
  }

  let shown = 0;
  let pending = null;
  const changed = new Set();
  const feed = follow({namespace: ns}, (event) => {
    const key = event.data && event.data.key;
    if (!key || !key.startsWith(prefix)) return;
    changed.add(key);
    clearTimeout(pending); // a burst of writes is one reload
    pending = setTimeout(() => {
      const fresh = new Set(changed);
      changed.clear();
      load(shown, fresh);
      info();
    }, 100);
  }, (state) => fill(liveState, state === 'live' ? '● live' : state));

  info();
  load(0);
  return {close() { closed = true; clearTimeout(pending); feed.close(); }};
}
