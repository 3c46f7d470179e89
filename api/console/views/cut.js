// A namespace as it was at a past time or position (one consistent cut), and a restore to
// it: a dry run lists the plan (every key, what would happen, the patch), then apply.

import {call, qs} from '../api.js';
import {field, fill, h, problemBox, when} from '../dom.js';
import {entryHref, href, link, navigate} from '../nav.js';

const PAGE = 50;

export function cutView(main, [encoded], params) {
  const ns = decodeURIComponent(encoded);
  const asOf = params.get('as_of') || '';
  const position = params.get('position') || '';
  const prefix = params.get('prefix') || '';
  let closed = false;
  const asOfInput = h('input', {type: 'text', name: 'as_of', value: asOf, placeholder: '2026-11-01T12:00:00Z', spellcheck: 'false', size: 28});
  const positionInput = h('input', {type: 'number', name: 'position', value: position, min: 0, inputmode: 'numeric'});
  const prefixInput = h('input', {type: 'text', name: 'prefix', value: prefix, spellcheck: 'false'});
  const reasonInput = h('input', {type: 'text', name: 'reason', placeholder: 'why (required, recorded)', size: 36});
  const rows = h('tbody');
  const pager = h('div', {class: 'pager'});
  const about = h('p', {class: 'summary'});
  const plan = h('div', {class: 'plan'});
  const applyButton = h('button', {type: 'button', class: 'danger', disabled: true}, 'Apply restore');
  const chosen = asOf ? {as_of: asOf} : position ? {position: Number(position)} : null;

  fill(main,
    h('div', {class: 'crumbs'}, link(href('/'), 'Namespaces'), ' / ',
      link(href(`/namespaces/${encodeURIComponent(ns)}`), ns), ' / ', h('span', {}, 'at a past point')),
    h('h1', {}, `${ns} at a past point`),
    h('form', {class: 'inline card', onsubmit: (event) => {
      event.preventDefault();
      navigate(href(`/namespaces/${encodeURIComponent(ns)}/cut`, {as_of: asOfInput.value.trim(), position: asOfInput.value.trim() ? '' : positionInput.value.trim(), prefix: prefixInput.value.trim()}));
    }}, field('As of (RFC 3339)', asOfInput), h('span', {class: 'muted'}, 'or'), field('Position', positionInput),
    field('Key prefix', prefixInput), h('button', {type: 'submit'}, 'Show')),
    about,
    chosen ? h('table', {class: 'grid entries'}, h('caption', {class: 'sr-only'}, `Entries of ${ns} then`),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Key'), h('th', {scope: 'col', class: 'num'}, 'Version'),
        h('th', {scope: 'col'}, 'Changed'), h('th', {scope: 'col'}, 'Document'))), rows) : h('p', {class: 'muted'}, 'Choose a time or a log position.'),
    pager,
    chosen ? h('section', {class: 'card', 'aria-labelledby': 'restore-h'},
      h('h2', {id: 'restore-h'}, 'Restore the namespace to this point'),
      h('p', {}, 'Every change is appended as a new event (nothing is rewritten) in one transaction; entries created since are deleted.'),
      h('form', {class: 'inline', onsubmit: (event) => { event.preventDefault(); restore(true); }},
        field('Reason', reasonInput), h('button', {type: 'submit'}, 'Dry run'), applyButton),
      plan) : null);

  applyButton.addEventListener('click', () => restore(false));

  let cursors = [null];
  async function load(index) {
    try {
      const page = await call(`/v1/namespaces/${encodeURIComponent(ns)}/entries${qs({...chosen, prefix, limit: PAGE, cursor: cursors[index]})}`);
      if (closed) return;
      fill(about, `The cut at position ${page.position}`, prefix ? ` (keys under ${prefix})` : '', ':');
      fill(rows, page.items.map((entry) => h('tr', {},
        h('th', {scope: 'row'}, link(entryHref(ns, entry.key, {version: entry.version}), entry.key)),
        h('td', {class: 'num'}, entry.version), h('td', {}, when(entry.recorded_at)),
        h('td', {class: 'preview'}, h('code', {}, JSON.stringify(entry.document).slice(0, 160))))));
      if (!page.items.length) rows.append(h('tr', {}, h('td', {colspan: 4, class: 'muted'}, 'No live entries then.')));
      cursors = cursors.slice(0, index + 1);
      if (page.next_cursor) cursors.push(page.next_cursor);
      fill(pager, index > 0 ? h('button', {type: 'button', onclick: () => load(index - 1)}, '← Previous') : null,
        page.next_cursor ? h('button', {type: 'button', onclick: () => load(index + 1)}, 'Next →') : null);
    } catch (error) {
      if (!closed) fill(about, problemBox(error));
    }
  }

  async function restore(dryRun) {
    applyButton.disabled = true;
    const reason = reasonInput.value.trim();
    if (!reason) {
      fill(plan, h('div', {class: 'problem', role: 'alert'}, 'A restore needs a reason.'));
      reasonInput.focus();
      return;
    }
    try {
      const result = await call(`/v1/namespaces/${encodeURIComponent(ns)}/restore`, {method: 'POST',
        body: {...chosen, reason, dry_run: dryRun, ...(prefix ? {key_prefix: prefix} : {})}});
      if (closed) return;
      const steps = result.operations;
      fill(plan,
        h('p', {role: 'status'}, dryRun ? `The plan: ${steps.length} change(s) to restore position ${result.position}.`
          : `Restored: ${steps.length} change(s) appended (correlation ${result.correlation_id}).`),
        steps.length ? h('table', {class: 'grid'}, h('caption', {class: 'sr-only'}, 'Restore plan'),
          h('thead', {}, h('tr', {}, ['Key', 'Action', 'From', 'To', 'Patch'].map((t) => h('th', {scope: 'col'}, t)))),
          h('tbody', {}, steps.map((s) => h('tr', {}, h('th', {scope: 'row'}, link(entryHref(ns, s.key), s.key)),
            h('td', {}, s.action), h('td', {class: 'num'}, `v${s.from_version}`), h('td', {class: 'num'}, s.to_version ? `v${s.to_version}` : '—'),
            h('td', {class: 'preview'}, h('code', {}, JSON.stringify(s.patch).slice(0, 200))))))) : null);
      applyButton.disabled = !dryRun || !steps.length;
    } catch (error) {
      if (!closed) fill(plan, problemBox(error));
    }
  }

  if (chosen) load(0);
  return {close() { closed = true; }};
}
