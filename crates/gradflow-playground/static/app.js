// gradflow playground: the page. Training runs on the server (the gradflow
// engine); this file sends the setup, draws the frames that stream back over
// server-sent events, and keeps the setup in the address (#…) for sharing.
'use strict';

// The data sets and the input features, with what their thumbnails show, come from the server too (see main).
let FEATURES = [], DATASETS = [];
const LRS = [0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const RATES = [0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const DROPOUTS = [0, 0.1, 0.2, 0.3, 0.5];
const CLASS_COLORS = [[245, 147, 34], [8, 119, 189], [44, 160, 44], [148, 103, 189], [214, 39, 40], [140, 86, 75],
  [227, 119, 194], [127, 127, 127]];
const NEG = [245, 147, 34], MID = [232, 234, 235], POS = [8, 119, 189];
const DOMAIN = 6;
const ICON_PLAY = '<svg viewBox="0 0 24 24" width="22" height="22"><path d="M8 5v14l11-7z" fill="currentColor"/></svg>';
const ICON_PAUSE = '<svg viewBox="0 0 24 24" width="22" height="22"><path d="M6 5h4v14H6zM14 5h4v14h-4z" fill="currentColor"/></svg>';
/** Where an upload is kept across reloads: its points cannot go into the address. */
const CSV_KEY = 'gradflow-playground-csv';

// The menus (activations, optimizers, initializers, penalties, problem types,
// speeds), the caps and the default setup come from the server (/api/limits),
// which derives them from gradflow's declarations.
let LIMITS = null;
/** The ids of a menu from /api/limits. */
const ids = (menu) => LIMITS[menu].map((m) => m.id);
/** The label the server gives an id of a menu (the id itself when unknown). */
function labelOf(menu, id) {
  const m = LIMITS[menu].find((x) => x.id === id);
  return m ? m.label : id;
}
/** A fresh copy of the server's default setup. */
const defaults = () => JSON.parse(JSON.stringify(LIMITS.defaults));
function storedCsv() {
  try { return localStorage.getItem(CSV_KEY); } catch (e) { return null; }
}

const $ = (id) => document.getElementById(id);
const S = {
  id: null, cfg: null, state: null, frame: null, dirty: false, es: null, history: [], playing: false,
  walk: null, walkAt: 0, walkPoint: null, layout: null, queue: Promise.resolve(), frames: 0, lastVersion: 0,
};

// ---------------------------------------------------------------- colors

function mix(a, b, t) {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}
/** Color of a value in [-1, 1]: orange (negative) through light grey to blue (positive). */
function scaleColor(v) {
  v = Math.max(-1, Math.min(1, v));
  return v < 0 ? mix(MID, NEG, -v) : mix(MID, POS, v);
}
/** Colors of the 256 byte values that encode [-1, 1]. */
const LUT = Array.from({ length: 256 }, (_, b) => scaleColor(b / 127.5 - 1).map(Math.round));
function css(c, alpha) {
  const r = Math.round(c[0]), g = Math.round(c[1]), b = Math.round(c[2]);
  return alpha === undefined ? `rgb(${r},${g},${b})` : `rgba(${r},${g},${b},${alpha})`;
}
function pointColor(label) {
  const st = S.state;
  if (st && st.head === 'regression') return scaleColor(label);
  return CLASS_COLORS[Math.round(label) % CLASS_COLORS.length];
}
function fmt(v, digits = 3) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(1);
  return v.toFixed(digits);
}
function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ---------------------------------------------------------------- setup in the address

function encodeHash(c) {
  const p = new URLSearchParams();
  p.set('dataset', c.dataset);
  p.set('seed', c.seed);
  p.set('noise', c.noise);
  p.set('ratio', c.train_ratio);
  p.set('points', c.points);
  p.set('batch', c.batch_size);
  p.set('features', c.features.join(','));
  p.set('layers', c.layers.map((l) => l.neurons).join(','));
  p.set('act', c.layers.map((l) => l.activation).join(','));
  p.set('drop', c.layers.map((l) => l.dropout).join(','));
  p.set('lr', c.learning_rate);
  p.set('opt', c.optimizer);
  p.set('reg', c.regularization);
  p.set('rate', c.reg_rate);
  p.set('problem', c.problem);
  p.set('init', c.init);
  p.set('spf', c.steps_per_frame);
  return p.toString();
}

function decodeHash(hash) {
  const c = defaults();
  const p = new URLSearchParams(hash.replace(/^#/, ''));
  const num = (k, lo, hi, int) => {
    if (!p.has(k)) return undefined;
    const v = Number(p.get(k));
    if (!isFinite(v) || v < lo || v > hi) return undefined;
    return int ? Math.round(v) : v;
  };
  const set = (key, v) => { if (v !== undefined) c[key] = v; };
  if (p.has('dataset') && DATASETS.some((d) => d.id === p.get('dataset'))) c.dataset = p.get('dataset');
  // Uploaded points are not in the address; the last upload is in local storage.
  if (c.dataset === 'csv' && !storedCsv()) c.dataset = defaults().dataset;
  set('seed', num('seed', 0, 1e9, true));
  set('noise', num('noise', 0, 50));
  set('train_ratio', num('ratio', 10, 90));
  set('points', num('points', 20, 2000, true));
  set('batch_size', num('batch', 1, 2000, true));
  set('learning_rate', num('lr', 1e-9, 10));
  set('reg_rate', num('rate', 0, 10));
  if (p.has('features')) {
    const f = p.get('features').split(',').filter((x, i, a) => FEATURES.some((g) => g.id === x) && a.indexOf(x) === i);
    if (f.length) c.features = f;
  }
  if (p.has('layers')) {
    const raw = p.get('layers');
    const ns = raw === '' ? [] : raw.split(',').map(Number);
    if (ns.length <= LIMITS.max_layers && ns.every((n) => Number.isInteger(n) && n >= 1 && n <= LIMITS.max_neurons)) {
      const acts = (p.get('act') || '').split(',');
      const drops = (p.get('drop') || '').split(',').map(Number);
      c.layers = ns.map((n, i) => ({
        neurons: n,
        activation: ids('activations').includes(acts[i]) ? acts[i] : c.layers.concat(defaults().layers)[0].activation,
        dropout: DROPOUTS.includes(drops[i]) ? drops[i] : 0,
      }));
    }
  }
  if (ids('optimizers').includes(p.get('opt'))) c.optimizer = p.get('opt');
  if (ids('regularizations').includes(p.get('reg'))) c.regularization = p.get('reg');
  if (ids('problems').includes(p.get('problem'))) c.problem = p.get('problem');
  if (ids('inits').includes(p.get('init'))) c.init = p.get('init');
  if (LIMITS.speeds.includes(Number(p.get('spf')))) c.steps_per_frame = Number(p.get('spf'));
  return c;
}

function writeHash() {
  const h = '#' + encodeHash(S.cfg);
  if (location.hash !== h) history.replaceState(null, '', h);
}

// ---------------------------------------------------------------- server calls

function showError(msg) {
  const e = $('error');
  if (!msg) { e.hidden = true; return; }
  e.textContent = msg;
  e.hidden = false;
  clearTimeout(showError.t);
  showError.t = setTimeout(() => { e.hidden = true; }, 8000);
}

async function api(method, path, body, type) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers['Content-Type'] = type || 'application/json';
    opts.body = type ? body : JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!r.ok) {
    const err = new Error((data && data.error) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

/** Run calls one after another, so that a slider dragged fast cannot reorder them. */
function enqueue(fn) {
  S.queue = S.queue.then(fn).catch((e) => showError(e.message));
  return S.queue;
}

async function createSession(cfg) {
  const r = await api('POST', '/api/sessions', cfg);
  S.id = r.id;
  adoptState(r.state);
  openEvents();
  return r;
}

/** Call the session; if it expired (404), open a new one with the same setup and try again. */
async function sessionCall(method, sub, body, type) {
  try {
    return await api(method, `/api/sessions/${S.id}${sub}`, body, type);
  } catch (e) {
    if (e.status !== 404) throw e;
    await createSession(S.cfg);
    return api(method, `/api/sessions/${S.id}${sub}`, body, type);
  }
}

function openEvents() {
  if (S.es) S.es.close();
  const es = new EventSource(`/api/sessions/${S.id}/events`);
  S.es = es;
  es.addEventListener('frame', (ev) => {
    const f = JSON.parse(ev.data);
    if (!S.state || f.version !== S.state.version) {
      // A frame of a restart can outrun the answer that announces it: keep it for adoptState.
      if (!S.state || f.version > S.state.version) S.early = f;
      return;
    }
    S.frame = f;
    S.playing = f.playing;
    if (!S.history.length || S.history[S.history.length - 1][0] !== f.epoch || f.epoch === 0) {
      const h = [f.epoch, f.train_loss, f.test_loss];
      if (S.history.length && S.history[S.history.length - 1][0] === f.epoch) S.history[S.history.length - 1] = h;
      else S.history.push(h);
      if (S.history.length > 2000) S.history = S.history.filter((_, i) => i % 2 === 0);
    }
    S.dirty = true;
  });
  es.addEventListener('closed', () => { es.close(); });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED && S.es === es) {
      enqueue(() => createSession(S.cfg));
    }
  };
}

function adoptState(st, keepCfg) {
  S.state = st;
  if (!keepCfg) S.cfg = st.config;
  S.history = st.history.slice();
  S.frame = S.early && S.early.version === st.version ? S.early : null;
  S.early = null;
  S.walk = null;
  S.walkPoint = null;
  renderControls();
  renderExport();
  writeHash();
  S.layout = null;
  S.dirty = true;
  $('walk').innerHTML = '<p class="sub">Click a point on the output map.</p>';
  const note = [];
  if (st.config.dataset === 'csv') note.push(`${st.train.length + st.test.length} uploaded points` + (st.rescaled ? ', moved and scaled into the square' : ''));
  if (st.head === 'multiclass') note.push(`${st.classes} classes: softmax + cross-entropy`);
  else if (st.head === 'binary') note.push('2 classes: one logit, binary cross-entropy');
  else note.push('regression: mean squared error');
  $('data-note').textContent = note.join('; ');
}

function applyConfig(change) {
  const cfg = JSON.parse(JSON.stringify(S.cfg));
  change(cfg);
  S.cfg = cfg;
  S.cfgGen = (S.cfgGen || 0) + 1;
  renderControls();
  writeHash();
  clearTimeout(applyConfig.t);
  applyConfig.t = setTimeout(() => enqueue(async () => {
    const gen = S.cfgGen;
    const r = await sessionCall('POST', '/config', S.cfg);
    // A change made while this one was on its way wins: keep it, it is sent next.
    const newer = S.cfgGen !== gen;
    if (r.reset) adoptState(r.state, newer);
    else {
      S.state = r.state;
      if (!newer) S.cfg = r.state.config;
      renderExport();
      writeHash();
    }
  }), 120);
}

function control(action) {
  return enqueue(async () => {
    const r = await sessionCall('POST', '/control', { action });
    S.playing = r.playing;
    if (r.state) adoptState(r.state);
    renderPlay();
  });
}

// ---------------------------------------------------------------- controls

function fillSelect(sel, values, label) {
  sel.innerHTML = '';
  for (const v of values) {
    const o = document.createElement('option');
    o.value = String(v);
    o.textContent = label ? label(v) : String(v);
    sel.appendChild(o);
  }
}
function selectValue(sel, v, label) {
  const s = String(v);
  if (![...sel.options].some((o) => o.value === s)) {
    const o = document.createElement('option');
    o.value = s;
    o.textContent = label ? label(v) : s;
    sel.appendChild(o);
  }
  sel.value = s;
}

function setupControls() {
  fillSelect($('lr'), LRS);
  fillSelect($('regrate'), RATES);
  for (const [sel, menu] of [['act', 'activations'], ['opt', 'optimizers'], ['init', 'inits'],
    ['reg', 'regularizations'], ['problem', 'problems']]) {
    fillSelect($(sel), ids(menu), (id) => labelOf(menu, id));
  }
  fillSelect($('speed'), LIMITS.speeds, (n) => (n === 0 ? 'max' : `${n} step${n === 1 ? '' : 's'}`));
  $('speed').onchange = (e) => applyConfig((c) => { c.steps_per_frame = Number(e.target.value); });
  $('lr').onchange = (e) => applyConfig((c) => { c.learning_rate = Number(e.target.value); });
  $('regrate').onchange = (e) => applyConfig((c) => { c.reg_rate = Number(e.target.value); });
  $('act').onchange = (e) => applyConfig((c) => { c.layers.forEach((l) => { l.activation = e.target.value; }); });
  $('reg').onchange = (e) => applyConfig((c) => {
    c.regularization = e.target.value;
    if (c.regularization !== 'none' && c.reg_rate === 0) c.reg_rate = 0.003;
  });
  $('problem').onchange = (e) => applyConfig((c) => {
    c.problem = e.target.value;
    const d = DATASETS.find((x) => x.id === c.dataset);
    // A data set of the other problem type gives way to the first one of this type.
    if (d.problem && d.problem !== c.problem) c.dataset = DATASETS.find((x) => x.problem === c.problem).id;
  });
  $('opt').onchange = (e) => applyConfig((c) => { c.optimizer = e.target.value; });
  $('init').onchange = (e) => applyConfig((c) => { c.init = e.target.value; });
  const slider = (id, key, show) => {
    $(id).oninput = (e) => { $(id + '-v').textContent = show(e.target.value); };
    $(id).onchange = (e) => applyConfig((c) => { c[key] = Number(e.target.value); });
  };
  slider('ratio', 'train_ratio', (v) => v + '%');
  slider('noise', 'noise', (v) => v);
  slider('batch', 'batch_size', (v) => v);
  slider('points', 'points', (v) => v);
  $('seed').onchange = (e) => {
    const v = Math.max(0, Math.min(999999, Math.round(Number(e.target.value) || 0)));
    applyConfig((c) => { c.seed = v; });
  };
  $('regen').onclick = () => applyConfig((c) => { c.seed = (c.seed + 1) % 1000000; });
  $('play').onclick = () => control(S.playing ? 'pause' : 'play');
  $('step').onclick = () => control('step');
  $('reset').onclick = () => control('reset');
  $('add-layer').onclick = () => applyConfig((c) => {
    if (c.layers.length >= LIMITS.max_layers) return;
    const last = c.layers[c.layers.length - 1];
    c.layers.push(last ? { neurons: last.neurons, activation: last.activation, dropout: 0 } : defaults().layers[0]);
  });
  $('rm-layer').onclick = () => applyConfig((c) => { c.layers.pop(); });
  $('show-test').onchange = () => { S.dirty = true; };
  $('discretize').onchange = () => { S.dirty = true; };
  $('show-walk').onchange = () => { S.dirty = true; };
  $('csv').onchange = (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    if (file.size > 1 << 20) { showError('The CSV is larger than 1 MB.'); return; }
    const reader = new FileReader();
    reader.onload = () => enqueue(() => uploadCsv(reader.result));
    reader.readAsText(file);
  };
  $('copy-toml').onclick = () => copy(S.state ? S.state.toml : '');
  $('copy-url').onclick = () => copy(location.href);
  $('download-toml').onclick = () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([S.state.toml], { type: 'text/plain' }));
    a.download = 'playground.toml';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };
  $('heatmap').onclick = onHeatmapClick;
  $('net').onclick = onNetClick;
  $('net').onmousemove = onNetHover;
  $('net').onmouseleave = () => { $('tip').hidden = true; };
  window.addEventListener('resize', () => { S.layout = null; S.dirty = true; });
  // A setup pasted into the address (or a link followed within the page) is applied.
  window.addEventListener('hashchange', () => {
    const cfg = decodeHash(location.hash);
    if (S.cfg && encodeHash(cfg) !== encodeHash(S.cfg)) applyConfig((c) => Object.assign(c, cfg));
  });
  window.addEventListener('pagehide', () => {
    if (S.id) fetch(`/api/sessions/${S.id}`, { method: 'DELETE', keepalive: true }).catch(() => {});
  });
  drawDatasetThumbs();
}

