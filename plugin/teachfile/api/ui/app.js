// The teaching-file portal: one page, routes in the URL's fragment so that a copied link carries
// the state (search, case, series, frame, unknown mode).
import { StackViewer } from './viewer.js';

const API = '/teachfile/portal';
const main = document.getElementById('main');
let me = { role: 'viewer', may_author: false, may_admin: false };
let viewer = null;

// -- helpers -------------------------------------------------------------------------------
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { 'Content-Type': 'application/json', ...(opts.headers || {}) } });
  const body = r.headers.get('content-type')?.includes('json') ? await r.json() : null;
  if (!r.ok) { const e = new Error(body?.error || `HTTP ${r.status}`); e.status = r.status; e.body = body; throw e; }
  return body;
}

function toast(msg, bad = false) {
  const t = document.getElementById('toast');
  t.textContent = msg; t.className = bad ? 'show bad' : 'show';
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.className = ''; }, 4000);
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, qs] = h.split('?');
  return { parts: (path || 'library').split('/').map(decodeURIComponent), params: new URLSearchParams(qs || '') };
}

function setHash(path, params, replace = true) {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null && v !== false)).toString();
  const h = `#/${path}${qs ? `?${qs}` : ''}`;
  if (replace) history.replaceState(null, '', h); else location.hash = h;
}

// Text that looks like an identifier: the author is warned while typing (the server says the
// same on save). Dates, long numbers, a name after an honorific.
const ID_PATTERNS = [
  ['a date', /\b(\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2}|(19|20)\d{6})\b/],
  ['a date', /\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{2,4}\b/i],
  ['a long number', /\b\d{6,}\b/],
  ['a name after an honorific', /\b(?:[Mm]rs?|[Mm]s|[Mm]iss|[Dd]r|[Pp]rof|[Hh]err|[Ff]rau|[Mm]me|[Mm]lle|[Ss]ra?)\.?\s+[A-Z][a-z]+/],
];
export function identifierHints(text) {
  return [...new Set(ID_PATTERNS.filter(([, re]) => re.test(text)).map(([k]) => k))];
}

const FIELDS = [
  ['title', 'Title', 1], ['history', 'History', 4], ['findings', 'Findings', 4],
  ['diagnosis', 'Diagnosis', 2], ['differential', 'Differential diagnosis', 3],
  ['discussion', 'Discussion', 5], ['references', 'References', 2], ['author', 'Author', 1],
];
const HIDDEN = ['diagnosis', 'differential', 'discussion'];

