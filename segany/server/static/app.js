// The annotation page: prompts -> masks in the page, brush and eraser, undo/redo, saving.
import { Decoder } from './decoder.js';
import { maskArea, maskToRle, rleToMask } from './rle.js';

const $ = (id) => document.getElementById(id);
const view = $('view');
const HISTORY = 100;  // undo steps kept
const CURRENT = [30, 144, 255, 140];  // the mask being made: blue, half transparent
const COLORS = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]];

const app = {
  info: null, decoder: null, images: [], index: 0,
  image: null, embedding: null, W: 0, H: 0,
  saved: [], savedLayer: null, savedHidden: null, selected: null,
  tool: 'point', brush: 12,
  edit: emptyEdit(), undo: [], redo: [],
  candidates: null, thumbnailsOf: null, mask: null, maskLayer: null,
  timer: null, times: [], saveKey: null,
  zoom: { scale: 1, x: 0, y: 0 },
  decoding: null, decodeAgain: false, updateLatencies: [],
};
window.segany = app;  // for people debugging in the console, and for the browser tests

/** What the current mask is made of; one undo step is one of these. */
function emptyEdit() {
  return { points: [], box: null, chosen: null, strokes: [], base: null, editing: null };
}

// ---------------------------------------------------------------- server

const RETRIES = 3;  // a request that got no answer (network error) is sent again, after 0.5 s, 1 s, 2 s

async function api(path, options = {}) {
  let response;
  for (let attempt = 0; ; attempt += 1) {
    try {
      response = await fetch(path, { credentials: 'same-origin', ...options });
      break;
    } catch (err) {  // no answer: safe to send again (new masks carry an Idempotency-Key)
      if (attempt === RETRIES) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
  }
  if (response.status === 401) {
    await signIn();
    return api(path, options);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === 'string' ? detail : JSON.stringify(detail));
  }
  return response;
}

const json = (body, headers = {}) => ({
  method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body),
});

/** A key for one save of a new mask: the server answers a repeat of it with the first save. */
function newSaveKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));  // crypto.randomUUID needs https
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function signIn() {
  return new Promise((resolve) => {
    const dialog = $('login');
    $('login-form').onsubmit = async (event) => {
      event.preventDefault();
      const response = await fetch('/api/login', json({ token: $('token').value }));
      if (response.ok) { dialog.close(); resolve(); } else { $('login-error').textContent = 'Unknown or revoked token.'; }
    };
    if (!dialog.open) dialog.showModal();
  });
}

function status(text, state) {
  $('status').textContent = text;
  if (state) document.body.dataset.status = state;
}

// ---------------------------------------------------------------- images

/** An image name as a URL path (its folders kept as path segments). */
const urlPath = (name) => encodeURIComponent(name).replace(/%2F/g, '/');

async function openImage(index) {
  if (!app.images.length) { status('No images in this folder.', 'empty'); return; }
  app.index = (index + app.images.length) % app.images.length;
  const ticket = app.opening = (app.opening || 0) + 1;  // a later openImage wins over this one
  const name = app.images[app.index].name;
  const url = urlPath(name);
  app.saveKey = null;
  status(`Loading ${name}: computing its embedding on the server…`, 'loading');
  $('image-name').textContent = name;
  $('image-count').textContent = `${app.index + 1} / ${app.images.length}`;
  let image, response, masks;
  try {
    [image, response, masks] = await Promise.all([
      loadImage(`/api/file/${url}`), api(`/api/embedding/${url}`), api(`/api/masks/${url}`).then((r) => r.json()),
    ]);
  } catch (err) {
    if (ticket === app.opening) status(`${name}: ${err.message}`, 'error');
    return;
  }
  if (ticket !== app.opening) return;
  app.embedding = app.decoder.embedding(await response.arrayBuffer(), response.headers);
  app.image = image;
  [app.H, app.W] = app.embedding.originalSize;
  app.maskLayer = layer(app.W, app.H);
  setSaved(masks.masks);
  resetEdit();
  fit();
  status(`${name}: ${app.W}×${app.H}, embedding in ${app.embedding.encoderSeconds.toFixed(2)} s on the server`,
    'ready');
  prefetch(app.index + 1);
}

