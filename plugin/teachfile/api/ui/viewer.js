// The stack viewer: stored values from the node, window/level applied here so that a drag or a
// scroll redraws from memory. Frames are fetched around the current one, nearest first.

const API = '/teachfile/portal';
const CONCURRENCY = 4;
const CACHE_FRAMES = 600;

export const PRESETS = {
  'CT lung': [1500, -600],
  'CT mediastinum': [350, 50],
  'CT bone': [2000, 300],
  'CT brain': [80, 40],
};

// A NumPy .npy answer (Orthanc's /frames/N/numpy) as a typed array and its shape.
export function parseNpy(buf) {
  const bytes = new Uint8Array(buf);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== 'NUMPY') {
    throw new Error('not a .npy array');
  }
  const major = bytes[6];
  const dv = new DataView(buf);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',')
    .map((s) => s.trim()).filter(Boolean).map(Number);
  const body = buf.slice(start + hlen);
  const types = { '<i2': Int16Array, '<u2': Uint16Array, '|u1': Uint8Array, '<u1': Uint8Array,
    '|i1': Int8Array, '<i4': Int32Array, '<u4': Uint32Array, '<f4': Float32Array };
  const Type = types[descr];
  if (!Type) throw new Error(`unsupported pixel type ${descr}`);
  const data = new Type(body);
  let [h, w, c] = shape;
  if (shape.length === 2) c = 1;
  return { data, width: w, height: h, channels: c || 1 };
}

export class StackViewer {
  constructor(root, { onFrame } = {}) {
    this.root = root;
    this.onFrame = onFrame || (() => {});
    root.innerHTML = `
      <div class="vtools">
        <select class="preset" aria-label="window preset">
          <option value="">W/L preset…</option>
          ${Object.keys(PRESETS).map((p) => `<option>${p}</option>`).join('')}
          <option value="auto">Auto</option>
        </select>
        <button class="zin" title="zoom in">+</button><button class="zout" title="zoom out">−</button>
        <button class="reset" title="reset view">Reset</button>
        <span class="wl"></span>
      </div>
      <div class="vstage" tabindex="0"><canvas></canvas><div class="counter"></div></div>
      <input class="slider" type="range" min="0" max="0" value="0" aria-label="frame">`;
    this.stage = root.querySelector('.vstage');
    this.canvas = root.querySelector('canvas');
    this.ctx = this.canvas.getContext('2d');
    this.slider = root.querySelector('.slider');
    this.counter = root.querySelector('.counter');
    this.wlLabel = root.querySelector('.wl');
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d');
    this.frames = [];
    this.index = 0;
    this.cache = new Map();
    this.pending = new Map();
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.ww = 400; this.wc = 40;
    this.stats = { shown: [], requested: new Map() };
    this.gen = 0;
    this._bind();
    window.__viewer = this;
  }