// -- library -------------------------------------------------------------------------------
async function showLibrary(params) {
  const st = {
    q: params.get('q') || '', modality: params.get('modality') || '', keyword: params.get('keyword') || '',
    sort: params.get('sort') || 'title', offset: Number(params.get('offset') || 0),
    unknown: params.get('unknown') === '1', network: params.get('network') === '1',
  };
  main.innerHTML = `
    <section class="library">
      <form class="filters" id="lib-form">
        <input type="search" name="q" placeholder="Search title, keywords, history, findings, diagnosis…" value="${esc(st.q)}" aria-label="search">
        <select name="modality" aria-label="modality"><option value="">All modalities</option></select>
        <select name="keyword" aria-label="keyword"><option value="">All keywords</option></select>
        <select name="sort" aria-label="sort">
          ${[['title', 'Title A–Z'], ['-title', 'Title Z–A'], ['-date', 'Newest study'], ['date', 'Oldest study'], ['-updated', 'Recently edited'], ['-images', 'Most images']]
    .map(([v, l]) => `<option value="${v}" ${v === st.sort ? 'selected' : ''}>${l}</option>`).join('')}
        </select>
        <label><input type="checkbox" name="unknown" ${st.unknown ? 'checked' : ''}> Unknown mode</label>
        <label><input type="checkbox" name="network" ${st.network ? 'checked' : ''}> Network</label>
        <button type="submit">Search</button>
      </form>
      <div id="lib-status" class="muted"></div>
      <div id="lib-grid" class="grid"></div>
      <div class="pager"><button id="prev">‹ Previous</button><span id="pageinfo"></span><button id="next">Next ›</button></div>
      <div id="net"></div>
    </section>`;
  const form = document.getElementById('lib-form');
  const go = (extra = {}) => {
    const fd = new FormData(form);
    const next = { q: fd.get('q'), modality: fd.get('modality'), keyword: fd.get('keyword'), sort: fd.get('sort'),
      unknown: fd.get('unknown') ? '1' : '', network: fd.get('network') ? '1' : '', offset: 0, ...extra };
    setHash('library', next, false);
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); go(); });
  form.querySelectorAll('select, input[type=checkbox]').forEach((el) => el.addEventListener('change', () => go()));
  const qs = new URLSearchParams({ q: st.q, modality: st.modality, keyword: st.keyword, sort: st.sort,
    offset: String(st.offset), limit: '24', unknown: st.unknown ? '1' : '' });
  const t0 = performance.now();
  const data = await api(`${API}/library?${qs}`);
  window.__libraryMs = performance.now() - t0;
  const msel = form.querySelector('[name=modality]');
  Object.entries(data.facets.modalities).forEach(([m, n]) => msel.insertAdjacentHTML('beforeend', `<option value="${esc(m)}" ${m === st.modality ? 'selected' : ''}>${esc(m)} (${n})</option>`));
  const ksel = form.querySelector('[name=keyword]');
  Object.entries(data.facets.keywords).forEach(([k, n]) => ksel.insertAdjacentHTML('beforeend', `<option value="${esc(k)}" ${k === st.keyword ? 'selected' : ''}>${esc(k)} (${n})</option>`));
  if (st.keyword && !data.facets.keywords[st.keyword]) ksel.insertAdjacentHTML('beforeend', `<option selected>${esc(st.keyword)}</option>`);
  const grid = document.getElementById('lib-grid');
  grid.innerHTML = data.cases.map((c) => caseCard(c, st.unknown)).join('') || '<p class="muted">No case matches.</p>';
  document.getElementById('lib-status').textContent = `${data.total} case${data.total === 1 ? '' : 's'}${st.unknown ? ' · unknown mode: answers hidden and not searched' : ''}`;
  const end = Math.min(data.total, st.offset + data.cases.length);
  document.getElementById('pageinfo').textContent = data.total ? `${st.offset + 1}–${end} of ${data.total}` : '';
  const prev = document.getElementById('prev'); const next = document.getElementById('next');
  prev.disabled = st.offset <= 0; next.disabled = end >= data.total;
  prev.onclick = () => setHash('library', { ...st, unknown: st.unknown ? '1' : '', network: st.network ? '1' : '', offset: Math.max(0, st.offset - 24) }, false);
  next.onclick = () => setHash('library', { ...st, unknown: st.unknown ? '1' : '', network: st.network ? '1' : '', offset: st.offset + 24 }, false);
  if (st.network && st.q) networkSearch(st.q, st.unknown);
}

function caseCard(c, unknown) {
  const link = `#/case/${c.study}${unknown ? '?unknown=1' : ''}`;
  const thumb = c.thumbnail ? `<img loading="lazy" alt="" src="${API}/instances/${c.thumbnail}/thumbnail">` : '<div class="nothumb">no image</div>';
  const dx = unknown ? '' : (c.record.diagnosis ? `<div class="dx">${esc(c.record.diagnosis)}</div>` : '');
  return `<a class="card" href="${link}" data-study="${c.study}">
    ${thumb}
    <div class="ctitle">${esc(c.title || 'Untitled case')}</div>
    <div class="meta">${esc(c.modalities.join(', '))}${c.body_parts.length ? ` · ${esc(c.body_parts.join(', '))}` : ''} · ${c.series} series · ${c.instances} images</div>
    ${dx}
    <div class="kw">${c.keywords.map((k) => `<span class="tag">${esc(k)}</span>`).join('')}</div>
  </a>`;
}