/** Next (1) or previous (-1) image; a mask not yet accepted holds the first request back. */
function navigate(step) {
  const unsaved = app.mask && app.mask.some((v) => v) && !app.leaveUnsaved;
  if (unsaved) {
    app.leaveUnsaved = true;  // asked once: the same request again leaves the mask behind
    status('The current mask is not saved: Enter saves it, Esc drops it; go on again to leave it.', 'unsaved');
    return;
  }
  openImage(app.index + step);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${src}`));
    image.src = src;
  });
}

/** Ask for the next image's embedding now, so it is ready when the annotator gets there. */
function prefetch(index) {
  if (app.images.length < 2) return;
  const name = app.images[index % app.images.length].name;
  fetch(`/api/embedding/${urlPath(name)}`, { credentials: 'same-origin' })
    .catch(() => {});
}

function layer(width, height) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

/**
 * Draw masks ([[Uint8Array, [r, g, b, a]]], later ones on top) as the canvas's content within
 * `rect` [x0, y0, x1, y1) (default: all of it); returns the pixels covered there.
 */
function paint(canvas, masks, rect = [0, 0, canvas.width, canvas.height]) {
  const ctx = canvas.getContext('2d');
  if (!canvas.pixels) canvas.pixels = ctx.createImageData(canvas.width, canvas.height);  // reused: 4 bytes a pixel
  const out = new Uint32Array(canvas.pixels.data.buffer);
  const [x0, y0, x1, y1] = rect;
  const colors = masks.map(([, [r, g, b, a]]) => (a << 24) | (b << 16) | (g << 8) | r);  // little-endian RGBA
  let covered = 0;
  for (let y = y0; y < y1; y++) {
    for (let i = y * canvas.width + x0; i < y * canvas.width + x1; i++) {
      let color = 0;
      for (let k = 0; k < masks.length; k++) if (masks[k][0][i]) color = colors[k];
      out[i] = color;
      if (color) covered += 1;
    }
  }
  ctx.putImageData(canvas.pixels, 0, 0, x0, y0, x1 - x0, y1 - y0);
  return covered;
}

// ---------------------------------------------------------------- saved masks

function setSaved(masks) {
  app.saved = masks.map((m) => ({ ...m, mask: rleToMask(m.segmentation) }));
  app.selected = null;
  drawSaved();
}

function drawSaved() {
  app.savedHidden = app.edit.editing?.id ?? null;  // the mask being edited is drawn as the current one
  app.savedLayer = layer(app.W, app.H);
  paint(app.savedLayer, app.saved.filter((m) => m.id !== app.edit.editing?.id)
    .map((m) => [m.mask, [...COLORS[m.id % COLORS.length], m.id === app.selected ? 200 : 110]]));
  const list = $('saved');
  list.replaceChildren(...app.saved.map((m) => {
    const item = document.createElement('li');
    item.dataset.id = m.id;
    item.className = m.id === app.selected ? 'selected' : '';
    const [r, g, b] = COLORS[m.id % COLORS.length];
    const seconds = m.seconds == null ? '' : ` · ${m.seconds.toFixed(1)} s`;
    item.innerHTML = `<span class="swatch" style="background: rgb(${r},${g},${b})"></span>` +
      `<span class="what">${m.area} px · ${m.source}${seconds}</span>` +
      '<button data-act="edit" title="edit with the brush and eraser">edit</button> ' +
      '<button data-act="delete" title="delete (Delete when selected)">✕</button>';
    item.onclick = (event) => {
      const act = event.target.dataset.act;
      if (act === 'delete') deleteMask(m.id);
      else if (act === 'edit') editSaved(m);
      else { app.selected = app.selected === m.id ? null : m.id; drawSaved(); }
    };
    return item;
  }));
  $('saved-count').textContent = `(${app.saved.length})`;
  draw();
}

async function deleteMask(id) {
  try {
    await api(`/api/mask/${id}`, { method: 'DELETE' });
  } catch (err) {
    status(`Not deleted: ${err.message}`, 'error');
    return;
  }
  app.saved = app.saved.filter((m) => m.id !== id);
  if (app.edit.editing?.id === id) resetEdit(); else drawSaved();  // resetEdit redraws the list itself
}

function editSaved(m) {  // the refresh that follows redraws the saved masks without this one
  change({ ...emptyEdit(), base: m.mask, editing: { id: m.id, version: m.version } });
}

// ---------------------------------------------------------------- the current mask

function resetEdit() {
  app.edit = emptyEdit();
  app.undo = [];
  app.redo = [];
  app.candidates = null;
  app.timer = null;
  refresh();
}

/** Make `next` the current edit (one undo step); decode if its prompts changed. */
function change(next) {
  app.leaveUnsaved = false;
  if (app.timer === null) app.timer = performance.now();
  document.body.dataset.status = 'editing';
  app.undo.push(app.edit);
  if (app.undo.length > HISTORY) app.undo.shift();
  app.redo = [];
  apply(next);
}

function apply(next) {
  const prompts = (e) => JSON.stringify([e.points, e.box]);
  const decode = prompts(next) !== prompts(app.edit) || (!app.candidates && (next.points.length || next.box));
  app.edit = next;
  if (decode) requestDecode(); else refresh();
}

function undo() {
  if (!app.undo.length) return;
  app.redo.push(app.edit);
  apply(app.undo.pop());
}

function redo() {
  if (!app.redo.length) return;
  app.undo.push(app.edit);
  apply(app.redo.pop());
}

/** Run the decoder for the current prompts; prompts that change meanwhile are decoded after. */
function requestDecode() {
  if (app.decoding) { app.decodeAgain = true; return; }
  const edit = app.edit;
  if (!edit.points.length && !edit.box) { app.candidates = null; refresh(); return; }
  const began = performance.now();
  app.decoding = app.decoder.run(app.embedding, edit.points, edit.box).then((result) => {
    app.candidates = result;
    app.decoding = null;
    if (app.decodeAgain) { app.decodeAgain = false; requestDecode(); return; }
    refresh();
    app.updateLatencies.push(performance.now() - began);  // prompt change to mask on screen, ms
  }, (err) => { app.decoding = null; status(`decoder: ${err.message}`, 'error'); });
}

/** Candidate shown: the annotator's choice, else the highest predicted IoU. */
function chosenIndex() {
  if (!app.candidates) return null;
  if (app.edit.chosen !== null) return app.edit.chosen;
  const s = app.candidates.scores;
  return s.indexOf(Math.max(...s));
}

/** The current mask: candidate (or the saved mask being edited), then the brush strokes. */
function refresh() {
  const k = chosenIndex();
  let mask = k !== null ? app.candidates.mask(k) : app.edit.base;
  if (app.edit.strokes.length) {  // strokes are drawn onto a copy: the candidate stays as it came
    mask = mask ? mask.slice() : new Uint8Array(app.W * app.H);
    for (const stroke of app.edit.strokes) rasterize(mask, stroke);
  }
  app.mask = mask;
  const pixels = app.maskLayer ? paint(app.maskLayer, mask ? [[mask, CURRENT]] : []) : 0;
  drawCandidates();
  if ((app.edit.editing?.id ?? null) !== app.savedHidden) drawSaved(); else draw();
  updateTiming();
  document.body.dataset.maskPixels = pixels;
  document.body.dataset.decodes = app.decoder ? app.decoder.latencies.length : 0;
}

/** Paint a stroke into `mask`; returns the rectangle [x0, y0, x1, y1) it may have changed. */
function rasterize(mask, stroke) {
  const value = stroke.mode === 'brush' ? 1 : 0;
  const r = stroke.radius;
  const rect = [app.W, app.H, 0, 0];
  const stamp = (cx, cy) => {
    const [left, top] = [Math.max(0, Math.floor(cx - r)), Math.max(0, Math.floor(cy - r))];
    const [right, bottom] = [Math.min(app.W - 1, Math.ceil(cx + r)), Math.min(app.H - 1, Math.ceil(cy + r))];
    for (let y = top; y <= bottom; y++) {
      for (let x = left; x <= right; x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) mask[y * app.W + x] = value;
      }
    }
    rect[0] = Math.min(rect[0], left);
    rect[1] = Math.min(rect[1], top);
    rect[2] = Math.max(rect[2], right + 1);
    rect[3] = Math.max(rect[3], bottom + 1);
  };
  stroke.path.forEach(([x, y], i) => {
    if (i === 0) { stamp(x, y); return; }
    const [px, py] = stroke.path[i - 1];
    const steps = Math.max(1, Math.ceil(Math.hypot(x - px, y - py) / Math.max(1, r / 2)));
    for (let s = 1; s <= steps; s++) stamp(px + (x - px) * s / steps, py + (y - py) * s / steps);
  });
  return rect[2] > rect[0] && rect[3] > rect[1] ? rect : [0, 0, 0, 0];
}

function drawCandidates() {
  const box = $('candidates');
  if (!app.candidates) { box.replaceChildren(); app.thumbnailsOf = null; return; }
  const k = chosenIndex();
  if (app.thumbnailsOf === app.candidates) {
    [...box.children].forEach((figure, i) => { figure.className = i === k ? 'chosen' : ''; });
    return;
  }
  app.thumbnailsOf = app.candidates;
  box.replaceChildren(...app.candidates.scores.map((score, i) => {
    const figure = document.createElement('figure');
    figure.className = i === k ? 'chosen' : '';
    const { mask, width, height } = app.candidates.thumbnail(i);
    const thumb = layer(width, height);
    paint(thumb, [[mask, [255, 255, 255, 255]]]);
    const caption = document.createElement('figcaption');
    caption.textContent = `${i + 1}: IoU ${score.toFixed(2)}`;
    figure.append(thumb, caption);
    figure.onclick = () => choose(i);
    return figure;
  }));
}

function choose(i) {
  if (app.candidates && i < app.candidates.count) change({ ...app.edit, chosen: i });
}

async function accept() {
  if (!app.mask || !maskArea(app.mask)) { status('Nothing to save: the mask is empty.'); return; }
  const k = chosenIndex();
  const seconds = app.timer === null ? null : (performance.now() - app.timer) / 1000;
  const body = {
    rle: maskToRle(app.mask, app.H, app.W),
    predicted_iou: k === null ? null : app.candidates.scores[k],
    point_coords: app.edit.points.filter((p) => p.label === 1).map((p) => [p.x, p.y]),
    seconds,
  };
  const url = urlPath(app.images[app.index].name);
  const editing = app.edit.editing;
  if (!editing) app.saveKey = app.saveKey || newSaveKey();  // kept until this save is acknowledged
  try {
    const response = editing
      ? await api(`/api/mask/${editing.id}`, { ...json({ ...body, version: editing.version }), method: 'PUT' })
      : await api(`/api/masks/${url}`, json(body, { 'Idempotency-Key': app.saveKey }));
    const saved = await response.json();
    if (!editing) app.saveKey = null;
    saved.mask = rleToMask(saved.segmentation);
    if (editing) app.saved = app.saved.map((m) => (m.id === saved.id ? saved : m));
    else app.saved.push(saved);
    if (seconds !== null) app.times.push(seconds);
    resetEdit();
    drawSaved();
    status(`Saved mask ${saved.id} (${saved.area} px${seconds === null ? '' : `, ${seconds.toFixed(1)} s`}).`, 'saved');
  } catch (err) {
    status(`Not saved: ${err.message}`, 'error');
  }
}

async function prefill() {
  const name = app.images[app.index].name;
  status(`Prefilling ${name} with the model's confident masks…`, 'loading');
  try {
    const result = await (await api(`/api/prefill/${urlPath(name)}`, { method: 'POST' })).json();
    if (app.images[app.index].name !== name) return;  // the annotator moved on meanwhile
    setSaved(result.masks);
    status(`Prefill added ${result.added} mask(s).`, 'ready');
  } catch (err) {
    status(`Prefill failed: ${err.message}`, 'error');
  }
}