  _bind() {
    this.slider.addEventListener('input', () => this.go(Number(this.slider.value)));
    this.stage.addEventListener('wheel', (e) => {
      e.preventDefault();
      if (e.ctrlKey) { this.setZoom(this.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)); return; }
      this.go(this.index + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    this.stage.addEventListener('keydown', (e) => {
      const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 }[e.key];
      if (step) { e.preventDefault(); this.go(this.index + step); }
    });
    let drag = null;
    this.stage.addEventListener('contextmenu', (e) => e.preventDefault());
    this.stage.addEventListener('pointerdown', (e) => {
      this.stage.focus();
      drag = { x: e.clientX, y: e.clientY, ww: this.ww, wc: this.wc, px: this.panX, py: this.panY,
        pan: e.button === 2 || e.button === 1 || e.shiftKey };
      this.stage.setPointerCapture(e.pointerId);
    });
    this.stage.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x; const dy = e.clientY - drag.y;
      if (drag.pan) { this.panX = drag.px + dx; this.panY = drag.py + dy; this.draw(); return; }
      const scale = Math.max(1, drag.ww / 200);
      this.setWindow(Math.max(1, drag.ww + dx * scale), drag.wc + dy * scale);
    });
    const end = () => { drag = null; };
    this.stage.addEventListener('pointerup', end);
    this.stage.addEventListener('pointercancel', end);
    this.root.querySelector('.preset').addEventListener('change', (e) => {
      const v = e.target.value;
      if (v === 'auto') this.autoWindow();
      else if (PRESETS[v]) this.setWindow(...PRESETS[v]);
      e.target.value = '';
    });
    this.root.querySelector('.zin').onclick = () => this.setZoom(this.zoom * 1.25);
    this.root.querySelector('.zout').onclick = () => this.setZoom(this.zoom / 1.25);
    this.root.querySelector('.reset').onclick = () => {
      this.zoom = 1; this.panX = this.panY = 0; this.defaultWindow(); this.draw();
    };
    this._resize = () => this.draw();
    window.addEventListener('resize', this._resize);
  }

  async load(seriesId, startFrame = 0) {
    const gen = ++this.gen;
    const r = await fetch(`${API}/series/${seriesId}`);
    if (!r.ok) throw new Error(`series: ${r.status}`);
    const info = await r.json();
    if (gen !== this.gen) return;
    this.series = info;
    this.frames = info.frames;
    this.pixel = info.pixel;
    this.cache.clear(); this.pending.clear();
    this.slider.max = String(Math.max(0, this.frames.length - 1));
    this.zoom = 1; this.panX = this.panY = 0;
    this.defaultWindow();
    this.index = Math.min(Math.max(0, startFrame), Math.max(0, this.frames.length - 1));
    this.go(this.index, true);
  }

  defaultWindow() {
    const p = this.pixel || {};
    if (p.window_width) { this.ww = p.window_width; this.wc = p.window_center; } else {
      this.autoPending = true;
    }
    this._label();
  }

  autoWindow() {
    const f = this.cache.get(this._key(this.index));
    if (!f) return;
    const { slope, intercept } = this._rescale();
    let lo = Infinity; let hi = -Infinity;
    const d = f.data;
    for (let i = 0; i < d.length; i += 7) { const v = d[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    this.setWindow(Math.max(1, (hi - lo) * slope), ((hi + lo) / 2) * slope + intercept);
  }

  _rescale() {
    const p = this.pixel || {};
    return { slope: p.slope || 1, intercept: p.intercept || 0 };
  }

  setWindow(ww, wc) {
    this.ww = Math.round(ww); this.wc = Math.round(wc);
    this._label(); this._lutKey = null; this.draw(true);
  }

  setZoom(z) { this.zoom = Math.min(20, Math.max(0.1, z)); this.draw(); }

  _label() { this.wlLabel.textContent = `W ${this.ww}  L ${this.wc}`; }

  _key(i) { const f = this.frames[i]; return f ? `${f.instance}/${f.frame}` : ''; }

  get current() { return this.frames[this.index]; }

  go(i, force = false) {
    if (!this.frames.length) { this.counter.textContent = 'no images'; return; }
    const next = Math.min(Math.max(0, i), this.frames.length - 1);
    if (next === this.index && !force) return;
    this.index = next;
    this.slider.value = String(next);
    this.counter.textContent = `${next + 1} / ${this.frames.length}`;
    this.stats.requested.set(next, performance.now());
    this.onFrame(next, this.current);
    this.draw(true);
    this._prefetch();
  }

  _prefetch() {
    const n = this.frames.length;
    const order = [];
    for (let d = 0; d < n && order.length < CACHE_FRAMES; d++) {
      if (this.index + d < n) order.push(this.index + d);
      if (d && this.index - d >= 0) order.push(this.index - d);
    }
    this.queue = order.filter((i) => !this.cache.has(this._key(i)));
    this._pump();
  }

  _pump() {
    while (this.pending.size < CONCURRENCY && this.queue && this.queue.length) {
      const i = this.queue.shift();
      const key = this._key(i);
      if (this.cache.has(key) || this.pending.has(key)) continue;
      const f = this.frames[i];
      const gen = this.gen;
      const p = fetch(`${API}/instances/${f.instance}/frames/${f.frame}`)
        .then((r) => { if (!r.ok) throw new Error(String(r.status)); return r.arrayBuffer(); })
        .then((buf) => {
          if (gen !== this.gen) return;
          this.cache.set(key, parseNpy(buf));
          if (this.cache.size === this.frames.length) this.stats.allLoadedAt = performance.now();
          if (i === this.index) this.draw(true);
        })
        .catch(() => {})
        .finally(() => { this.pending.delete(key); this._pump(); });
      this.pending.set(key, p);
    }
  }

  _lut(f) {
    // One lookup table per window and pixel type: a drag costs a 64k-entry table, not a
    // per-pixel floating computation.
    const { slope, intercept } = this._rescale();
    const signed = f.data instanceof Int16Array;
    const key = `${this.ww}/${this.wc}/${signed}/${slope}/${intercept}/${this.pixel.photometric}`;
    if (this._lutKey === key) return this._lutArr;
    const size = f.data instanceof Uint8Array ? 256 : 65536;
    const lut = new Uint8ClampedArray(size);
    const lo = this.wc - this.ww / 2; const inv = 255 / this.ww;
    const invert = this.pixel.photometric === 'MONOCHROME1';
    for (let i = 0; i < size; i++) {
      const raw = signed && i >= 32768 ? i - 65536 : i;
      let v = ((raw * slope + intercept) - lo) * inv;
      if (invert) v = 255 - v;
      lut[i] = v;
    }
    this._lutKey = key; this._lutArr = lut;
    return lut;
  }

  draw(reblit = false) {
    const cw = this.stage.clientWidth || 512; const ch = this.stage.clientHeight || 512;
    if (this.canvas.width !== cw || this.canvas.height !== ch) {
      this.canvas.width = cw; this.canvas.height = ch;
    }
    const key = this._key(this.index);
    const f = this.cache.get(key);
    if (!f) return;
    if (this.autoPending) { this.autoPending = false; this.autoWindow(); return; }
    const t0 = performance.now();
    if (reblit || this._shownKey !== key || this._shownWL !== `${this.ww}/${this.wc}`) {
      if (this.off.width !== f.width || this.off.height !== f.height) {
        this.off.width = f.width; this.off.height = f.height;
        this._img = this.offCtx.createImageData(f.width, f.height);
      }
      if (!this._img) this._img = this.offCtx.createImageData(f.width, f.height);
      const out = this._img.data; const d = f.data; const n = f.width * f.height;
      if (f.channels >= 3) {
        for (let i = 0, j = 0; i < n; i++, j += f.channels) {
          out[4 * i] = d[j]; out[4 * i + 1] = d[j + 1]; out[4 * i + 2] = d[j + 2]; out[4 * i + 3] = 255;
        }
      } else {
        const lut = this._lut(f);
        const mask = lut.length - 1;
        for (let i = 0; i < n; i++) {
          const v = lut[d[i] & mask];
          const o = i << 2;
          out[o] = v; out[o + 1] = v; out[o + 2] = v; out[o + 3] = 255;
        }
      }
      this.offCtx.putImageData(this._img, 0, 0);
      this._shownKey = key; this._shownWL = `${this.ww}/${this.wc}`;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000'; ctx.fillRect(0, 0, cw, ch);
    const fit = Math.min(cw / f.width, ch / f.height) * this.zoom;
    const w = f.width * fit; const h = f.height * fit;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.off, (cw - w) / 2 + this.panX, (ch - h) / 2 + this.panY, w, h);
    if (this.stats.firstDrawAt === undefined) this.stats.firstDrawAt = performance.now();
    const asked = this.stats.requested.get(this.index);
    if (asked !== undefined) {
      this.stats.shown.push({ frame: this.index, ms: performance.now() - asked, draw: performance.now() - t0 });
      this.stats.requested.delete(this.index);
    }
    this.canvas.dataset.frame = String(this.index);
    this.canvas.dataset.wl = `${this.ww}/${this.wc}`;
  }

  loadedCount() { return this.cache.size; }

  destroy() { window.removeEventListener('resize', this._resize); this.gen++; }
}