/** Send an upload and keep it in local storage, so that a reload finds it again. */
async function uploadCsv(text) {
  const st = await sessionCall('POST', '/csv', text, 'text/csv');
  try { localStorage.setItem(CSV_KEY, text); } catch (e) { status('The upload is too large to keep across reloads.'); }
  adoptState(st);
}

function copy(text) {
  if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => status('Copied.'), () => status('Copy failed.'));
}
function status(msg) {
  $('status').textContent = msg;
  clearTimeout(status.t);
  status.t = setTimeout(() => { $('status').textContent = ''; }, 3000);
}

function renderPlay() {
  const b = $('play');
  if (S.shownPlaying === S.playing) return;
  S.shownPlaying = S.playing;
  b.innerHTML = S.playing ? ICON_PAUSE : ICON_PLAY;
  b.classList.toggle('playing', S.playing);
  b.setAttribute('aria-label', S.playing ? 'Pause' : 'Run');
}

function renderControls() {
  const c = S.cfg;
  selectValue($('lr'), c.learning_rate);
  selectValue($('regrate'), c.reg_rate);
  $('reg').value = c.regularization;
  $('problem').value = c.problem;
  selectValue($('opt'), c.optimizer);
  selectValue($('init'), c.init, (id) => labelOf('inits', id));
  selectValue($('speed'), c.steps_per_frame);
  const acts = [...new Set(c.layers.map((l) => l.activation))];
  const act = $('act');
  [...act.options].filter((o) => o.value === 'mixed').forEach((o) => o.remove());
  if (acts.length === 1) act.value = acts[0];
  else if (acts.length === 0) act.value = defaults().layers[0].activation;
  else selectValue(act, 'mixed', () => 'Mixed');
  for (const [id, key, show] of [['ratio', 'train_ratio', (v) => v + '%'], ['noise', 'noise', (v) => v],
    ['batch', 'batch_size', (v) => v], ['points', 'points', (v) => v]]) {
    $(id).value = c[key];
    $(id + '-v').textContent = show(c[key]);
  }
  $('points').disabled = c.dataset === 'csv';
  $('seed').value = c.seed;
  $('layer-count').textContent = `${c.layers.length} hidden layer${c.layers.length === 1 ? '' : 's'}`;
  for (const el of document.querySelectorAll('#datasets .ds')) {
    el.classList.toggle('selected', el.dataset.id === c.dataset);
    const d = DATASETS.find((x) => x.id === el.dataset.id);
    el.classList.toggle('other-problem', (c.problem === 'regression') !== (d.kind === 'r') && d.kind !== 'u');
  }
  renderPlay();
  S.layout = null;
}

