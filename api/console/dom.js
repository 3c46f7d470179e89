// Building the page from data without innerHTML: every value is a text node, so nothing
// an entry holds is ever read as HTML.

/** An element: h('a', {href: '/x', class: 'k'}, 'text', child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled form control: label text, then the control. */
export function field(label, control) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div', {class: 'field'}, h('label', {for: id}, label), control);
}

/** Pretty JSON of a document. */
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** A document shown as preformatted JSON. */
export function jsonBlock(value, label) {
  return h('pre', {class: 'json', tabindex: '0', 'aria-label': label || 'document'},
    pretty(value));
}

/** A unified diff (text) with added and removed lines marked. */
export function diffBlock(text, label) {
  const lines = text.split('\n').map((line) => {
    const kind = line.startsWith('+++') || line.startsWith('---') ? 'meta'
      : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del'
        : line.startsWith('@@') ? 'hunk' : 'ctx';
    return h('span', {class: `d-${kind}`}, line + '\n');
  });
  return h('pre', {class: 'diff', tabindex: '0', 'aria-label': label || 'difference'},
    text.trim() === '' ? h('span', {class: 'muted'}, '(no difference)') : lines);
}

/** A time as the browser's locale shows it, with the exact UTC time as its title. */
export function when(iso) {
  if (!iso) return h('span', {class: 'muted'}, '—');
  const d = new Date(iso);
  return h('time', {datetime: iso, title: iso}, d.toLocaleString());
}

/** A status dot and word: green, amber or red. */
export function level(name, text) {
  return h('span', {class: `level level-${name}`}, h('span', {class: 'dot', 'aria-hidden': 'true'}),
    text || name);
}

/** An error from the API as a message the user can act on. */
export function problemBox(error) {
  const p = error && error.problem;
  if (p && typeof p === 'object') {
    return h('div', {class: 'problem', role: 'alert'},
      h('strong', {}, `${p.status || error.status} ${p.code || p.title || ''}`), ' ',
      p.detail || '', p.field ? h('span', {class: 'muted'}, ` (field ${p.field})`) : null);
  }
  return h('div', {class: 'problem', role: 'alert'}, String(error && error.message || error));
}