async function networkSearch(q, unknown) {
  const net = document.getElementById('net');
  net.innerHTML = '<h3>Network</h3><p class="muted">Asking every configured node…</p>';
  try {
    const r = await api(`${API}/network?${new URLSearchParams({ q, timeout: '5', unknown: unknown ? '1' : '' })}`);
    net.innerHTML = `<h3>Network</h3>
      <p class="nodes">${r.nodes.map((n) => `<span class="node ${n.status === 'ok' ? 'ok' : 'bad'}">${esc(n.node)} (${esc(n.aet)}): ${esc(n.status)}, ${n.count}</span>`).join(' ')}</p>
      <table class="results"><tr><th>Title</th><th>Date</th><th>Modalities</th><th>Images</th><th>Nodes</th><th></th></tr>
      ${r.results.map((h) => `<tr><td>${esc(h.title)}</td><td>${esc(h.study_date || '')}</td>
        <td>${esc((h.modalities || []).join(', '))}</td><td>${esc(h.instances ?? '')}</td>
        <td>${esc(h.sources.map((n) => n.node).join(', '))}</td>
        <td>${retrieveButton(h)}</td></tr>`).join('')}</table>`;
    net.querySelectorAll('button[data-node]').forEach((b) => { b.onclick = () => retrieve(b.dataset.node, b.dataset.uid); });
  } catch (e) { net.innerHTML = `<h3>Network</h3><p class="bad">${esc(e.message)}</p>`; }
}

function retrieveButton(h) {
  if (h.local_study) return `<a href="#/case/${h.local_study}">Open</a>`;
  const remote = h.sources.filter((n) => n.node !== 'local');
  if (!me.may_author || !remote.length) return '';
  return `<button data-node="${esc(remote[0].node)}" data-uid="${esc(h.study_instance_uid)}">Retrieve</button>`;
}

async function retrieve(node, uid) {
  try {
    const r = await api(`${API}/retrieve`, { method: 'POST', body: JSON.stringify({ node, study_instance_uid: uid }) });
    toast(`Retrieving from ${node} (job ${r.job.slice(0, 8)})`);
  } catch (e) { toast(e.message, true); }
}