function renderExport() {
  if (!S.state) return;
  $('toml').textContent = S.state.toml;
  $('cli').textContent = S.state.cli;
}

// ---------------------------------------------------------------- dataset thumbnails

function drawDatasetThumbs() {
  const box = $('datasets');
  box.innerHTML = '';
  for (const d of DATASETS) {
    const b = document.createElement('button');
    b.className = 'ds';
    b.dataset.id = d.id;
    b.title = d.label;
    const cv = document.createElement('canvas');
    cv.width = 48; cv.height = 48;
    drawThumb(cv, d);
    const span = document.createElement('span');
    span.textContent = d.label;
    b.appendChild(cv);
    b.appendChild(span);
    b.onclick = () => {
      if (d.id === 'csv') {
        if (S.cfg.dataset !== 'csv') $('csv').click();
        return;
      }
      applyConfig((c) => {
        c.dataset = d.id;
        c.problem = d.kind === 'r' ? 'regression' : 'classification';
      });
    };
    box.appendChild(b);
  }
}

/** A data set's thumbnail: a sample of its points (from the server), or stripes and "CSV" for an upload. */
function drawThumb(cv, d) {
  const ctx = cv.getContext('2d');
  ctx.fillStyle = css(MID);
  ctx.fillRect(0, 0, cv.width, cv.height);
  const classes = Math.max(2, ...d.points.map((p) => p[2] + 1));
  for (const [x1, x2, l] of d.points) {
    const c = d.kind === 'r' ? scaleColor(l) : classes === 2 ? (l > 0.5 ? POS : NEG) : CLASS_COLORS[l];
    ctx.fillStyle = css(c);
    ctx.fillRect((x1 + DOMAIN) / (2 * DOMAIN) * cv.width - 1.5, (DOMAIN - x2) / (2 * DOMAIN) * cv.height - 1.5, 3, 3);
  }
  if (d.kind === 'u') {
    ctx.fillStyle = '#555';
    ctx.font = 'bold 13px sans-serif';
    ctx.textAlign = 'center';
    ctx.fillText('CSV', cv.width / 2, cv.height / 2 + 5);
  }
}

