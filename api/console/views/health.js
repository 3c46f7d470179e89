// Health, lag and data quality: /v1/health (open to all), the judged lines of ssot status
// (/v1/status, for a caller allowed `metrics`), and one namespace's quality report.

import {call, qs} from '../api.js';
import {field, fill, h, level, problemBox} from '../dom.js';
import {entryHref, href, navigate} from '../nav.js';

const LAG_AMBER = 5;
const LAG_RED = 60;

function lagLevel(seconds) {
  return seconds >= LAG_RED ? 'red' : seconds >= LAG_AMBER ? 'amber' : 'green';
}

export function healthView(main, _match, params) {
  let closed = false;
  const ns = params.get('namespace') || '';
  const healthBox = h('div');
  const statusBox = h('div');
  const qualityBox = h('div');
  const nsSelect = h('select', {name: 'namespace'}, h('option', {value: ''}, '—'));
  fill(main, h('h1', {}, 'Health'),
    h('div', {class: 'columns wide-right'},
      h('section', {class: 'card', 'aria-labelledby': 'lag-h'}, h('h2', {id: 'lag-h'}, 'Lag'), healthBox),
      h('section', {class: 'card', 'aria-labelledby': 'status-h'}, h('h2', {id: 'status-h'}, 'Status (ssot status)'), statusBox)),
    h('section', {class: 'card', 'aria-labelledby': 'quality-h'}, h('h2', {id: 'quality-h'}, 'Data quality'),
      h('form', {class: 'inline', onsubmit: (event) => {
        event.preventDefault();
        navigate(href('/health', {namespace: nsSelect.value}));
      }}, field('Namespace', nsSelect), h('button', {type: 'submit'}, 'Show')), qualityBox));

  async function health() {
    try {
      const body = await call('/v1/health');
      if (closed) return;
      const rows = [['writer', body.writer === 'ok' ? 'green' : 'red', body.writer, '']];
      if (body.broadcaster) rows.push(['broadcaster', lagLevel(body.broadcaster.lag_seconds), `${body.broadcaster.lag_events} events, ${body.broadcaster.lag_seconds} s`, `at ${body.broadcaster.position}`]);
      else rows.push(['broadcaster', 'amber', 'not running', '']);
      for (const [name, view] of Object.entries(body.views || {})) {
        rows.push([`view ${name}`, lagLevel(view.lag_seconds), `${view.lag_events} events, ${view.lag_seconds} s`, `at ${view.position}`]);
      }
      fill(healthBox, h('p', {}, `Log head: position ${body.head_position}.`),
        table(['What', 'Level', 'Lag', 'Position'], rows.map(([name, lvl, value, at]) => [name, level(lvl), value, at])),
        h('p', {class: 'muted'}, `Lag: amber from ${LAG_AMBER} s, red from ${LAG_RED} s. Schemas: ${body.schemas}`));
    } catch (error) {
      if (!closed) fill(healthBox, problemBox(error));
    }
  }

  async function status() {
    try {
      const body = await call('/v1/status');
      if (closed) return;
      fill(statusBox, h('p', {}, 'Overall: ', level(body.status)),
        table(['Check', 'Level', 'Now', 'Threshold'], body.checks.map((c) => [c.name, level(c.level), c.value, c.threshold])));
    } catch (error) {
      if (closed) return;
      fill(statusBox, error.status === 403 || error.status === 404
        ? h('p', {class: 'muted'}, 'Your token may not read the status (it needs the action metrics).')
        : problemBox(error));
    }
  }

  async function namespaces() {
    try {
      const page = await call('/v1/namespaces?limit=1000');
      if (closed) return;
      for (const row of page.items) nsSelect.append(h('option', {value: row.namespace, selected: row.namespace === ns}, row.namespace));
    } catch (error) {
      if (!closed) fill(qualityBox, problemBox(error));
    }
  }

  async function quality() {
    if (!ns) {
      fill(qualityBox, h('p', {class: 'muted'}, 'Choose a namespace with a schema.'));
      return;
    }
    try {
      const body = await call(`/v1/namespaces/${encodeURIComponent(ns)}/quality${qs({limit: 50})}`);
      if (closed) return;
      fill(qualityBox,
        h('p', {}, level(body.violating ? 'amber' : 'green', `${body.conforming_percent ?? 100} % conforming`),
          ` — ${body.entries} entries, ${body.violating} violating; ${body.stale_entries ?? 0} stale; refused writes: ${body.refused_writes ? `${body.refused_writes.last_hour} last hour, ${body.refused_writes.last_day} last day` : '—'}`),
        body.violations && body.violations.length ? table(['Key', 'Violations'], body.violations.map((v) => [
          h('a', {href: entryHref(ns, v.key), 'data-nav': true}, v.key),
          (v.violations || []).map((x) => `${x.path || '/'}: ${x.message}`).join('; ')])) : null);
    } catch (error) {
      if (!closed) fill(qualityBox, problemBox(error));
    }
  }

  health();
  status();
  namespaces();
  quality();
  return {close() { closed = true; }};
}

function table(headings, rows) {
  return h('table', {class: 'grid'},
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))));
}
