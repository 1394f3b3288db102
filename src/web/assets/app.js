// troupe web app: a little plain JavaScript. Every text from the server is inserted with
// textContent, never as HTML.
(function () {
  'use strict';
  const $ = (sel) => document.querySelector(sel);
  const csrf = () => { const m = $('meta[name="csrf-token"]'); return m ? m.content : ''; };
  function post(url, body, json) {
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf(), 'Content-Type': json ? 'application/json' : 'application/x-www-form-urlencoded' },
      body: body,
    });
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  async function errorText(r) {
    const html = await r.text();
    const doc = new DOMParser().parseFromString(html, 'text/html');
    const p = doc.querySelector('.error');
    return p ? p.textContent : ('HTTP ' + r.status);
  }

  document.querySelectorAll('form.confirm').forEach((f) => f.addEventListener('submit', (e) => {
    if (!window.confirm(f.dataset.confirm || 'Are you sure?')) e.preventDefault();
  }));

  // New run: persona search and tag filter, estimate.
  const search = $('#persona-search');
  const tag = $('#persona-tag');
  function filterPersonas() {
    const q = search ? search.value.toLowerCase().trim() : '';
    const t = tag ? tag.value : '';
    document.querySelectorAll('#persona-list li').forEach((li) => {
      const ok = (!q || li.dataset.search.includes(q)) && (!t || li.dataset.tags.split(' ').includes(t));
      li.hidden = !ok;
    });
  }
  if (search) search.addEventListener('input', filterPersonas);
  if (tag) tag.addEventListener('change', filterPersonas);
  const estimate = $('#estimate');
  if (estimate) {
    estimate.addEventListener('click', async () => {
      const form = $('#new-run');
      const out = $('#estimate-out');
      out.hidden = false;
      out.textContent = 'Estimating…';
      const r = await post('/api/estimate', new URLSearchParams(new FormData(form)).toString());
      if (!r.ok) { out.textContent = 'Cannot estimate: ' + await errorText(r); return; }
      const e = await r.json();
      let text = e.calls + ' calls, ' + e.total_tokens + ' tokens (' + e.prompt_tokens + ' in, ' +
        e.completion_tokens + ' out), about $' + Number(e.cost_usd).toFixed(4);
      if (e.assumptions && e.assumptions.length) text += '\n' + e.assumptions.join('\n');
      out.textContent = text;
    });
  }

  // Live run: the transcript over server-sent events, metrics by polling.
  const live = $('#live');
  if (live) {
    const id = live.dataset.run;
    const list = $('#transcript');
    const progress = $('#progress');
    const label = $('#turn-label');
    const status = $('#status');
    const seen = new Set();
    const once = (ev) => { if (seen.has(ev.lastEventId)) return false; seen.add(ev.lastEventId); return true; };
    const note = (cls, text) => { list.appendChild(el('li', 'note ' + cls, text)); };
    const es = new EventSource('/runs/' + encodeURIComponent(id) + '/events');
    es.addEventListener('message', (ev) => {
      if (!once(ev)) return;
      const m = JSON.parse(ev.data);
      const li = el('li', 'msg');
      li.dataset.speaker = m.speaker_id;
      const meta = el('div', 'meta');
      meta.appendChild(el('span', 'turn', 'turn ' + m.turn));
      meta.appendChild(document.createTextNode(' '));
      meta.appendChild(el('strong', 'speaker', m.speaker));
      meta.appendChild(document.createTextNode(' '));
      meta.appendChild(el('span', 'role', m.role));
      if (m.to) meta.appendChild(document.createTextNode(' → ' + m.to));
      li.appendChild(meta);
      li.appendChild(el('p', 'text', m.text));
      list.appendChild(li);
      $('#m-messages').textContent = list.querySelectorAll('li.msg').length;
    });
    es.addEventListener('turn', (ev) => {
      if (!once(ev)) return;
      const t = JSON.parse(ev.data);
      progress.value = Math.max(0, t.turn - 1);
      label.textContent = 'turn ' + t.turn + ' of ' + t.of;
    });
    es.addEventListener('turn_end', (ev) => { if (once(ev)) progress.value = JSON.parse(ev.data).turn; });
    es.addEventListener('skipped', (ev) => { if (once(ev)) { const s = JSON.parse(ev.data); note('skip', 'turn ' + s.turn + ': ' + s.persona + ' skipped (' + s.reason + ')'); } });
    es.addEventListener('passed', (ev) => { if (once(ev)) { const s = JSON.parse(ev.data); note('pass', 'turn ' + s.turn + ': ' + s.persona + ' passes'); } });
    es.addEventListener('intervention', (ev) => { if (once(ev)) { const s = JSON.parse(ev.data); note('intervention', 'turn ' + s.turn + ': ' + s.description); } });
    es.addEventListener('retry', (ev) => { if (once(ev)) { const s = JSON.parse(ev.data); note('retry', s.persona + ' retries (attempt ' + s.attempt + '): ' + s.error); } });
    es.addEventListener('fallback', (ev) => { if (once(ev)) { const s = JSON.parse(ev.data); note('fallback', s.persona + ' falls back to ' + s.to); } });
    let timer = null;
    es.addEventListener('done', (ev) => {
      es.close();
      const d = JSON.parse(ev.data);
      status.textContent = d.success ? 'completed' : 'stopped';
      status.className = 'status ' + (d.success ? 'completed' : 'failed');
      if (d.error) note('error', d.error);
      $('#done-link').hidden = false;
      const c = $('#cancel-form');
      if (c) c.hidden = true;
      poll().finally(() => { if (timer) clearInterval(timer); });
    });
    async function poll() {
      const r = await fetch('/api/runs/' + encodeURIComponent(id) + '/metrics', { credentials: 'same-origin' });
      if (!r.ok) return;
      const p = await r.json();
      $('#m-elapsed').textContent = p.elapsed_s.toFixed(1) + ' s';
      const m = p.metrics;
      if (!m) return;
      $('#m-inflight').textContent = m.in_flight;
      $('#m-calls').textContent = m.api_calls;
      $('#m-lat').textContent = m.llm_latency.p50_ms.toFixed(0) + ' / ' + m.llm_latency.p99_ms.toFixed(0) + ' ms';
      $('#m-tokens').textContent = m.total_tokens + ' (' + m.prompt_tokens + ' in, ' + m.completion_tokens + ' out)';
      $('#m-cost').textContent = '$' + Number(m.cost_usd).toFixed(4);
      const kinds = Object.entries(m.errors_by_kind || {});
      $('#m-errors').textContent = kinds.length ? kinds.map(([k, v]) => k + ': ' + v).join(', ') : 'none';
      const h = $('#histogram');
      h.textContent = '';
      const buckets = m.latency_buckets || [];
      const max = Math.max(1, ...buckets.map((b) => b[1]));
      buckets.forEach((b) => {
        const col = el('div', 'bar');
        const fill = el('span', 'fill');
        fill.style.height = Math.round(100 * b[1] / max) + '%';
        col.title = '≤ ' + b[0] + ' ms: ' + b[1];
        col.appendChild(fill);
        col.appendChild(el('small', '', b[0] >= 1000 ? (b[0] / 1000) + 's' : b[0] + ''));
        h.appendChild(col);
      });
    }
    timer = setInterval(poll, 1000);
    poll();
  }

  // Persona builder: live validation.
  const pf = $('#persona-form');
  if (pf) {
    let t = null;
    const validate = async () => {
      const obj = {};
      new FormData(pf).forEach((v, k) => { if (k !== 'csrf') obj[k] = String(v); });
      const r = await post('/api/personas/validate', JSON.stringify(obj), true);
      if (!r.ok) return;
      const j = await r.json();
      const ul = $('#findings');
      ul.textContent = '';
      j.findings.forEach((f) => {
        const li = el('li', f.severity);
        li.appendChild(el('strong', '', f.severity));
        li.appendChild(document.createTextNode(' '));
        li.appendChild(el('code', '', f.field));
        li.appendChild(document.createTextNode(': ' + f.message + ' '));
        li.appendChild(el('span', 'hint', f.hint));
        ul.appendChild(li);
      });
      if (!j.findings.length) ul.appendChild(el('li', 'ok', 'No problems found.'));
      pf.dataset.valid = j.valid ? 'true' : 'false';
    };
    pf.addEventListener('input', () => { clearTimeout(t); t = setTimeout(validate, 250); });
  }
})();