// ---------------------------------------------------------------- network view

function outCount() {
  return S.state && S.state.head === 'multiclass' ? S.state.classes : 1;
}

function computeLayout() {
  const c = S.cfg;
  const cols = [FEATURES.length, ...c.layers.map((l) => l.neurons), outCount()];
  const wrap = $('net-wrap');
  const minCol = 86;
  const width = Math.max(wrap.clientWidth - 4, cols.length * minCol);
  const top = 92, height = 470;
  const colW = width / cols.length;
  const maxN = Math.max(...cols);
  const gap = maxN > 12 ? 3 : 8;
  const node = Math.max(8, Math.min(38, Math.floor((height - top - 12) / maxN) - gap));
  const nodes = cols.map((n, ci) => {
    const x = ci * colW + (colW - node) / 2;
    const colH = n * node + (n - 1) * gap;
    const y0 = top + Math.max(0, (height - top - 12 - colH) / 2);
    return Array.from({ length: n }, (_, i) => ({ x, y: y0 + i * (node + gap), size: node }));
  });
  S.layout = { cols, width, height, colW, node, nodes, top };
  const cv = $('net');
  const dpr = window.devicePixelRatio || 1;
  cv.width = Math.round(width * dpr);
  cv.height = Math.round(height * dpr);
  cv.style.width = width + 'px';
  cv.style.height = height + 'px';
  $('net-inner').style.width = width + 'px';
  renderLayerControls();
  S.featureImages = FEATURES.map((f) => featureImage(f));
}

/** A feature's thumbnail: its values over the square, from the server, already in [-1, 1]. */
function featureImage(f) {
  return mapCanvas(Math.round(Math.sqrt(f.map.length)), (k) => scaleColor(f.map[k]));
}