// -- case ----------------------------------------------------------------------------------
async function showCase(study, params) {
  const unknown = params.get('unknown') === '1';
  const present = params.get('present');
  const data = await api(`${API}/cases/${study}${unknown ? '?unknown=1' : ''}`);
  const rec = data.record;
  const canEdit = me.may_author && !unknown;
  main.innerHTML = `
    <section class="case ${present != null ? 'present' : ''}">
      <div class="casehead">
        <h1 id="case-title">${esc(data.title || 'Untitled case')}</h1>
        <div class="actions">
          ${unknown ? '<button id="reveal" class="primary">Reveal</button>' : ''}
          ${canEdit ? '<button id="edit">Edit</button>' : ''}
          <button id="copylink">Copy link</button>
          <a class="button" href="${API}/cases/${study}/archive" download>ZIP</a>
          <a class="button" href="${API}/cases/${study}/archive?media=1" download>DICOMDIR</a>
          ${me.nifti ? `<a class="button" href="${API}/cases/${study}/nifti" download>NIfTI</a>` : ''}
          ${me.may_author ? '<select id="sendto" aria-label="send to"><option value="">Send to…</option></select>' : ''}
          <select id="addto" aria-label="add to conference"><option value="">Add to conference…</option></select>
        </div>
      </div>
      <div class="casebody">
        <div class="viewerwrap">
          <div class="serieslist" id="serieslist">${data.series_list.map((s) => `
            <button class="series ${s.key_images.length ? 'haskey' : ''}" data-series="${s.series}" ${s.viewable ? '' : 'disabled'}>
              ${s.thumbnail && s.viewable ? `<img alt="" loading="lazy" src="${API}/instances/${s.thumbnail}/thumbnail">` : ''}
              <span>${esc(s.modality)} ${esc(s.description || '')}<br>${s.instances} img${s.key_images.length ? ` · ${s.key_images.length} key` : ''}</span>
            </button>`).join('')}</div>
          <div id="viewer" class="viewer"></div>
          ${me.may_author && !unknown ? '<button id="markkey">Mark key image</button> <span id="keystate" class="muted"></span>' : ''}
        </div>
        <div class="record" id="record"></div>
      </div>
      ${present != null ? '<div class="presentnav"><button id="pprev">‹ Previous case</button><span id="ppos"></span><button id="pnext">Next case ›</button></div>' : ''}
    </section>`;
  let keyImages = [...(rec.key_images || [])];
  const renderRecord = (r, hidden) => {
    document.getElementById('record').innerHTML = FIELDS.filter(([f]) => f !== 'title').map(([f, label]) => {
      if (hidden.includes(f)) return `<div class="field hidden" data-field="${f}"><h3>${label}</h3><p class="muted">Hidden until revealed</p></div>`;
      const v = r[f];
      return v ? `<div class="field" data-field="${f}"><h3>${label}</h3><p>${esc(v).replace(/\n/g, '<br>')}</p></div>` : '';
    }).join('') + `<div class="field"><h3>Keywords</h3><p>${(r.keywords || []).map((k) => `<a class="tag" href="#/library?keyword=${encodeURIComponent(k)}">${esc(k)}</a>`).join(' ') || '<span class="muted">none</span>'}</p></div>
      <div class="field muted small">${r.created ? `Created ${esc(r.created)}` : ''} ${r.updated ? `· updated ${esc(r.updated)}` : ''} · ${esc(data.study_instance_uid)}</div>`;
  };
  renderRecord(rec, data.hidden);
  // Viewer.
  if (viewer) viewer.destroy();
  const keystate = () => {
    const el = document.getElementById('keystate');
    const cur = viewer?.current;
    if (el && cur) {
      const on = keyImages.includes(cur.instance);
      el.textContent = on ? '★ key image' : '';
      document.getElementById('markkey').textContent = on ? 'Unmark key image' : 'Mark key image';
    }
  };
  let currentSeries = params.get('series') || (data.series_list.find((s) => s.viewable) || {}).series;
  viewer = new StackViewer(document.getElementById('viewer'), {
    onFrame: (i) => {
      const here = parseHash();
      setHash(here.parts.map(encodeURIComponent).join('/'), { ...Object.fromEntries(here.params), series: currentSeries, frame: i });
      keystate();
    },
  });
  const openSeries = async (sid, frame) => {
    currentSeries = sid;
    document.querySelectorAll('#serieslist .series').forEach((b) => b.classList.toggle('active', b.dataset.series === sid));
    await viewer.load(sid, frame);
    // Key images first: open at the first marked frame of the series.
    if (frame == null) {
      const idx = viewer.frames.findIndex((f) => keyImages.includes(f.instance));
      if (idx > 0) viewer.go(idx);
    }
    viewer.stage.focus();
  };
  document.querySelectorAll('#serieslist .series').forEach((b) => { b.onclick = () => openSeries(b.dataset.series); });
  if (currentSeries) openSeries(currentSeries, params.has('frame') ? Number(params.get('frame')) : null);
  const mk = document.getElementById('markkey');
  if (mk) {
    mk.onclick = async () => {
      const cur = viewer.current; if (!cur) return;
      keyImages = keyImages.includes(cur.instance) ? keyImages.filter((k) => k !== cur.instance) : [...keyImages, cur.instance];
      try { await api(`${API}/cases/${study}`, { method: 'PUT', body: JSON.stringify({ key_images: keyImages }) }); toast('Key images saved'); } catch (e) { toast(e.message, true); }
      keystate();
    };
  }
  // Actions.
  const reveal = document.getElementById('reveal');
  if (reveal) {
    reveal.onclick = async () => {
      const full = await api(`${API}/cases/${study}`);
      renderRecord(full.record, []);
      reveal.disabled = true; reveal.textContent = 'Revealed';
    };
  }
  document.getElementById('copylink').onclick = async () => {
    const url = location.href;
    try { await navigator.clipboard.writeText(url); toast('Link copied'); } catch { toast(url); }
    window.__copiedLink = url;
  };
  const edit = document.getElementById('edit');
  if (edit) edit.onclick = () => editCase(study, data, keyImages);
  const sendto = document.getElementById('sendto');
  if (sendto) {
    api(`${API}/nodes`).then((r) => r.nodes.forEach((n) => sendto.insertAdjacentHTML('beforeend', `<option value="${esc(n.name)}">${esc(n.name)} (${esc(n.aet)})</option>`)));
    sendto.onchange = async () => {
      const target = sendto.value; sendto.value = ''; if (!target) return;
      try { const r = await api(`/teachfile/cases/${study}/send`, { method: 'POST', body: JSON.stringify({ target }) }); toast(`Sending to ${target} (job ${r.job.slice(0, 8)})`); watchJob(r.job, `Sent to ${target}`); } catch (e) { toast(e.message, true); }
    };
  }
  const addto = document.getElementById('addto');
  const conf = await api(`${API}/conferences`);
  conf.lists.forEach((l) => addto.insertAdjacentHTML('beforeend', `<option>${esc(l.name)}</option>`));
  if (me.may_author) addto.insertAdjacentHTML('beforeend', '<option value="__new">New list…</option>');
  addto.onchange = async () => {
    let name = addto.value; addto.value = ''; if (!name) return;
    if (name === '__new') { name = prompt('Name of the new conference list'); if (!name) return; }
    await editLists((lists) => {
      let l = lists.find((x) => x.name === name);
      if (!l) { l = { name, cases: [] }; lists.push(l); }
      if (!l.cases.includes(study)) l.cases.push(study);
    });
    toast(`Added to ${name}`);
  };
  if (present != null) presentNav(params);
}