function updateTiming() {
  const current = app.timer === null ? '–' : `${((performance.now() - app.timer) / 1000).toFixed(1)} s`;
  const mean = app.times.length ? `${(app.times.reduce((a, b) => a + b, 0) / app.times.length).toFixed(1)} s ` +
    `(${app.times.length} masks)` : '–';
  $('timing').textContent = `current: ${current} · mean: ${mean}`;
}

// ---------------------------------------------------------------- drawing, zoom and pan

function fit() {
  const rect = view.getBoundingClientRect();
  const scale = Math.min(rect.width / app.W, rect.height / app.H);
  app.zoom = { scale, x: (rect.width - app.W * scale) / 2, y: (rect.height - app.H * scale) / 2 };
  draw();
}

function zoomAt(factor, sx, sy) {
  const z = app.zoom;
  const scale = Math.min(40, Math.max(0.05, z.scale * factor));
  app.zoom = { scale, x: sx - (sx - z.x) * scale / z.scale, y: sy - (sy - z.y) * scale / z.scale };
  draw();
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const rect = view.getBoundingClientRect();
  if (view.width !== Math.round(rect.width * dpr)) view.width = Math.round(rect.width * dpr);
  if (view.height !== Math.round(rect.height * dpr)) view.height = Math.round(rect.height * dpr);
  const ctx = view.getContext('2d');
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, view.width, view.height);
  if (!app.image) return;
  const z = app.zoom;
  ctx.setTransform(dpr * z.scale, 0, 0, dpr * z.scale, dpr * z.x, dpr * z.y);
  ctx.imageSmoothingEnabled = z.scale < 1;
  ctx.drawImage(app.image, 0, 0);
  if (app.savedLayer) ctx.drawImage(app.savedLayer, 0, 0);
  if (app.maskLayer) ctx.drawImage(app.maskLayer, 0, 0);
  const unit = 1 / z.scale;  // one screen pixel in image pixels
  for (const p of app.edit.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, 5 * unit, 0, 2 * Math.PI);
    ctx.fillStyle = p.label === 1 ? '#38a169' : '#e53e3e';
    ctx.fill();
    ctx.lineWidth = 1.5 * unit;
    ctx.strokeStyle = '#fff';
    ctx.stroke();
  }
  const box = app.drag?.box || app.edit.box;
  if (box) {
    ctx.lineWidth = 2 * unit;
    ctx.strokeStyle = '#ecc94b';
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
}

