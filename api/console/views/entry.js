// One entry: its document now, at a version or as of a time (a picker over its history),
// the history timeline (who, when, why, what changed), a diff between any two versions,
// and revert with a preview of the document it would make. New versions appear as they
// are written.

import {call, entryPath, follow, qs} from '../api.js';
import {diffBlock, field, fill, h, jsonBlock, problemBox, when} from '../dom.js';
import {entryHref, href, link, navigate} from '../nav.js';

function changedPaths(patch) {
  if (!patch || !patch.length) return '';
  const paths = patch.map((op) => `${op.op} ${op.path || '/'}`);
  return paths.length > 4 ? `${paths.slice(0, 4).join(', ')} … (${paths.length} changes)` : paths.join(', ');
}

export function entryView(main, [encodedNs, encodedKey], params) {
  const ns = decodeURIComponent(encodedNs);
  const key = encodedKey.split('/').map(decodeURIComponent).join('/');
  const path = entryPath(ns, key);
  let closed = false;
  let versions = []; // history items, oldest first
  let current = null; // the entry now (null: deleted or never)
  let point = {version: params.get('version'), as_of: params.get('as_of')};

  const heading = h('p', {class: 'summary', 'aria-live': 'polite'});
  const documentBox = h('div', {class: 'document'});
  const liveState = h('span', {class: 'live-state muted'}, 'connecting…');
  const timeline = h('ol', {class: 'timeline', reversed: true});
  const range = h('input', {type: 'range', min: 0, max: 0, value: 0, step: 1, 'aria-describedby': 'asof-label'});
  const rangeLabel = h('output', {id: 'asof-label', class: 'asof-label'}, '');
  const timeInput = h('input', {type: 'text', name: 'as_of', placeholder: '2026-11-01T12:00:00Z', spellcheck: 'false', size: 28});
  const fromSelect = h('select', {name: 'from'});
  const toSelect = h('select', {name: 'to'});
  const diffBox = h('div', {class: 'diff-box'});
  const revertSelect = h('select', {name: 'to_version'});
  const reasonInput = h('input', {type: 'text', name: 'reason', placeholder: 'why (recorded in the history)', size: 30});
  const previewBox = h('div', {class: 'preview-box'});
  const revertButton = h('button', {type: 'button', class: 'danger', disabled: true}, 'Revert');
  const message = h('div');

  fill(main,
    h('div', {class: 'crumbs'}, link(href('/'), 'Namespaces'), ' / ',
      link(href(`/namespaces/${encodeURIComponent(ns)}`), ns), ' / ', h('span', {}, key)),
    h('h1', {class: 'key'}, key),
    h('div', {class: 'toolbar'}, heading, h('div', {class: 'actions'},
      link(href('/audit', {namespace: ns, key_prefix: key}), 'Audit'), ' ', liveState)),
    message,
    h('div', {class: 'columns'},
      h('section', {class: 'card', 'aria-labelledby': 'doc-h'},
        h('h2', {id: 'doc-h'}, 'Document'),
        h('div', {class: 'asof'},
          field('As of', range), rangeLabel,
          h('form', {class: 'inline', onsubmit: (event) => {
            event.preventDefault();
            const value = timeInput.value.trim();
            show(value ? {as_of: value} : {});
          }}, field('Or a time (RFC 3339)', timeInput), h('button', {type: 'submit'}, 'Show'),
          h('button', {type: 'button', onclick: () => show({})}, 'Now'))),
        documentBox),
      h('section', {class: 'card', 'aria-labelledby': 'hist-h'},
        h('h2', {id: 'hist-h'}, 'History'), timeline)),
    h('div', {class: 'columns'},
      h('section', {class: 'card', 'aria-labelledby': 'diff-h'},
        h('h2', {id: 'diff-h'}, 'Compare versions'),
        h('form', {class: 'inline', onsubmit: (event) => { event.preventDefault(); compare(); }},
          field('From', fromSelect), field('To', toSelect), h('button', {type: 'submit'}, 'Diff')),
        diffBox),
      h('section', {class: 'card', 'aria-labelledby': 'revert-h'},
        h('h2', {id: 'revert-h'}, 'Revert'),
        h('form', {class: 'inline', onsubmit: (event) => { event.preventDefault(); preview(); }},
          field('To version', revertSelect), field('Reason', reasonInput),
          h('button', {type: 'submit'}, 'Preview'), revertButton),
        previewBox)));

  revertButton.addEventListener('click', revert);
  range.addEventListener('input', () => {
    const i = Number(range.value);
    show(i >= versions.length ? {} : {as_of: versions[i].recorded_at}, {fromRange: true});
  });

  /** Show the document at a point ({} now, {version}, {as_of}); the URL follows. */
  function show(at, {fromRange = false} = {}) {
    point = {version: at.version || null, as_of: at.as_of || null};
    navigate(entryHref(ns, key, point), {replace: true, render: false});
    if (!fromRange) placeRange();
    loadDocument();
  }

  function placeRange() {
    let i = versions.length;
    if (point.version) i = Math.max(0, Number(point.version) - 1);
    else if (point.as_of) {
      const t = Date.parse(point.as_of);
      i = versions.filter((v) => Date.parse(v.recorded_at) <= t).length - 1;
      if (i < 0) i = 0;
    }
    range.value = String(Math.min(i, versions.length));
    labelRange();
  }

  function labelRange() {
    const i = Number(range.value);
    fill(rangeLabel, i >= versions.length ? 'now'
      : h('span', {}, `v${versions[i].version} · `, when(versions[i].recorded_at)));
  }

  async function loadDocument() {
    const query = point.version ? {version: point.version} : point.as_of ? {as_of: point.as_of} : {};
    labelRange();
    try {
      const entry = await call(path + qs(query));
      if (closed) return;
      fill(heading, point.version || point.as_of ? h('span', {class: 'badge past'}, point.version ? `version ${point.version}` : `as of ${point.as_of}`) : h('span', {class: 'badge'}, 'current'),
        ` version ${entry.version} · position ${entry.position} · `, when(entry.recorded_at));
      fill(documentBox, jsonBlock(entry.document, `document version ${entry.version}`));
    } catch (error) {
      if (closed) return;
      fill(heading, h('span', {class: 'badge past'}, point.as_of ? `as of ${point.as_of}` : 'current'));
      fill(documentBox, error.problem && error.problem.code === 'entry_deleted'
        ? h('p', {class: 'muted'}, `Deleted (version ${error.problem.deleted_version}).`)
        : error.problem && error.problem.code === 'entry_not_found' && (point.as_of || point.version)
          ? h('p', {class: 'muted'}, 'The entry did not exist yet then.') : problemBox(error));
    }
  }

  async function loadHistory() {
    const items = [];
    let cursor = null;
    do {
      const page = await call(`${path}/history${qs({limit: 1000, cursor})}`);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && !closed);
    if (closed) return;
    versions = items;
    const last = items[items.length - 1];
    current = last && last.event_type !== 'entry.deleted' ? last : null;
    fill(timeline, [...items].reverse().map((item) => h('li', {class: `event ${item.event_type.replace('.', '-')}`, 'data-version': item.version},
      h('div', {class: 'event-head'},
        link(entryHref(ns, key, {version: item.version}), `v${item.version}`), ' ',
        h('span', {class: 'type'}, item.event_type.replace('entry.', '')), ' by ',
        h('strong', {}, item.actor), ' · ', when(item.recorded_at)),
      item.reason ? h('div', {class: 'reason'}, '“', item.reason, '”') : null,
      h('div', {class: 'paths muted'}, changedPaths(item.patch)))));
    range.max = String(items.length);
    placeRange();
    const options = (select, withZero, chosen) => {
      const before = select.value;
      fill(select, withZero ? h('option', {value: 0}, 'v0 (before it existed)') : null,
        items.map((item) => h('option', {value: item.version}, `v${item.version} ${item.event_type.replace('entry.', '')}`)));
      select.value = before && [...select.options].some((o) => o.value === before) ? before : String(chosen);
    };
    options(fromSelect, true, Math.max(0, items.length - 1));
    options(toSelect, false, items.length);
    const restorable = items.filter((item) => item.event_type !== 'entry.deleted');
    const chosen = revertSelect.value;
    fill(revertSelect, restorable.map((item) => h('option', {value: item.version}, `v${item.version}`)));
    if (chosen) revertSelect.value = chosen;
  }

  async function compare() {
    try {
      const text = await call(`${path}/diff${qs({from: fromSelect.value, to: toSelect.value, format: 'text'})}`, {accept: 'text/plain'});
      if (!closed) fill(diffBox, diffBlock(text, `difference between v${fromSelect.value} and v${toSelect.value}`));
    } catch (error) {
      if (!closed) fill(diffBox, problemBox(error));
    }
  }

  async function preview() {
    revertButton.disabled = true;
    const target = revertSelect.value;
    if (!target) return;
    try {
      const [then, text] = await Promise.all([
        call(path + qs({version: target})),
        current ? call(`${path}/diff${qs({from: current.version, to: target, format: 'text'})}`, {accept: 'text/plain'}) : null,
      ]);
      if (closed) return;
      fill(previewBox,
        h('p', {}, `Reverting appends version ${(versions[versions.length - 1] || {version: 0}).version + 1} with the content of v${target}:`),
        jsonBlock(then.document, 'document after the revert'),
        text !== null ? h('div', {}, h('h3', {}, 'What changes'), diffBlock(text, 'what the revert changes')) : h('p', {class: 'muted'}, 'It brings the deleted entry back.'));
      revertButton.disabled = false;
      revertButton.dataset.version = target;
    } catch (error) {
      if (!closed) fill(previewBox, problemBox(error));
    }
  }

  async function revert() {
    revertButton.disabled = true;
    const target = Number(revertButton.dataset.version);
    const reason = reasonInput.value.trim();
    try {
      const result = await call(`${path}/revert`, {method: 'POST', body: reason ? {to_version: target, reason} : {to_version: target}});
      if (closed) return;
      fill(previewBox, h('p', {class: 'ok', role: 'status'}, result.unchanged
        ? `Unchanged: the entry already has the content of v${target}.`
        : `Reverted: version ${result.version} has the content of v${target}.`));
      await refresh();
    } catch (error) {
      if (!closed) fill(previewBox, problemBox(error));
    }
  }

  async function refresh() {
    try {
      await loadHistory();
      if (!point.version && !point.as_of) await loadDocument();
    } catch (error) {
      if (!closed) fill(message, problemBox(error));
    }
  }

  let pending = null;
  const feed = follow({namespace: ns, key}, () => {
    clearTimeout(pending);
    pending = setTimeout(refresh, 50);
  }, (state) => fill(liveState, state === 'live' ? '● live' : state));

  refresh().then(() => { if (point.version || point.as_of) loadDocument(); });
  return {close() { closed = true; clearTimeout(pending); feed.close(); }};
}