async function watchJob(job, done) {
  for (let i = 0; i < 120; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const j = await api(`${API}/jobs/${job}`).catch(() => null);
    if (!j) return;
    if (j.state === 'Success') { toast(done); return; }
    if (j.state === 'Failure') { toast('The job failed', true); return; }
  }
}

function editCase(study, data, keyImages) {
  const rec = data.record;
  const rec2 = document.getElementById('record');
  rec2.innerHTML = `<form id="author" class="author">
    ${FIELDS.map(([f, label, rows]) => `<label>${label}
      ${rows === 1 ? `<input name="${f}" value="${esc(f === 'title' ? data.title : rec[f])}">` : `<textarea name="${f}" rows="${rows}">${esc(rec[f])}</textarea>`}
      <span class="warn" data-warn="${f}"></span></label>`).join('')}
    <label>Keywords (comma separated)<input name="keywords" value="${esc((rec.keywords || []).join(', '))}"><span class="warn" data-warn="keywords"></span></label>
    <div><button type="submit" class="primary">Save</button> <button type="button" id="cancel">Cancel</button></div>
  </form>`;
  const form = document.getElementById('author');
  form.addEventListener('input', (e) => {
    const el = e.target; const w = form.querySelector(`[data-warn="${el.name}"]`);
    if (!w) return;
    const hints = identifierHints(el.value);
    w.textContent = hints.length ? `Looks like ${hints.join(', ')}: is this identifying?` : '';
  });
  document.getElementById('cancel').onclick = () => route();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const body = Object.fromEntries(FIELDS.map(([f]) => [f, fd.get(f)]));
    body.keywords = String(fd.get('keywords') || '').split(',').map((s) => s.trim()).filter(Boolean);
    body.key_images = keyImages;
    const btn = form.querySelector('button[type=submit]'); btn.disabled = true; btn.textContent = 'Saving…';
    try {
      const r = await api(`${API}/cases/${study}`, { method: 'PUT', body: JSON.stringify(body) });
      toast(r.warnings?.length ? `Saved. Check: ${r.warnings.map((w) => `${w.field} (${w.kind})`).join(', ')}` : 'Saved', !!r.warnings?.length);
      route();
    } catch (err) { toast(err.message, true); btn.disabled = false; btn.textContent = 'Save'; }
  });
}

// -- conferences ---------------------------------------------------------------------------
async function editLists(change) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const cur = await api(`${API}/conferences`);
    const lists = JSON.parse(JSON.stringify(cur.lists));
    change(lists);
    try { return await api(`${API}/conferences`, { method: 'PUT', body: JSON.stringify({ version: cur.version, lists }) }); } catch (e) {
      if (e.status !== 409) { toast(e.message, true); throw e; }
    }
  }
  throw new Error('the lists keep changing');
}