function imagePoint(event) {
  const rect = view.getBoundingClientRect();
  const z = app.zoom;
  return [(event.clientX - rect.left - z.x) / z.scale, (event.clientY - rect.top - z.y) / z.scale];
}

const inside = ([x, y]) => x >= 0 && y >= 0 && x < app.W && y < app.H;
const clamp = ([x, y]) => [Math.min(app.W - 1, Math.max(0, x)), Math.min(app.H - 1, Math.max(0, y))];
let spaceHeld = false;

view.addEventListener('contextmenu', (event) => event.preventDefault());
view.addEventListener('wheel', (event) => {
  event.preventDefault();
  const rect = view.getBoundingClientRect();
  zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
}, { passive: false });

view.addEventListener('pointerdown', (event) => {
  if (!app.embedding) return;
  view.setPointerCapture(event.pointerId);
  const at = imagePoint(event);
  if (event.button === 1 || spaceHeld) {
    app.drag = { pan: [event.clientX - app.zoom.x, event.clientY - app.zoom.y] };
  } else if (app.tool === 'box' && event.button === 0) {
    app.drag = { start: clamp(at), box: null };
  } else if ((app.tool === 'brush' || app.tool === 'eraser') && event.button === 0) {
    app.drag = { stroke: { mode: app.tool === 'brush' ? 'brush' : 'erase', radius: app.brush, path: [at] } };
    if (app.timer === null) app.timer = performance.now();
  } else if (app.tool === 'point' && inside(at) && (event.button === 0 || event.button === 2)) {
    const label = event.button === 0 && !event.shiftKey ? 1 : 0;
    change({ ...app.edit, chosen: null, points: [...app.edit.points, { x: at[0], y: at[1], label }] });
  }
});