/** A small canvas of n×n cells colored by colorAt(cell index). */
function mapCanvas(n, colorAt, reuse) {
  const cv = reuse && reuse.width === n ? reuse : document.createElement('canvas');
  cv.width = n; cv.height = n;
  const ctx = cv.getContext('2d');
  const img = ctx.createImageData(n, n);
  for (let k = 0; k < n * n; k++) {
    const c = colorAt(k);
    img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return cv;
}

function renderLayerControls() {
  const box = $('layer-controls');
  box.innerHTML = '';
  const L = S.layout;
  S.cfg.layers.forEach((layer, li) => {
    const d = document.createElement('div');
    d.className = 'layer-ctl';
    d.style.left = ((li + 1) * L.colW + 2) + 'px';
    d.style.width = (L.colW - 4) + 'px';
    const btns = document.createElement('div');
    btns.className = 'btns';
    const plus = document.createElement('button');
    plus.className = 'round tiny';
    plus.textContent = '+';
    plus.title = 'Add a neuron';
    plus.onclick = () => applyConfig((c) => { c.layers[li].neurons = Math.min(LIMITS.max_neurons, c.layers[li].neurons + 1); });
    const minus = document.createElement('button');
    minus.className = 'round tiny';
    minus.textContent = '−';
    minus.title = 'Remove a neuron';
    minus.onclick = () => applyConfig((c) => { c.layers[li].neurons = Math.max(1, c.layers[li].neurons - 1); });
    btns.appendChild(plus);
    btns.appendChild(minus);
    d.appendChild(btns);
    const lab = document.createElement('div');
    lab.className = 'n';
    lab.textContent = `${layer.neurons} neuron${layer.neurons === 1 ? '' : 's'}`;
    d.appendChild(lab);
    const act = document.createElement('select');
    act.className = 'layer-act';
    act.title = 'Activation of this layer';
    fillSelect(act, ids('activations'), (a) => labelOf('activations', a));
    act.value = layer.activation;
    act.onchange = (e) => applyConfig((c) => { c.layers[li].activation = e.target.value; });
    d.appendChild(act);
    const drop = document.createElement('select');
    drop.className = 'layer-drop';
    drop.title = 'Dropout after this layer';
    fillSelect(drop, DROPOUTS, (p) => p === 0 ? 'no dropout' : `dropout ${p}`);
    selectValue(drop, layer.dropout, (p) => `dropout ${p}`);
    drop.onchange = (e) => applyConfig((c) => { c.layers[li].dropout = Number(e.target.value); });
    d.appendChild(drop);
    box.appendChild(d);
  });
  const out = document.createElement('div');
  out.className = 'layer-ctl out';
  out.style.left = ((S.cfg.layers.length + 1) * L.colW + 2) + 'px';
  out.style.width = (L.colW - 4) + 'px';
  const head = S.state ? S.state.head : 'binary';
  out.innerHTML = '<div class="n">Output</div><div class="small"></div>';
  out.querySelector('.small').textContent = head === 'multiclass' ? `softmax over ${S.state.classes}` :
    head === 'binary' ? 'sigmoid, BCE' : 'linear, MSE';
  box.appendChild(out);
}

function drawNetwork() {
  if (!S.layout) computeLayout();
  const L = S.layout, f = S.frame, c = S.cfg;
  const cv = $('net');
  const ctx = cv.getContext('2d');
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, L.width, L.height);
  const enabled = FEATURES.map((ft) => c.features.includes(ft.id));
  const inIdx = []; // column-0 node index of each input of the first Linear
  FEATURES.forEach((ft, i) => { if (enabled[i]) inIdx.push(c.features.indexOf(ft.id)); });
  const featOrder = c.features.map((id) => FEATURES.findIndex((ft) => ft.id === id));
  // Links, batched into one path per (sign, thickness) so that 20k links draw in a few milliseconds.
  if (f && f.w) {
    const paths = new Map();
    const zero = new Path2D();
    let total = 0;
    for (const w of f.w) total += w.length;
    const curved = total <= 2000;
    for (let k = 0; k < f.w.length; k++) {
      const src = L.nodes[k], dst = L.nodes[k + 1];
      const nIn = k === 0 ? c.features.length : src.length;
      const w = f.w[k];
      for (let j = 0; j < dst.length; j++) {
        for (let i = 0; i < nIn; i++) {
          const v = w[j * nIn + i];
          if (v === undefined) continue;
          const s = k === 0 ? src[featOrder[i]] : src[i];
          const d = dst[j];
          if (!s || !d) continue;
          let path = zero;
          if (v !== 0) {
            const level = Math.max(1, Math.min(curved ? 14 : 6, Math.round(Math.abs(v) * 4.4)));
            const key = (v > 0 ? 'p' : 'n') + level;
            path = paths.get(key);
            if (!path) { path = new Path2D(); paths.set(key, path); }
          }
          const x0 = s.x + s.size, y0 = s.y + s.size / 2, x1 = d.x, y1 = d.y + d.size / 2;
          path.moveTo(x0, y0);
          if (curved) {
            const mx = (x0 + x1) / 2;
            path.bezierCurveTo(mx, y0, mx, y1, x1, y1);
          } else {
            path.lineTo(x1, y1);
          }
        }
      }
    }
    ctx.setLineDash([2, 3]);
    ctx.strokeStyle = 'rgba(150,150,150,0.6)';
    ctx.lineWidth = 0.8;
    ctx.stroke(zero);
    ctx.setLineDash([]);
    for (const [key, path] of paths) {
      const level = Number(key.slice(1));
      const mag = level / 4.4;
      ctx.strokeStyle = css(key[0] === 'p' ? POS : NEG, Math.min(1, 0.25 + mag * 0.6));
      ctx.lineWidth = Math.max(0.4, level * 0.5);
      ctx.stroke(path);
    }
  }
  // Feature nodes.
  L.nodes[0].forEach((p, i) => {
    ctx.globalAlpha = enabled[i] ? 1 : 0.25;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(S.featureImages[i], p.x, p.y, p.size, p.size);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = enabled[i] ? '#333' : '#bbb';
    ctx.lineWidth = 1;
    ctx.strokeRect(p.x + 0.5, p.y + 0.5, p.size - 1, p.size - 1);
    ctx.fillStyle = enabled[i] ? '#222' : '#999';
    ctx.font = '11px sans-serif';
    ctx.textAlign = 'right';
    ctx.fillText(FEATURES[i].label, p.x - 4, p.y + p.size / 2 + 4);
  });
  // Hidden neurons: every map goes into one atlas image (one putImageData), then each is scaled into its node.
  if (f && f.neurons && f.neurons.length) {
    const g = f.ngrid;
    const rows = Math.max(...f.neurons.map((m) => m.length));
    const aw = g * f.neurons.length, ah = g * rows;
    if (!S.atlas || S.atlas.width !== aw || S.atlas.height !== ah) {
      S.atlas = document.createElement('canvas');
      S.atlas.width = aw;
      S.atlas.height = ah;
      S.atlasImg = S.atlas.getContext('2d').createImageData(aw, ah);
    }
    const data = S.atlasImg.data;
    f.neurons.forEach((maps, li) => {
      maps.forEach((m, j) => {
        const bytes = b64bytes(m);
        for (let y = 0; y < g; y++) {
          for (let x = 0; x < g; x++) {
            const c = LUT[bytes[y * g + x]];
            const o = 4 * ((j * g + y) * aw + li * g + x);
            data[o] = c[0]; data[o + 1] = c[1]; data[o + 2] = c[2]; data[o + 3] = 255;
          }
        }
      });
    });
    S.atlas.getContext('2d').putImageData(S.atlasImg, 0, 0);
    ctx.imageSmoothingEnabled = true;
    f.neurons.forEach((maps, li) => {
      maps.forEach((_, j) => {
        const p = L.nodes[li + 1] && L.nodes[li + 1][j];
        if (p) ctx.drawImage(S.atlas, li * g, j * g, g, g, p.x, p.y, p.size, p.size);
      });
    });
  }
  for (let li = 1; li < L.nodes.length; li++) {
    for (const p of L.nodes[li]) {
      ctx.strokeStyle = '#444';
      ctx.lineWidth = 1;
      ctx.strokeRect(p.x + 0.5, p.y + 0.5, p.size - 1, p.size - 1);
    }
  }
  // Output nodes.
  if (f && f.out) {
    const bytes = b64bytes(f.out);
    const outs = L.nodes[L.nodes.length - 1];
    outs.forEach((p, k) => {
      const ch = f.channels;
      const cvs = mapCanvas(f.grid, (cell) => ch === 1 ? scaleColor(bytes[cell] / 127.5 - 1) :
        mix(MID, CLASS_COLORS[k], bytes[cell * ch + k] / 255));
      ctx.drawImage(cvs, p.x, p.y, p.size, p.size);
    });
  }
  // Walk overlay: forward value above, backward gradient below each neuron.
  if (S.walk && $('show-walk').checked && L.node >= 14) {
    ctx.font = '9px sans-serif';
    ctx.textAlign = 'center';
    const W = S.walk;
    const colVals = [null, ...W.layers.map((l) => [l.a, l.dz]), [W.prediction, W.out_dz]];
    // Inputs.
    L.nodes[0].forEach((p, i) => {
      const fi = c.features.indexOf(FEATURES[i].id);
      if (fi < 0) return;
      label(ctx, p, fmt(W.input[fi], 2), null);
    });
    for (let li = 1; li < colVals.length; li++) {
      const vals = colVals[li];
      if (!vals) continue;
      L.nodes[li].forEach((p, j) => {
        if (li === colVals.length - 1 && S.state.head === 'binary') label(ctx, p, 'p ' + fmt(vals[0][0], 2), '∂ ' + fmt(vals[1][0], 3));
        else label(ctx, p, fmt(vals[0][j], 2), '∂ ' + fmt(vals[1][j], 3));
      });
    }
  }
}

