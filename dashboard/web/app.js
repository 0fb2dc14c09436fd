// Peonify dashboard. Plain JavaScript, no dependencies.
//
// Task data (IDs, types, payloads, errors) comes from producers and is never
// trusted: it only ever reaches the page through textContent, text nodes and
// data-* attributes, never through innerHTML. The Content-Security-Policy
// forbids inline scripts on top of that.
'use strict';

(function () {
  const TOKEN_KEY = 'peonify-dashboard-token';
  const HISTORY = 120; // snapshots kept for the chart
  const STATES = ['waiting', 'pending', 'scheduled', 'running', 'dead', 'cancelled', 'done'];
  const WHEN = {waiting: 'Enqueued', pending: 'Enqueued', scheduled: 'Runs at', running: 'Lease until', dead: 'Died', cancelled: 'Cancelled', done: 'Finished'};
  // States of tasks that can still be cancelled.
  const CANCELLABLE = new Set(['waiting', 'pending', 'scheduled', 'running']);

  const state = {
    token: null,
    session: null,
    history: [], // {at, succeeded, failed}
    stores: new Map(), // name -> store panel state
    events: null, // AbortController of the /events stream
    noticeTimer: 0,
  };

  // ---- DOM helpers -------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  // el builds an element. Children that are not nodes become text nodes.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'data') Object.assign(e.dataset, v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function fill(tbody, rows, cols, emptyText) {
    if (rows.length === 0) {
      tbody.replaceChildren(el('tr', null, el('td', {class: 'empty', colspan: cols}, emptyText)));
    } else {
      tbody.replaceChildren(...rows);
    }
  }

  function fmtInt(n) { return Number(n || 0).toLocaleString('en-US'); }

  function fmtMs(ms) {
    if (!(ms > 0)) return '0';
    if (ms < 1) return Math.round(ms * 1000) + ' µs';
    if (ms < 100) return ms.toFixed(ms < 10 ? 2 : 1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    const m = Math.floor(ms / 60000);
    if (m < 60) return m + 'm ' + Math.floor((ms % 60000) / 1000) + 's';
    return Math.floor(m / 60) + 'h ' + (m % 60) + 'm';
  }

  function fmtRate(r) { return r < 10 ? r.toFixed(1) : fmtInt(Math.round(r)); }

  function fmtWhen(iso) {
    if (!iso) return '';
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const d = t - Date.now();
    return d >= 0 ? 'in ' + fmtMs(d) : fmtMs(-d) + ' ago';
  }

  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('error', !!isError);
    n.hidden = false;
    clearTimeout(state.noticeTimer);
    state.noticeTimer = setTimeout(() => { n.hidden = true; }, isError ? 10000 : 4000);
  }

  function setStatus(s, title) {
    const e = $('status');
    e.dataset.state = s;
    e.textContent = s;
    e.title = title || '';
  }

  // ---- API ---------------------------------------------------------------

  function headers(extra) {
    const h = Object.assign({Accept: 'application/json'}, extra || {});
    if (state.token) h.Authorization = 'Bearer ' + state.token;
    return h;
  }

  async function api(method, path, body, retried) {
    const opts = {method, headers: headers(), cache: 'no-store', credentials: 'same-origin'};
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    if (method !== 'GET' && state.session && state.session.csrf) {
      opts.headers['X-CSRF-Token'] = state.session.csrf;
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (res.ok) return data;
    if (res.status === 403 && data && data.code === 'csrf' && !retried) {
      // The token came from another server process: get a new one.
      if (await loadSession()) return api(method, path, body, true);
    }
    if (res.status === 401) showSignIn(true, res.headers.get('WWW-Authenticate'));
    const err = new Error((data && data.error) || 'HTTP ' + res.status);
    err.status = res.status;
    throw err;
  }

  function storePath(name, rest) { return 'api/stores/' + encodeURIComponent(name) + '/' + rest; }

  // ---- Sign-in -----------------------------------------------------------

  function readTokenFromHash() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1].replace(/\+/g, ' ')));
      history.replaceState(null, '', location.pathname + location.search);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
  }

  // showSignIn shows the sign-in form for the schemes the server offers
  // in its WWW-Authenticate challenge.
  function showSignIn(rejected, challenge) {
    if (state.events) state.events.abort();
    setStatus('signed out');
    const c = challenge || 'Bearer';
    const token = /bearer/i.test(c);
    $('signin').hidden = false;
    $('signin-token').hidden = !token;
    $('signin-basic').hidden = !/basic/i.test(c);
    if (rejected && state.token) notice('The token was not accepted.', true);
    if (token) $('token-input').focus();
  }

  // loadSession reads api/session; it returns false when signing in is
  // needed.
  async function loadSession() {
    const res = await fetch('api/session', {headers: headers(), cache: 'no-store', credentials: 'same-origin'});
    if (res.status === 401) {
      showSignIn(true, res.headers.get('WWW-Authenticate'));
      return false;
    }
    if (!res.ok) throw new Error('api/session: HTTP ' + res.status);
    state.session = await res.json();
    return true;
  }

  async function start() {
    let ok;
    try {
      ok = await loadSession();
    } catch (e) {
      setStatus('error', e.message);
      setTimeout(start, 3000);
      return;
    }
    if (!ok) return;
    $('signin').hidden = true;
    $('signout').hidden = !state.token;
    $('processor').hidden = !state.session.processor;
    for (const name of state.session.stores) ensureStore(name);
    streamEvents();
  }

  // ---- Live updates ------------------------------------------------------

  // streamEvents reads the server-sent events of /events with fetch, which
  // unlike EventSource can send the Authorization header, and reconnects
  // when the stream ends.
  async function streamEvents() {
    if (state.events) state.events.abort();
    const ctl = new AbortController();
    state.events = ctl;
    while (!ctl.signal.aborted) {
      try {
        const res = await fetch('events', {
          headers: headers({Accept: 'text/event-stream'}),
          cache: 'no-store',
          credentials: 'same-origin',
          signal: ctl.signal,
        });
        if (res.status === 401) { showSignIn(true, res.headers.get('WWW-Authenticate')); return; }
        if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
        setStatus('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            onEvent(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      setStatus('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  function onEvent(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (name === 'snapshot' && data.length > 0) render(JSON.parse(data.join('\n')));
  }

  function render(s) {
    $('updated').textContent = new Date(s.at).toLocaleTimeString();
    $('updated').dateTime = new Date(s.at).toISOString();
    if (s.processor) renderProcessor(s.at, s.processor);
    for (const v of s.stores || []) renderStore(v);
  }

  // ---- Processor ---------------------------------------------------------

  function renderProcessor(at, p) {
    const h = state.history;
    if (h.length === 0 || h[h.length - 1].at < at) {
      h.push({at, succeeded: p.succeeded, failed: p.failed});
      if (h.length > HISTORY) h.shift();
    }
    const back = h[Math.max(0, h.length - 6)];
    const last = h[h.length - 1];
    const dt = (last.at - back.at) / 1000;
    const rate = dt > 0 ? Math.max(0, (last.succeeded + last.failed - back.succeeded - back.failed) / dt) : 0;
    $('stat-rate').textContent = fmtRate(rate);
    $('stat-succeeded').textContent = fmtInt(p.succeeded);
    $('stat-failed').textContent = fmtInt(p.failed);
    $('stat-retried').textContent = fmtInt(p.retried);
    $('stat-dead').textContent = fmtInt(p.dead);
    $('stat-cancelled').textContent = fmtInt(p.cancelled);
    $('stat-running').textContent = fmtInt(p.running);
    $('stat-workers').textContent = fmtInt(p.workers);
    $('stat-queued').textContent = fmtInt(p.queueDepth);
    drawChart();

    fill($('types').tBodies[0], (p.types || []).map((t) => el('tr', null,
      el('td', null, t.type === '' ? '(no handler)' : t.type),
      el('td', {class: 'num'}, fmtInt(t.succeeded)),
      el('td', {class: 'num'}, fmtInt(t.failed)),
      el('td', {class: 'num'}, fmtMs(t.avgMs)),
      el('td', {class: 'num', title: 'upper bound of the histogram bucket'}, '≤ ' + fmtMs(t.p50Ms)),
      el('td', {class: 'num', title: 'upper bound of the histogram bucket'}, '≤ ' + fmtMs(t.p99Ms)),
    )), 6, 'No task has run yet.');

    const running = (p.inFlight || []).map((f) => el('tr', null,
      el('td', {class: 'id'}, f.id),
      el('td', null, f.type),
      el('td', null, f.stream),
      el('td', {class: 'num'}, f.attempt),
      el('td', {class: 'num'}, fmtMs(f.runningMs)),
    ));
    if (p.running > running.length) {
      running.push(el('tr', null, el('td', {class: 'empty', colspan: 5}, 'and ' + fmtInt(p.running - running.length) + ' more')));
    }
    fill($('inflight').tBodies[0], running, 5, 'Idle.');

    fill($('streams').tBodies[0], (p.streams || []).map((s) => el('tr', null,
      el('td', null, s.name),
      el('td', {class: 'num'}, s.weight),
      el('td', {class: 'num'}, fmtInt(s.polls)),
      el('td', {class: 'num'}, fmtInt(s.polled)),
      el('td', {class: 'num'}, fmtInt(s.pollErrors)),
      el('td', null, s.backingOff ? el('span', {class: 'badge backoff'}, 'backing off') : el('span', {class: 'badge'}, 'ok')),
      el('td', {class: 'err'}, s.lastError || ''),
    )), 7, 'No streams.');
  }

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function drawChart() {
    const c = $('chart');
    const w = c.clientWidth;
    const hgt = c.clientHeight;
    if (w === 0 || hgt === 0) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);

    const h = state.history;
    const ok = [];
    const bad = [];
    for (let i = 1; i < h.length; i++) {
      const dt = (h[i].at - h[i - 1].at) / 1000;
      if (dt <= 0) continue;
      ok.push(Math.max(0, h[i].succeeded - h[i - 1].succeeded) / dt);
      bad.push(Math.max(0, h[i].failed - h[i - 1].failed) / dt);
    }
    let top = Math.max(1, ...ok, ...bad);
    const mag = Math.pow(10, Math.floor(Math.log10(top)));
    top = Math.ceil(top / mag) * mag;
    $('chart-max').textContent = 'scale: ' + fmtInt(top) + ' tasks/s';

    const pad = 6;
    const y = (v) => hgt - pad - (v / top) * (hgt - 2 * pad);
    const step = (w - 2 * pad) / (HISTORY - 2);
    g.strokeStyle = cssVar('--line');
    g.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      g.beginPath();
      g.moveTo(pad, Math.round(y(top * f)) + 0.5);
      g.lineTo(w - pad, Math.round(y(top * f)) + 0.5);
      g.stroke();
    }
    const line = (vals, color) => {
      if (vals.length === 0) return;
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      const x0 = w - pad - (vals.length - 1) * step;
      vals.forEach((v, i) => {
        const x = x0 + i * step;
        if (i === 0) g.moveTo(x, y(v)); else g.lineTo(x, y(v));
      });
      g.stroke();
    };
    line(ok, cssVar('--ok'));
    line(bad, cssVar('--bad'));
  }

  // ---- Stores ------------------------------------------------------------

  function ensureStore(name) {
    if (state.stores.has(name)) return state.stores.get(name);
    const st = {name, tab: 'dead', countsKey: '', next: '', loading: false, dirty: false, counts: {}, tracks: false, workflows: false};
    const canMutate = state.session && state.session.canMutate;

    st.badge = el('span', {class: 'badge paused', hidden: true}, 'paused');
    st.pauseBtn = el('button', {class: 'btn ghost small', type: 'button', hidden: true, data: {action: 'pause'},
      on: {click: () => act(st, st.paused ? 'resume' : 'pause', undefined, st.pauseBtn)}});
    st.error = el('p', {class: 'store-error', hidden: true});
    st.countEls = {};
    const counts = el('div', {class: 'counts', role: 'tablist'});
    for (const s of STATES) {
      const n = el('span', {class: 'n'}, '0');
      const b = el('button', {class: 'count ' + s, type: 'button', role: 'tab', data: {state: s}, 'aria-pressed': s === st.tab ? 'true' : 'false',
        on: {click: () => selectTab(st, s)}}, n, el('span', {class: 'label'}, s));
      st.countEls[s] = {button: b, n};
      counts.append(b);
    }
    st.retryAll = el('button', {class: 'btn small', type: 'button', hidden: !canMutate, data: {action: 'retry-all'},
      on: {click: () => confirm('Retry every dead task of ' + name + '?') && act(st, 'retry', {all: true}, st.retryAll)}}, 'Retry all dead');
    st.deleteAll = el('button', {class: 'btn danger small', type: 'button', hidden: !canMutate, data: {action: 'delete-all'},
      on: {click: () => confirm('Delete every dead task of ' + name + '? This cannot be undone.') && act(st, 'delete', {all: true}, st.deleteAll)}}, 'Delete all dead');
    st.key = ''; // the key the task list is filtered by, if any
    st.keyChip = el('button', {class: 'btn ghost small keychip', type: 'button', hidden: true, title: 'Show the tasks of every key',
      on: {click: () => filterKey(st, '')}});
    st.limitsBody = el('tbody');
    st.limitsError = el('p', {class: 'store-error', hidden: true});
    st.limits = el('div', {class: 'limits', hidden: true},
      el('h3', null, 'Limits'),
      st.limitsError,
      el('table', {class: 'limits'},
        el('thead', null, el('tr', null,
          el('th', null, 'Limit'), el('th', {class: 'num'}, 'In use'), el('th', {class: 'num'}, 'Waiting'),
          el('th', null, 'Busiest keys (in use / waiting)'))),
        st.limitsBody));
    st.whenTh = el('th', null, WHEN[st.tab]);
    st.tbody = el('tbody');
    st.more = el('button', {class: 'btn ghost small', type: 'button', hidden: true, on: {click: () => loadTasks(st, true)}}, 'Load more');
    st.root = el('section', {class: 'panel store', data: {store: name}},
      el('h2', null, el('span', {class: 'kind'}, 'Store'), el('span', null, name), st.badge, st.pauseBtn),
      st.error,
      st.limits,
      counts,
      el('div', {class: 'toolbar'}, el('span', {class: 'hint'}, 'Click a task ID to see all of it.'), st.keyChip, el('span', {class: 'spacer'}), st.retryAll, st.deleteAll),
      el('div', {class: 'scroll'}, el('table', {class: 'tasks'},
        el('thead', null, el('tr', null,
          el('th', null, 'Task'), el('th', null, 'Type'), el('th', {class: 'num'}, 'Attempts'), st.whenTh,
          el('th', null, 'Last error'), el('th', null, 'Payload'), el('th', null, ''))),
        st.tbody)),
      st.more);
    $('stores').append(st.root);
    state.stores.set(name, st);
    loadTasks(st, false);
    return st;
  }

  function selectTab(st, s) {
    st.tab = s;
    for (const [k, v] of Object.entries(st.countEls)) v.button.setAttribute('aria-pressed', k === s ? 'true' : 'false');
    st.whenTh.textContent = WHEN[s];
    const dead = s === 'dead';
    const canMutate = state.session && state.session.canMutate;
    st.retryAll.hidden = !canMutate || !dead;
    st.deleteAll.hidden = !canMutate || !dead;
    loadTasks(st, false);
  }

  function renderStore(v) {
    const st = ensureStore(v.name);
    for (const s of STATES) st.countEls[s].n.textContent = fmtInt(v.counts[s]);
    st.error.hidden = !v.error;
    st.error.textContent = v.error ? 'Cannot read the store: ' + v.error : '';
    st.paused = v.paused;
    st.tracks = !!v.tracks;
    st.workflows = !!v.workflows;
    st.badge.hidden = !v.paused;
    st.pauseBtn.hidden = !v.pausable || !(state.session && state.session.canMutate);
    st.pauseBtn.textContent = v.paused ? 'Resume' : 'Pause';
    st.pauseBtn.dataset.action = v.paused ? 'resume' : 'pause';
    renderLimits(st, v);
    const key = JSON.stringify(v.counts);
    if (key !== st.countsKey) {
      st.countsKey = key;
      loadTasks(st, false);
    } else if (st.tab === 'running' && st.tracks && !st.paged && v.counts.running > 0) {
      // Running tasks report progress without changing the counts: keep
      // their bars current, unless more pages were loaded.
      loadTasks(st, false);
    }
  }

  // renderLimits shows the store's flow-control limits: each one's tasks
  // in use and waiting, and its busiest keys, which filter the task list
  // when clicked.
  function renderLimits(st, v) {
    const limits = v.limits || [];
    // Rows are rebuilt only when something in them changed: a rebuild
    // between a key button's mousedown and mouseup loses the click.
    const shown = JSON.stringify([limits, v.limitsError || '']);
    if (shown === st.limitsShown) return;
    st.limitsShown = shown;
    st.limits.hidden = limits.length === 0 && !v.limitsError;
    st.limitsError.hidden = !v.limitsError;
    st.limitsError.textContent = v.limitsError ? 'Cannot read the limits: ' + v.limitsError : '';
    const rows = limits.map((l) => {
      const keys = el('td', {class: 'keys'});
      for (const k of l.keys || []) {
        const b = el('button', {class: 'btn ghost small key', type: 'button', data: {key: k.key}, title: 'List the tasks of key ' + k.key,
          on: {click: () => filterKey(st, k.key)}}, k.key + ' ' + fmtInt(k.inUse) + ' / ' + fmtInt(k.waiting));
        keys.append(b, ' ');
      }
      return el('tr', {data: {limit: l.name}},
        el('td', {class: 'name'}, l.name),
        el('td', {class: 'num inuse'}, fmtInt(l.inUse)),
        el('td', {class: 'num waiting'}, fmtInt(l.waiting)),
        keys);
    });
    fill(st.limitsBody, rows, 4, 'No limits.');
  }

  // filterKey lists only the tasks of key (all tasks with '').
  function filterKey(st, key) {
    st.key = key;
    st.keyChip.hidden = !key;
    st.keyChip.textContent = key ? 'key: ' + key + ' \u2715' : '';
    loadTasks(st, false);
  }

  // loadTasks lists the selected state's tasks: the first page, or with
  // more the next one. A change while a request runs reloads after it.
  async function loadTasks(st, more) {
    if (st.loading) { st.dirty = true; return; }
    st.loading = true;
    const tab = st.tab;
    try {
      let q = '?state=' + encodeURIComponent(tab);
      if (st.key) q += '&key=' + encodeURIComponent(st.key);
      if (more && st.next) q += '&after=' + encodeURIComponent(st.next);
      const page = await api('GET', storePath(st.name, 'tasks' + q));
      if (tab === st.tab) {
        st.paged = more;
        const rows = page.tasks.map((t) => taskRow(st, t));
        if (more) st.tbody.append(...rows);
        else fill(st.tbody, rows, 7, 'No ' + tab + ' tasks' + (st.key ? ' of key ' + st.key : '') + '.');
        st.next = page.next || '';
        st.more.hidden = !st.next;
      }
    } catch (e) {
      if (e.status !== 401) fill(st.tbody, [], 7, 'Cannot list tasks: ' + e.message);
    } finally {
      st.loading = false;
      if (st.dirty) { st.dirty = false; loadTasks(st, false); }
    }
  }

  // progressBar shows a task's reported progress: a bar, its percentage and
  // its message.
  function progressBar(p) {
    const pct = Math.floor(Math.max(0, Math.min(1, p.fraction || 0)) * 100);
    return el('span', {class: 'progress', data: {fraction: String(p.fraction || 0)}},
      el('progress', {max: '100', value: String(pct)}, pct + '%'),
      el('span', {class: 'pct'}, pct + '%'),
      p.message ? el('span', {class: 'msg'}, p.message) : null);
  }

  // cancelButton is the Cancel button of a task that has not finished, for
  // those who may change the store.
  function cancelButton(st, t, after) {
    if (!(state.session && state.session.canMutate) || !st.tracks || !CANCELLABLE.has(t.state)) return null;
    const b = el('button', {class: 'btn danger small', type: 'button', data: {action: 'cancel', id: t.id}}, 'Cancel');
    b.addEventListener('click', () => confirm('Cancel task ' + t.id + '?') && act(st, 'cancel', {ids: [t.id]}, b).then(after));
    return b;
  }

  // workflowLink opens the view of a task's workflow.
  function workflowLink(st, wf, label) {
    const a = el('a', {href: '#', class: 'wflink', data: {workflow: wf}, title: 'Show workflow ' + wf}, label || 'workflow ' + wf);
    a.addEventListener('click', (ev) => { ev.preventDefault(); showWorkflow(st, wf); });
    return a;
  }

  function taskRow(st, t) {
    const when = {waiting: t.enqueuedAt, pending: t.enqueuedAt, scheduled: t.runAt, running: t.leaseUntil, dead: t.updatedAt, cancelled: t.updatedAt, done: t.updatedAt}[t.state];
    let payload;
    if (t.payloadHidden) payload = el('span', {class: 'hint'}, 'hidden (' + fmtInt(t.payloadSize) + ' bytes)');
    else payload = el('code', null, t.payload + (t.payloadTruncated ? ' …' : ''));
    const canMutate = state.session && state.session.canMutate;
    const actions = el('td', {class: 'actions'});
    if (canMutate && t.state === 'dead') {
      const retry = el('button', {class: 'btn small', type: 'button', data: {action: 'retry', id: t.id}}, 'Retry');
      retry.addEventListener('click', () => act(st, 'retry', {ids: [t.id]}, retry));
      actions.append(retry, ' ');
    }
    const cancel = cancelButton(st, t);
    if (cancel) actions.append(cancel, ' ');
    if (canMutate && t.state !== 'running') {
      const del = el('button', {class: 'btn danger small', type: 'button', data: {action: 'delete', id: t.id}}, 'Delete');
      del.addEventListener('click', () => confirm('Delete task ' + t.id + '?') && act(st, 'delete', {ids: [t.id]}, del));
      actions.append(del);
    }
    const idLink = el('a', {href: '#', data: {id: t.id}}, t.id);
    idLink.addEventListener('click', (ev) => { ev.preventDefault(); showTask(st, t.id); });
    return el('tr', {data: {id: t.id}},
      el('td', {class: 'id'}, idLink),
      el('td', {class: 'type'}, t.type, t.key ? el('span', {class: 'taskkey', title: 'key'}, t.key) : null,
        t.workflow && st.workflows ? el('span', {class: 'taskwf'}, workflowLink(st, t.workflow)) : null,
        t.progress && t.state === 'running' ? progressBar(t.progress) : null),
      el('td', {class: 'num'}, t.attempts + (t.maxAttempts ? ' / ' + t.maxAttempts : '')),
      el('td', {title: when || ''}, fmtWhen(when)),
      el('td', {class: 'err'}, t.lastError || ''),
      el('td', {class: 'payload'}, payload),
      actions);
  }

  // openDialog shows dlg as the one dialog of the page, closing another.
  function openDialog(dlg) {
    for (const d of document.querySelectorAll('dialog')) d.close();
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
  }

  async function showTask(st, id) {
    let t;
    try {
      t = await api('GET', storePath(st.name, 'tasks/' + encodeURIComponent(id)));
    } catch (e) {
      notice(e.message, true);
      return;
    }
    const rows = [
      ['ID', t.id], ['Type', t.type], ['Key', t.key || ''], ['State', t.state], ['Attempts', String(t.attempts)],
      ['Enqueued', t.enqueuedAt || ''], ['Runs at', t.runAt || ''], ['Updated', t.updatedAt || ''],
    ].filter((r) => r[1] !== '');
    if (t.workflow) rows.push(['Workflow', st.workflows ? workflowLink(st, t.workflow, t.workflow) : t.workflow]);
    if (t.parents && t.parents.length) rows.push(['Parents', t.parents.join(', ') + (t.allowFailedParents ? ' (runs even if they fail)' : '')]);
    if (t.progress) rows.push(['Progress', progressBar(t.progress)]);
    let result = null;
    if (t.hasResult) {
      const what = 'Result (' + fmtInt(t.resultSize) + ' bytes' + (t.resultBinary ? ', not UTF-8' : '') + ')';
      result = [el('h3', null, what),
        t.resultHidden ? el('p', {class: 'hint'}, 'Hidden for this task type.')
          : el('pre', {class: 'result'}, prettyJSON(t.result) + (t.resultTruncated ? '\n…' : ''))];
    }
    const close = el('button', {class: 'btn', type: 'button'}, 'Close');
    const dlg = el('dialog', {class: 'task', data: {id: t.id}},
      el('h2', null, 'Task ', el('code', null, t.id)),
      el('table', null, el('tbody', null, ...rows.map((r) => el('tr', null, el('th', null, r[0]), el('td', null, r[1]))))),
      t.lastError ? el('h3', null, 'Last error') : null,
      t.lastError ? el('pre', null, t.lastError) : null,
      ...(result || []),
      t.headers ? el('h3', null, 'Headers') : null,
      t.headers ? el('pre', null, Object.entries(t.headers).map(([k, v]) => k + ': ' + v).join('\n')) : null,
      el('h3', null, 'Payload (' + fmtInt(t.payloadSize) + ' bytes' + (t.binary ? ', not UTF-8' : '') + ')'),
      t.payloadHidden ? el('p', {class: 'hint'}, 'Hidden for this task type.') : el('pre', null, prettyJSON(t.payload) + (t.payloadTruncated ? '\n…' : '')),
      el('div', {class: 'dialog-actions'}, cancelButton(st, t, () => showTask(st, t.id)), close));
    close.addEventListener('click', () => dlg.close());
    openDialog(dlg);
  }

  // showWorkflow shows a workflow: its state, its tasks' counts by state,
  // and its tasks with their states and parents; a task's ID opens it.
  async function showWorkflow(st, id) {
    let w;
    try {
      w = await api('GET', storePath(st.name, 'workflows/' + encodeURIComponent(id)));
    } catch (e) {
      notice(e.message, true);
      return;
    }
    const counts = el('div', {class: 'wfcounts'});
    for (const s of STATES) {
      if (w.counts[s]) counts.append(el('span', {class: 'badge state-' + s, data: {state: s}}, fmtInt(w.counts[s]) + ' ' + s), ' ');
    }
    const rows = (w.tasks || []).map((t) => {
      const link = el('a', {href: '#', data: {id: t.id}}, t.id);
      link.addEventListener('click', (ev) => { ev.preventDefault(); showTask(st, t.id); });
      return el('tr', {data: {id: t.id, state: t.state}},
        el('td', {class: 'id'}, link),
        el('td', null, t.type),
        el('td', {class: 'state'}, el('span', {class: 'badge state-' + t.state}, t.state)),
        el('td', {class: 'id parents'}, (t.parents || []).join(', ') + (t.allowFailedParents ? ' (any outcome)' : '')),
        el('td', null, t.progress && t.state === 'running' ? progressBar(t.progress) : ''),
        el('td', {class: 'err'}, t.lastError || ''));
    });
    const tbody = el('tbody');
    fill(tbody, rows, 6, 'No tasks.');
    const canMutate = state.session && state.session.canMutate;
    let cancel = null;
    if (canMutate && w.state === 'running') {
      cancel = el('button', {class: 'btn danger', type: 'button', data: {action: 'cancel-workflow', workflow: w.id}}, 'Cancel workflow');
      cancel.addEventListener('click', () => confirm('Cancel every unfinished task of workflow ' + w.id + '?') &&
        act(st, 'workflows/' + encodeURIComponent(w.id) + '/cancel', undefined, cancel).then(() => showWorkflow(st, w.id)));
    }
    const close = el('button', {class: 'btn', type: 'button'}, 'Close');
    close.addEventListener('click', () => dlg.close());
    const info = [['State', el('span', {class: 'badge wfstate state-' + w.state}, w.state)], ['Tasks', fmtInt(w.total)],
      ['Created', w.createdAt || ''], ['Updated', w.updatedAt || '']].filter((r) => r[1] !== '');
    const dlg = el('dialog', {class: 'workflow', data: {workflow: w.id}},
      el('h2', null, 'Workflow ', el('code', null, w.id)),
      el('table', null, el('tbody', null, ...info.map((r) => el('tr', null, el('th', null, r[0]), el('td', null, r[1]))))),
      counts,
      el('div', {class: 'scroll'}, el('table', {class: 'wftasks'},
        el('thead', null, el('tr', null, el('th', null, 'Task'), el('th', null, 'Type'), el('th', null, 'State'),
          el('th', null, 'Parents'), el('th', null, 'Progress'), el('th', null, 'Last error'))),
        tbody)),
      w.total > (w.tasks || []).length ? el('p', {class: 'hint'}, 'Showing the first ' + fmtInt(w.tasks.length) + ' tasks by ID.') : null,
      el('div', {class: 'dialog-actions'}, cancel, close));
    openDialog(dlg);
  }

  function prettyJSON(s) {
    try { return JSON.stringify(JSON.parse(s), null, 2); } catch (_) { return s; }
  }

  async function act(st, action, body, button) {
    if (button) button.disabled = true;
    try {
      const r = await api('POST', storePath(st.name, action), body);
      const n = r && typeof r.count === 'number' ? r.count : null;
      const wf = /^workflows\/(.*)\/cancel$/.exec(action);
      const done = {retry: 'Retried', delete: 'Deleted', pause: 'Paused', resume: 'Resumed', cancel: 'Cancelled'}[action] || 'Cancelled';
      const where = wf ? ' of workflow ' + decodeURIComponent(wf[1]) : ' in ' + st.name;
      notice(n === null ? done + ' ' + st.name + '.' : done + ' ' + fmtInt(n) + ' task' + (n === 1 ? '' : 's') + where + '.');
      if (action === 'pause' || action === 'resume') {
        st.paused = action === 'pause';
        st.badge.hidden = !st.paused;
        st.pauseBtn.textContent = st.paused ? 'Resume' : 'Pause';
        st.pauseBtn.dataset.action = st.paused ? 'resume' : 'pause';
      } else {
        loadTasks(st, false);
      }
    } catch (e) {
      notice(e.message, true);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- Start -------------------------------------------------------------

  function init() {
    readTokenFromHash();
    $('signin').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const tok = $('token-input').value.trim();
      if (!tok) return;
      state.token = tok;
      sessionStorage.setItem(TOKEN_KEY, tok);
      $('token-input').value = '';
      start();
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    window.addEventListener('resize', drawChart);
    start();
  }

  init();
})();