view.addEventListener('pointermove', (event) => {
  const drag = app.drag;
  if (!drag) return;
  if (drag.pan) {
    app.zoom = { ...app.zoom, x: event.clientX - drag.pan[0], y: event.clientY - drag.pan[1] };
  } else if (drag.start) {
    const [x, y] = clamp(imagePoint(event));
    const [x0, y0] = drag.start;
    drag.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  } else if (drag.stroke) {
    drag.stroke.path.push(imagePoint(event));
    if (!drag.preview) drag.preview = app.mask ? app.mask.slice() : new Uint8Array(app.W * app.H);
    const preview = drag.preview;
    const touched = rasterize(preview, { ...drag.stroke, path: drag.stroke.path.slice(-2) });
    app.mask = preview;
    paint(app.maskLayer, [[preview, CURRENT]], touched);  // only where the brush went
  }
  draw();
});

view.addEventListener('pointerup', () => {
  const drag = app.drag;
  app.drag = null;
  if (!drag) return;
  if (drag.box && drag.box[2] - drag.box[0] >= 2 && drag.box[3] - drag.box[1] >= 2) {
    change({ ...app.edit, chosen: null, box: drag.box });
  } else if (drag.stroke) {
    change({ ...app.edit, strokes: [...app.edit.strokes, drag.stroke] });
  }
  draw();
});