function label(ctx, p, above, below) {
  // Forward value at the node's top right, backward gradient at its bottom right.
  ctx.textAlign = 'left';
  const drawText = (t, y, color) => {
    const w = ctx.measureText(t).width + 3;
    ctx.fillStyle = 'rgba(255,255,255,0.85)';
    ctx.fillRect(p.x + p.size + 1, y - 8, w, 10);
    ctx.fillStyle = color;
    ctx.fillText(t, p.x + p.size + 2, y);
  };
  drawText(above, p.y + 8, '#111');
  if (below !== null) drawText(below, p.y + p.size, '#8a2be2');
}

/** Every link of the network view: its weight, the layer and units it joins, and where it is drawn. */
function links() {
  const L = S.layout, f = S.frame, c = S.cfg, out = [];
  if (!L || !f || !f.w) return out;
  const featOrder = c.features.map((id) => FEATURES.findIndex((ft) => ft.id === id));
  const total = f.w.reduce((n, w) => n + w.length, 0);
  for (let k = 0; k < f.w.length; k++) {
    const src = L.nodes[k], dst = L.nodes[k + 1];
    const nIn = k === 0 ? c.features.length : src.length;
    for (let j = 0; j < dst.length; j++) {
      for (let i = 0; i < nIn; i++) {
        const v = f.w[k][j * nIn + i];
        const s = k === 0 ? src[featOrder[i]] : src[i], d = dst[j];
        if (v === undefined || !s || !d) continue;
        const from = k === 0 ? FEATURES[featOrder[i]].label : `layer ${k} unit ${i + 1}`;
        const to = k === f.w.length - 1 ? `output ${j + 1}` : `layer ${k + 1} unit ${j + 1}`;
        out.push({ v, from, to, curved: total <= 2000,
          x0: s.x + s.size, y0: s.y + s.size / 2, x1: d.x, y1: d.y + d.size / 2 });
      }
    }
  }
  return out;
}

/** Distance from (x, y) to a link as drawn (a cubic curve, sampled, or a straight line). */
function linkDistance(l, x, y) {
  const pts = [];
  const mx = (l.x0 + l.x1) / 2;
  for (let t = 0; t <= 1.0001; t += l.curved ? 1 / 24 : 1) {
    const u = 1 - t;
    pts.push(l.curved
      ? [u * u * u * l.x0 + 3 * u * u * t * mx + 3 * u * t * t * mx + t * t * t * l.x1,
        u * u * u * l.y0 + 3 * u * u * t * l.y0 + 3 * u * t * t * l.y1 + t * t * t * l.y1]
      : [l.x0 + (l.x1 - l.x0) * t, l.y0 + (l.y1 - l.y0) * t]);
  }
  let best = Infinity;
  for (let n = 1; n < pts.length; n++) {
    const [ax, ay] = pts[n - 1], [bx, by] = pts[n];
    const dx = bx - ax, dy = by - ay, len = dx * dx + dy * dy || 1;
    const t = Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len));
    best = Math.min(best, Math.hypot(x - ax - t * dx, y - ay - t * dy));
  }
  return best;
}

/** What the pointer is over in the network view: a unit's bias, or the nearest link's weight. */
function hoverText(x, y) {
  const L = S.layout, f = S.frame;
  if (!L || !f || !f.b) return null;
  for (let li = 1; li < L.nodes.length; li++) {
    const j = L.nodes[li].findIndex((p) => x >= p.x && x <= p.x + p.size && y >= p.y && y <= p.y + p.size);
    if (j >= 0 && f.b[li - 1]) return `bias ${fmt(f.b[li - 1][j], 4)}`;
  }
  let best = 4, text = null;
  for (const l of links()) {
    const d = linkDistance(l, x, y);
    if (d < best) { best = d; text = `weight ${fmt(l.v, 4)} (${l.from} → ${l.to})`; }
  }
  return text;
}

function onNetHover(ev) {
  const r = $('net').getBoundingClientRect();
  const text = hoverText(ev.clientX - r.left, ev.clientY - r.top);
  const tip = $('tip');
  tip.hidden = !text;
  if (!text) return;
  tip.textContent = text;
  tip.style.left = (ev.clientX + 12) + 'px';
  tip.style.top = (ev.clientY + 12) + 'px';
}

function onNetClick(ev) {
  if (!S.layout) return;
  const r = $('net').getBoundingClientRect();
  const x = ev.clientX - r.left, y = ev.clientY - r.top;
  S.layout.nodes[0].forEach((p, i) => {
    if (x >= p.x && x <= p.x + p.size && y >= p.y && y <= p.y + p.size) {
      const id = FEATURES[i].id;
      applyConfig((c) => {
        if (c.features.includes(id)) {
          if (c.features.length > 1) c.features = c.features.filter((q) => q !== id);
        } else {
          c.features = FEATURES.map((ft) => ft.id).filter((q) => q === id || c.features.includes(q));
        }
      });
    }
  });
}

// ---------------------------------------------------------------- output map and curves