async function showConferences() {
  const conf = await api(`${API}/conferences`);
  const titles = {};
  const lib = await api(`${API}/library?limit=200`);
  lib.cases.forEach((c) => { titles[c.study] = c.title; });
  main.innerHTML = `<section class="conferences"><h1>Conference lists</h1>
    ${me.may_author ? '<form id="newlist"><input name="name" placeholder="New list name" aria-label="new list name"><button>Create</button></form>' : ''}
    ${conf.lists.map((l, li) => `<div class="conf" data-list="${esc(l.name)}"><h2>${esc(l.name)} <a class="button" href="#/present/${encodeURIComponent(l.name)}/0">Present</a>
      ${me.may_author ? `<button data-del="${li}">Delete list</button>` : ''}</h2>
      <ol>${l.cases.map((s, ci) => `<li data-study="${s}"><a href="#/case/${s}">${esc(titles[s] || s)}</a>
        ${me.may_author ? `<button data-up="${li}/${ci}" ${ci === 0 ? 'disabled' : ''}>↑</button><button data-down="${li}/${ci}" ${ci === l.cases.length - 1 ? 'disabled' : ''}>↓</button><button data-rm="${li}/${ci}">Remove</button>` : ''}</li>`).join('')}</ol></div>`).join('') || '<p class="muted">No list yet. Add cases from a case page.</p>'}
  </section>`;
  const nl = document.getElementById('newlist');
  if (nl) nl.onsubmit = async (e) => { e.preventDefault(); const name = new FormData(nl).get('name'); if (!name) return; await editLists((ls) => { if (!ls.find((x) => x.name === name)) ls.push({ name, cases: [] }); }); route(); };
  const act = (sel, fn) => main.querySelectorAll(sel).forEach((b) => { b.onclick = async () => { await editLists(fn(b)); route(); }; });
  const name = (b, attr) => conf.lists[Number(b.dataset[attr].split('/')[0])].name;
  const idx = (b, attr) => Number(b.dataset[attr].split('/')[1]);
  const move = (attr, d) => (b) => (ls) => { const l = ls.find((x) => x.name === name(b, attr)); const i = idx(b, attr); const [s] = l.cases.splice(i, 1); l.cases.splice(i + d, 0, s); };
  act('[data-up]', move('up', -1));
  act('[data-down]', move('down', 1));
  act('[data-rm]', (b) => (ls) => { const l = ls.find((x) => x.name === name(b, 'rm')); l.cases.splice(idx(b, 'rm'), 1); });
  act('[data-del]', (b) => (ls) => { ls.splice(ls.findIndex((x) => x.name === conf.lists[Number(b.dataset.del)].name), 1); });
}

async function showPresent(name, pos) {
  const conf = await api(`${API}/conferences`);
  const list = conf.lists.find((l) => l.name === name);
  if (!list || !list.cases.length) { main.innerHTML = '<p>This list is empty.</p>'; return; }
  const i = Math.min(Math.max(0, pos), list.cases.length - 1);
  await showCase(list.cases[i], new URLSearchParams({ unknown: '1', present: `${name}/${i}` }));
  document.documentElement.requestFullscreen?.().catch(() => {});
}

function presentNav(params) {
  const [name, pos] = params.get('present').split('/');
  api(`${API}/conferences`).then((conf) => {
    const list = conf.lists.find((l) => l.name === decodeURIComponent(name));
    const i = Number(pos); const n = list ? list.cases.length : 0;
    document.getElementById('ppos').textContent = `${list ? list.name : ''}: case ${i + 1} of ${n}`;
    const p = document.getElementById('pprev'); const q = document.getElementById('pnext');
    p.disabled = i <= 0; q.disabled = i >= n - 1;
    p.onclick = () => { location.hash = `#/present/${encodeURIComponent(list.name)}/${i - 1}`; };
    q.onclick = () => { location.hash = `#/present/${encodeURIComponent(list.name)}/${i + 1}`; };
  });
}