// ---------------------------------------------------------------- controls

function setTool(tool) {
  app.tool = tool;
  document.querySelectorAll('#tools button').forEach((b) => b.classList.toggle('active', b.dataset.tool === tool));
}

function setBrush(size) {
  app.brush = Math.min(80, Math.max(2, size));
  $('brush-size').value = app.brush;
}

document.querySelectorAll('#tools button').forEach((b) => { b.onclick = () => setTool(b.dataset.tool); });
$('brush-size').oninput = (event) => setBrush(Number(event.target.value));
$('prev').onclick = () => navigate(-1);
$('next').onclick = () => navigate(1);
$('undo').onclick = undo;
$('redo').onclick = redo;
$('clear').onclick = resetEdit;
$('accept').onclick = accept;
$('prefill').onclick = prefill;
$('help-button').onclick = () => $('help').showModal();
window.addEventListener('resize', draw);
setInterval(() => { if (app.timer !== null) updateTiming(); }, 500);

const KEYS = {
  v: () => setTool('point'), x: () => setTool('box'), b: () => setTool('brush'), e: () => setTool('eraser'),
  '[': () => setBrush(app.brush - 2), ']': () => setBrush(app.brush + 2),
  1: () => choose(0), 2: () => choose(1), 3: () => choose(2),
  Enter: accept, Escape: resetEdit, f: prefill, '?': () => $('help').showModal(),
  n: () => navigate(1), ArrowRight: () => navigate(1),
  p: () => navigate(-1), ArrowLeft: () => navigate(-1),
  '+': () => zoomAt(1.25, view.clientWidth / 2, view.clientHeight / 2), '=': () => zoomAt(1.25, view.clientWidth / 2, view.clientHeight / 2),
  '-': () => zoomAt(0.8, view.clientWidth / 2, view.clientHeight / 2), 0: fit,
  Delete: () => { if (app.selected !== null) deleteMask(app.selected); },
};

window.addEventListener('keydown', (event) => {
  if (event.target.tagName === 'INPUT' || document.querySelector('dialog[open]')) return;
  if (event.key === ' ') { spaceHeld = true; event.preventDefault(); return; }
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && (key === 'z' || key === 'y')) {
    event.preventDefault();
    if (key === 'y' || event.shiftKey) redo(); else undo();
    return;
  }
  const action = KEYS[event.key] || KEYS[key];
  if (action && !event.ctrlKey && !event.metaKey && !event.altKey) { event.preventDefault(); action(); }
});
window.addEventListener('keyup', (event) => { if (event.key === ' ') spaceHeld = false; });

// ---------------------------------------------------------------- start

async function start() {
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {  // a link handed to an annotator: sign in, then drop the token from the URL
    await fetch('/api/login', json({ token: params.get('token') }));
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.size ? `?${params}` : ''}`);
  }
  app.info = await (await api('/api/info')).json();
  $('annotator').textContent = `${app.info.annotator} · ${app.info.model}`;
  status('Loading the mask decoder…', 'loading');
  app.decoder = await Decoder.load(app.info.decoder, app.info, Number(params.get('threads')) || null);
  app.images = (await (await api('/api/images')).json()).images;
  setTool('point');
  const first = Math.max(0, app.images.findIndex((image) => image.name === params.get('image')));
  await openImage(first);
}

start().catch((err) => status(`Error: ${err.message}`, 'error'));