function drawHeatmap() {
  const cv = $('heatmap');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height;
  const f = S.frame;
  ctx.fillStyle = '#f4f4f4';
  ctx.fillRect(0, 0, W, H);
  if (f && f.out) {
    const bytes = b64bytes(f.out);
    const disc = $('discretize').checked;
    const ch = f.channels;
    S.outCanvas = mapCanvas(f.grid, (cell) => {
      if (ch === 1) {
        let v = bytes[cell] / 127.5 - 1;
        if (disc && S.state.head !== 'regression') v = v > 0 ? 0.75 : -0.75;
        return scaleColor(v);
      }
      let best = 0;
      for (let k = 1; k < ch; k++) if (bytes[cell * ch + k] > bytes[cell * ch + best]) best = k;
      if (disc) return mix(MID, CLASS_COLORS[best], 0.7);
      let col = [0, 0, 0];
      for (let k = 0; k < ch; k++) {
        const p = bytes[cell * ch + k] / 255;
        col = [col[0] + p * CLASS_COLORS[k][0], col[1] + p * CLASS_COLORS[k][1], col[2] + p * CLASS_COLORS[k][2]];
      }
      const conf = (bytes[cell * ch + best] / 255 - 1 / ch) / (1 - 1 / ch);
      return mix(MID, col, 0.25 + 0.6 * Math.max(0, conf));
    }, S.outCanvas);
    ctx.imageSmoothingEnabled = !disc;
    ctx.drawImage(S.outCanvas, 0, 0, W, H);
  }
  // Axes.
  ctx.strokeStyle = 'rgba(0,0,0,0.15)';
  ctx.beginPath();
  ctx.moveTo(W / 2, 0); ctx.lineTo(W / 2, H); ctx.moveTo(0, H / 2); ctx.lineTo(W, H / 2);
  ctx.stroke();
  ctx.fillStyle = '#666';
  ctx.font = '10px sans-serif';
  ctx.fillText('-6', 2, H / 2 - 3);
  ctx.fillText('6', W - 10, H / 2 - 3);
  ctx.fillText('6', W / 2 + 3, 10);
  ctx.fillText('-6', W / 2 + 3, H - 3);
  if (!S.state) return;
  const px = (x) => (x + DOMAIN) / (2 * DOMAIN) * W, py = (y) => (DOMAIN - y) / (2 * DOMAIN) * H;
  const drawPts = (pts, stroke) => {
    for (const [x1, x2, l] of pts) {
      ctx.beginPath();
      ctx.arc(px(x1), py(x2), 3.5, 0, 2 * Math.PI);
      ctx.fillStyle = css(pointColor(l));
      ctx.fill();
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
  };
  drawPts(S.state.train, '#fff');
  if ($('show-test').checked) drawPts(S.state.test, '#000');
  if (S.walkPoint) {
    ctx.beginPath();
    ctx.arc(px(S.walkPoint[0]), py(S.walkPoint[1]), 8, 0, 2 * Math.PI);
    ctx.strokeStyle = '#8a2be2';
    ctx.lineWidth = 2.5;
    ctx.stroke();
  }
}

function drawCurve() {
  const cv = $('curve');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = '#fafafa';
  ctx.fillRect(0, 0, W, H);
  const h = S.history;
  if (h.length < 1) return;
  let maxL = 1e-9;
  for (const r of h) maxL = Math.max(maxL, isFinite(r[1]) ? r[1] : 0, isFinite(r[2]) ? r[2] : 0);
  const e0 = h[0][0], e1 = Math.max(h[h.length - 1][0], e0 + 1);
  const line = (k, color, width) => {
    ctx.beginPath();
    h.forEach((r, i) => {
      const x = (r[0] - e0) / (e1 - e0) * (W - 4) + 2;
      const y = H - 3 - (Math.min(r[k], maxL) / maxL) * (H - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.stroke();
  };
  line(1, '#999', 1.5);
  line(2, '#000', 1.5);
  ctx.fillStyle = '#555';
  ctx.font = '10px sans-serif';
  ctx.fillText(`test ━  train ━ (grey)   max ${fmt(maxL)}`, 4, 11);
}

function drawLosses() {
  const f = S.frame;
  $('epoch').textContent = String(f ? f.epoch : 0).padStart(6, '0').replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  if (!f) return;
  $('test-loss').textContent = fmt(f.test_loss);
  $('train-loss').textContent = fmt(f.train_loss);
  $('acc').textContent = f.test_acc === null ? '' :
    `Accuracy: test ${(100 * f.test_acc).toFixed(1)}%, train ${(100 * f.train_acc).toFixed(1)}%`;
  if (f.diverged) $('status').textContent = 'Training diverged (the loss is not finite): reset, or lower the learning rate.';
}

// ---------------------------------------------------------------- gradient flow and weights

function drawFlow() {
  const f = S.frame;
  const cv = $('flow');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height;
  ctx.clearRect(0, 0, W, H);
  if (!f || !f.grad_norm) return;
  const n = f.grad_norm.length;
  const lo = -8, hi = 1;
  const base = H - 30, top = 14;
  const bw = Math.min(36, (W - 50) / n - 6);
  ctx.font = '10px sans-serif';
  ctx.fillStyle = '#666';
  ctx.textAlign = 'right';
  for (let e = lo; e <= hi; e += 3) {
    const y = base - (e - lo) / (hi - lo) * (base - top);
    ctx.fillText('1e' + e, 34, y + 3);
    ctx.strokeStyle = '#eee';
    ctx.beginPath(); ctx.moveTo(38, y); ctx.lineTo(W, y); ctx.stroke();
  }
  ctx.textAlign = 'center';
  const lines = [];
  for (let k = 0; k < n; k++) {
    const g = f.grad_norm[k];
    const lg = g > 0 ? Math.log10(g) : lo;
    const t = Math.max(0, Math.min(1, (lg - lo) / (hi - lo)));
    const x = 44 + k * (bw + 6);
    const color = lg < -5 ? '#d62728' : lg > 0.5 ? '#9467bd' : '#2a9d8f';
    ctx.fillStyle = color;
    ctx.fillRect(x, base - t * (base - top), bw * 0.62, t * (base - top));
    const hidden = k < f.saturation.length;
    if (hidden) {
      const s = f.saturation[k];
      ctx.fillStyle = '#f59322';
      ctx.fillRect(x + bw * 0.66, base - s * (base - top), bw * 0.3, s * (base - top));
      if (f.dead[k] > 0) {
        ctx.fillStyle = '#d62728';
        ctx.fillText(`${f.dead[k]}✝`, x + bw / 2, top - 3);
      }
    }
    ctx.fillStyle = '#333';
    ctx.fillText(hidden ? `L${k + 1}` : 'out', x + bw / 2, base + 12);
    const act = hidden ? (S.cfg.layers[k] ? labelOf('activations', S.cfg.layers[k].activation) : '') : '';
    if (bw > 24) ctx.fillText(act.slice(0, 6), x + bw / 2, base + 24);
    lines.push(`${hidden ? 'L' + (k + 1) + ' ' + act : 'output'}: ‖∇W‖ ${g.toExponential(1)}` +
      (hidden ? `, flat ${(100 * f.saturation[k]).toFixed(0)}%, dead ${f.dead[k]}` : ''));
  }
  ctx.textAlign = 'left';
  ctx.fillStyle = '#2a9d8f'; ctx.fillRect(W - 150, 2, 8, 8);
  ctx.fillStyle = '#333'; ctx.fillText('‖∂L/∂W‖', W - 138, 10);
  ctx.fillStyle = '#f59322'; ctx.fillRect(W - 80, 2, 8, 8);
  ctx.fillStyle = '#333'; ctx.fillText('flat share', W - 68, 10);
  if (n > 1 && f.grad_norm[n - 1] > 0) {
    const ratio = f.grad_norm[0] / f.grad_norm[n - 1];
    lines.unshift(`first/last layer gradient ratio: ${ratio.toExponential(1)}` +
      (ratio < 1e-3 ? ' — vanishing' : ratio > 1e3 ? ' — exploding' : ''));
  }
  $('flow-text').textContent = lines.join('\n');
  const panel = $('flow-panel');
  panel.dataset.frames = String(Number(panel.dataset.frames) + 1);
}

function drawWeights() {
  const f = S.frame;
  if (!f || !f.w) return;
  $('sparsity').textContent = `${f.zero_weights} of ${f.total_weights} weights are exactly 0 ` +
    `(sparsity ${(100 * f.sparsity).toFixed(1)}%)`;
  const cv = $('whist');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height;
  ctx.clearRect(0, 0, W, H);
  const all = f.w.flat();
  let m = 1e-9;
  for (const v of all) m = Math.max(m, Math.abs(v));
  const bins = 41, counts = new Array(bins).fill(0);
  for (const v of all) counts[Math.min(bins - 1, Math.floor((v / m + 1) / 2 * bins))]++;
  const cmax = Math.max(...counts);
  const bw = W / bins;
  counts.forEach((c, i) => {
    const v = ((i + 0.5) / bins) * 2 - 1;
    ctx.fillStyle = i === Math.floor(bins / 2) && f.zero_weights > 0 ? '#555' : css(scaleColor(v * 1.5));
    const h = c / cmax * (H - 16);
    ctx.fillRect(i * bw + 0.5, H - 12 - h, bw - 1, h);
  });
  ctx.fillStyle = '#555';
  ctx.font = '10px sans-serif';
  ctx.textAlign = 'left';
  ctx.fillText(fmt(-m, 2), 0, H - 1);
  ctx.textAlign = 'right';
  ctx.fillText(fmt(m, 2), W, H - 1);
  ctx.textAlign = 'center';
  ctx.fillText('0', W / 2, H - 1);
}

// ---------------------------------------------------------------- step through one example

function onHeatmapClick(ev) {
  if (!S.state) return;
  const cv = $('heatmap');
  const r = cv.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * 2 * DOMAIN - DOMAIN;
  const y = DOMAIN - (ev.clientY - r.top) / r.height * 2 * DOMAIN;
  let best = null, bd = Infinity;
  const pts = $('show-test').checked ? S.state.train.concat(S.state.test) : S.state.train;
  for (const p of pts) {
    const d = Math.hypot(p[0] - x, p[1] - y);
    if (d < bd) { bd = d; best = p; }
  }
  if (!best) return;
  S.walkPoint = best;
  requestWalk();
}

function requestWalk() {
  if (!S.walkPoint) return;
  S.walkAt = performance.now();
  const [x1, x2, label] = S.walkPoint;
  enqueue(async () => {
    const w = await sessionCall('POST', '/inspect', { x1, x2, label });
    S.walk = w;
    renderWalk();
    S.dirty = true;
  });
}

function renderWalk() {
  const w = S.walk;
  const box = $('walk');
  box.innerHTML = '';
  if (!w) return;
  const head = document.createElement('p');
  const pred = S.state.head === 'binary' ? `p(class 1) = ${fmt(w.prediction[0])}` :
    S.state.head === 'multiclass' ? `p = [${w.prediction.map((p) => fmt(p, 2)).join(', ')}]` : `prediction ${fmt(w.prediction[0])}`;
  head.innerHTML = '';
  head.textContent = `Point (${fmt(w.x1, 2)}, ${fmt(w.x2, 2)}), label ${w.label}: ${pred}, loss ${fmt(w.loss, 4)}.`;
  box.appendChild(head);
  const expl = document.createElement('p');
  expl.className = 'sub';
  expl.textContent = 'Forward: z = W·a_prev + b, a = f(z). Backward (chain rule): ∂L/∂a from the layer above, ' +
    '∂L/∂z = ∂L/∂a · f′(z), ∂L/∂W = ∂L/∂z · a_prevᵀ. The output\'s ∂L/∂z is ' +
    (S.state.head === 'regression' ? '2(ŷ − y).' : 'p − y.');
  box.appendChild(expl);
  const table = document.createElement('table');
  table.className = 'walk';
  const tr = (cells, th) => {
    const row = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement(th ? 'th' : 'td');
      td.textContent = c;
      row.appendChild(td);
    }
    table.appendChild(row);
  };
  tr(['layer', 'unit', 'z', 'a = f(z)', '∂L/∂a', '∂L/∂z'], true);
  w.features.forEach((name, i) => tr(['input', name, '', fmt(w.input[i]), '', '']));
  w.layers.forEach((l, li) => {
    const n = Math.min(l.z.length, 8);
    for (let j = 0; j < n; j++) tr([j === 0 ? `L${li + 1} ${labelOf('activations', S.cfg.layers[li].activation)}` : '', String(j + 1),
      fmt(l.z[j]), fmt(l.a[j]), fmt(l.da[j]), fmt(l.dz[j])]);
    if (l.z.length > n) tr(['', `… ${l.z.length - n} more`, '', '', '', '']);
  });
  w.out_z.forEach((z, j) => tr([j === 0 ? 'output' : '', String(j + 1), fmt(z), fmt(w.prediction[j] ?? NaN), '', fmt(w.out_dz[j])]));
  box.appendChild(table);
}

// ---------------------------------------------------------------- main loop

function render() {
  if (S.dirty && S.cfg) {
    S.dirty = false;
    const now = performance.now();
    // A big network is redrawn less often, so the page stays responsive.
    if (!S.netAt || now - S.netAt >= 2 * (S.netCost || 0) || !S.layout) {
      drawNetwork();
      S.netAt = now;
      S.netCost = performance.now() - now;
    }
    drawHeatmap();
    drawCurve();
    drawLosses();
    drawFlow();
    drawWeights();
    renderPlay();
    if (S.walk && S.playing && performance.now() - S.walkAt > 500) requestWalk();
  }
  requestAnimationFrame(render);
}

async function main() {
  try {
    LIMITS = await api('GET', '/api/limits');
  } catch (e) {
    showError(`${e.message} — cannot reach the server.`);
    return;
  }
  FEATURES = LIMITS.features;
  // kind: c (classes), r (regression) or u (an upload, whose labels decide).
  DATASETS = LIMITS.datasets.map((d) => ({ ...d, kind: d.problem === 'regression' ? 'r' : d.problem ? 'c' : 'u' }));
  setupControls();
  const cfg = decodeHash(location.hash);
  try {
    if (cfg.dataset === 'csv') await restoreUpload(cfg);
    else await createSession(cfg);
  } catch (e) {
    showError(`${e.message} — starting from the default setup.`);
    try { await createSession(defaults()); } catch (e2) { showError(e2.message); }
  }
  requestAnimationFrame(render);
}

/** A reload of a page that trained on an upload: send the stored CSV again, then the rest of the setup. */
async function restoreUpload(cfg) {
  await createSession({ ...cfg, dataset: defaults().dataset });
  await uploadCsv(storedCsv());
  const problem = S.cfg.problem;
  if (encodeHash({ ...cfg, problem }) !== encodeHash(S.cfg)) {
    const r = await sessionCall('POST', '/config', { ...cfg, problem });
    adoptState(r.state);
  }
}

main();