// -- quiz ----------------------------------------------------------------------------------
async function showQuiz(params) {
  const lib = await api(`${API}/library?limit=1`);
  main.innerHTML = `<section><h1>Random quiz</h1>
    <form id="quiz"><select name="keyword" aria-label="quiz keyword"><option value="">Any keyword</option>
    ${Object.keys(lib.facets.keywords).map((k) => `<option ${k === params.get('keyword') ? 'selected' : ''}>${esc(k)}</option>`).join('')}</select>
    <button class="primary">Show me a case</button></form><p id="quizmsg" class="muted"></p></section>`;
  document.getElementById('quiz').onsubmit = async (e) => {
    e.preventDefault();
    const k = new FormData(e.target).get('keyword');
    try { const r = await api(`${API}/quiz?${new URLSearchParams({ keyword: k })}`); location.hash = `#/case/${r.study}?unknown=1`; } catch (err) { document.getElementById('quizmsg').textContent = err.message; }
  };
}

// -- admin ---------------------------------------------------------------------------------
async function showAdmin() {
  if (!me.may_admin) { main.innerHTML = '<p>The admin page needs the admin role.</p>'; return; }
  const [st, ref, nodes] = await Promise.all([api('/teachfile/status'), api('/teachfile/refusals?limit=20'), api(`${API}/nodes`)]);
  const counters = st.counters || {};
  const rows = [];
  Object.entries(counters).forEach(([k, v]) => {
    if (v && typeof v === 'object') Object.entries(v).forEach(([r, n]) => rows.push([`${k}: ${r}`, n]));
    else rows.push([k, v]);
  });
  main.innerHTML = `<section class="admin"><h1>Node</h1>
    <p>Key fingerprint <code id="fingerprint">${esc(st.key_fingerprint || '')}</code> · key check ${esc(st.key_check?.state || 'n/a')} · profile ${esc(st.profile?.name || '')} ${esc(st.profile?.version || '')} · Orthanc ${esc(st.orthanc_version || '')} · up ${esc(Math.round(st.uptime_seconds || 0))} s</p>
    <h2>Counters</h2><table class="counters">${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('')}</table>
    <h2>Last refusals</h2><table class="refusals"><tr><th>When</th><th>Origin</th><th>Reason</th><th>Why</th></tr>
    ${ref.refusals.map((r) => `<tr><td>${esc(r.time || r.when || '')}</td><td>${esc(r.origin)} ${esc(r.calling_aet || '')}</td><td>${esc(r.reason)}</td><td>${esc(r.detail || r.explanation || '')}</td></tr>`).join('') || '<tr><td colspan="4" class="muted">none</td></tr>'}</table>
    <h2>Nodes</h2><table class="nodes">${nodes.nodes.map((n) => `<tr><td>${esc(n.name)}</td><td>${esc(n.aet)}</td><td>${esc(n.host)}:${esc(n.port)}</td><td class="echo" data-node="${esc(n.name)}">…</td></tr>`).join('') || '<tr><td class="muted">no configured node</td></tr>'}</table></section>`;
  main.querySelectorAll('td.echo').forEach(async (td) => {
    try { const r = await api(`${API}/nodes/${encodeURIComponent(td.dataset.node)}/echo`, { method: 'POST', body: '{}' }); td.textContent = r.ok ? `echo ok, ${r.ms} ms` : 'no answer'; td.className = r.ok ? 'echo ok' : 'echo bad'; } catch (e) { td.textContent = e.message; }
  });
}

