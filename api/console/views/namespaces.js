// The namespaces the caller may see, with their entry counts and last change.

import {call, qs} from '../api.js';
import {fill, h, problemBox, when} from '../dom.js';
import {href, link} from '../nav.js';

export function namespacesView(main) {
  let closed = false;
  const body = h('tbody');
  const more = h('div');
  fill(main, h('h1', {}, 'Namespaces'),
    h('table', {class: 'grid'}, h('caption', {class: 'sr-only'}, 'Namespaces'),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Namespace'),
        h('th', {scope: 'col', class: 'num'}, 'Live entries'),
        h('th', {scope: 'col', class: 'num'}, 'Deleted'),
        h('th', {scope: 'col'}, 'Last change'))),
      body),
    more);

  // The listing carries each namespace's last change (its position and time): one request
  // a page, not one a row.
  function lastChange(row) {
    if (row.last_position === null) return h('span', {class: 'muted'}, '—');
    return [when(row.last_recorded_at), h('span', {class: 'muted'}, ` · position ${row.last_position}`)];
  }

  async function load(cursor) {
    try {
      const page = await call(`/v1/namespaces${qs({limit: 100, cursor})}`);
      if (closed) return;
      for (const row of page.items) {
        body.append(h('tr', {},
          h('th', {scope: 'row'}, link(href(`/namespaces/${encodeURIComponent(row.namespace)}`), row.namespace)),
          h('td', {class: 'num'}, row.entries ?? h('span', {class: 'muted', title: 'you may see some of its keys'}, 'some')),
          h('td', {class: 'num'}, row.deleted ?? '—'), h('td', {}, lastChange(row))));
      }
      if (!page.items.length && !cursor) body.append(h('tr', {}, h('td', {colspan: 4, class: 'muted'}, 'No namespace you may see yet.')));
      fill(more, page.next_cursor ? h('button', {type: 'button', onclick: () => load(page.next_cursor)}, 'More namespaces') : null);
    } catch (error) {
      if (!closed) fill(more, problemBox(error));
    }
  }
  load(null);
  return {close() { closed = true; }};
}