// -- what did the node change? --------------------------------------------------------------
// A participant drops a DICOM file; POST /teachfile/explain answers what reception would do
// with it (nothing is stored or logged). The "before" column is the participant's own file.
async function showExplain() {
  if (!me.may_author) { main.innerHTML = '<p class="bad">Explaining a file needs the contributor role.</p>'; return; }
  main.innerHTML = `
    <section class="explain">
      <h1>What did the node change?</h1>
      <p>Drop a DICOM file (or choose one): the node answers what it would store, attribute by
      attribute, and which rule chose each action. Nothing is stored.</p>
      <label class="drop" id="drop">Drop a DICOM file here, or <input type="file" id="explainfile"></label>
      <label><input type="checkbox" id="changedonly" checked> only what changes</label>
      <div id="explainout"></div>
    </section>`;
  const out = document.getElementById('explainout');
  let answer = null;
  const render = () => {
    if (!answer) return;
    const only = document.getElementById('changedonly').checked;
    const rows = answer.attributes.filter((r) => !only || r.changed);
    const ts = answer.transfer_syntax || {};
    out.innerHTML = `
      <p id="explain-decision" class="${answer.decision === 'store' ? '' : 'bad'}">Decision: <b>${esc(answer.decision)}</b>
        ${answer.reason ? `(${esc(answer.reason)}${answer.detail ? `: ${esc(answer.detail)}` : ''})` : ''}</p>
      <p>Transfer syntax: ${esc(ts.before)} → ${esc(ts.after)} ${answer.transcode_reason ? `(${esc(answer.transcode_reason)})` : ''}
        ${answer.pixels ? `· pixels: ${esc(answer.pixels.action)} (${esc(answer.pixels.reason)})` : ''}</p>
      <table class="explain-table"><thead><tr><th>attribute</th><th>tag</th><th>action</th><th>rule</th><th>before</th><th>after</th></tr></thead>
      <tbody>${rows.map((r) => `<tr><td>${esc(r.path)}</td><td>${esc(r.tag)}</td><td>${esc(r.action)}</td>
        <td title="${esc(r.rule_text)}">${esc(r.rule)}</td><td>${esc(r.before ?? '–')}</td><td>${esc(r.after ?? '–')}</td></tr>`).join('')}</tbody></table>`;
  };
  const send = async (file) => {
    out.textContent = 'Asking the node…';
    const r = await fetch('/teachfile/explain', { method: 'POST', body: await file.arrayBuffer(), headers: { 'Content-Type': 'application/dicom' } });
    const body = await r.json().catch(() => null);
    if (!r.ok) { out.innerHTML = `<p class="bad">${esc(body?.error || `HTTP ${r.status}`)}</p>`; return; }
    answer = body; render();
  };
  document.getElementById('explainfile').onchange = (e) => { if (e.target.files[0]) send(e.target.files[0]); };
  document.getElementById('changedonly').onchange = render;
  const drop = document.getElementById('drop');
  drop.ondragover = (e) => { e.preventDefault(); };
  drop.ondrop = (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); };
}

// -- router --------------------------------------------------------------------------------
async function route() {
  const { parts, params } = parseHash();
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === parts[0]));
  if (viewer && parts[0] !== 'case' && parts[0] !== 'present') { viewer.destroy(); viewer = null; }
  try {
    if (parts[0] === 'case' && parts[1]) await showCase(parts[1], params);
    else if (parts[0] === 'conferences') await showConferences();
    else if (parts[0] === 'present') await showPresent(parts[1], Number(parts[2] || 0));
    else if (parts[0] === 'quiz') await showQuiz(params);
    else if (parts[0] === 'admin') await showAdmin();
    else if (parts[0] === 'explain') await showExplain();
    else await showLibrary(params);
  } catch (e) {
    main.innerHTML = `<p class="bad">${esc(e.message)}</p>`;
  }
  document.body.dataset.ready = parts[0];
}

let lastRoute = '';
// What makes a new page: the path and the parameters, except the viewer's position.
function routeKey() {
  const { parts, params } = parseHash();
  params.delete('series'); params.delete('frame');
  return `${parts.join('/')}?${params}`;
}
window.addEventListener('hashchange', () => {
  // A frame change rewrites the fragment without a new page: only a new path re-renders.
  const key = routeKey();
  if (key === lastRoute) return;
  lastRoute = key;
  route();
});

(async () => {
  me = await api(`${API}/me`).catch(() => me);
  document.getElementById('whoami').textContent = `${me.user || ''} · ${me.role}`;
  document.getElementById('nav-admin').hidden = !me.may_admin;
  document.getElementById('nav-explain').hidden = !me.may_author;
  lastRoute = routeKey();
  route();
})();
