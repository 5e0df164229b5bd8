// trajkit view: the trajectory browser, pair view and tasks-across-rounds view.
// Plain JavaScript, no library. Every string that came from a trajectory is put into the page as
// a text node (append / textContent), never parsed as HTML.
(function () {
  'use strict';

  var IDX = window.TK_INDEX || { runs: [], trajs: [], pairs: [], note: '', tokens: false };
  var PAGE = 200;

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      var v = a[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    });
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }
  function add(node, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { add(node, k); }); return; }
    node.append(kid instanceof Node ? kid : String(kid));
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function $(id) { return document.getElementById(id); }
  function fmt(x) { return x === null || x === undefined ? '–' : (typeof x === 'number' ? String(Math.round(x * 1000) / 1000) : String(x)); }
  function okMark(ok) { return ok === true ? el('span', { class: 'ok', title: 'success' }, '✓') : ok === false ? el('span', { class: 'bad', title: 'failure' }, '✗') : el('span', { class: 'muted' }, '?'); }

  // --- detail files, loaded on demand by <script> (fetch() is refused on file://) -------------
  var pending = {}, loaded = {};
  window.TK_CHUNK = function (key, data) { if (pending[key]) pending[key].resolve(data); };
  function chunk(kind, no) {
    var key = kind + no;
    if (loaded[key]) return loaded[key];
    loaded[key] = new Promise(function (resolve, reject) {
      pending[key] = { resolve: resolve };
      var s = document.createElement('script');
      s.src = 'data/' + kind + '-' + String(no).padStart(4, '0') + '.js';
      s.onerror = function () { delete loaded[key]; reject(new Error('could not load ' + s.src)); };
      document.head.appendChild(s);
    });
    return loaded[key];
  }

  // --- tabs and links ---------------------------------------------------------------------------
  function showTab(name) {
    document.querySelectorAll('#tabs button').forEach(function (b) { b.classList.toggle('on', b.dataset.tab === name); });
    document.querySelectorAll('section.tab').forEach(function (s) { s.classList.toggle('on', s.id === name); });
  }
  document.querySelectorAll('#tabs button').forEach(function (b) {
    b.addEventListener('click', function () { showTab(b.dataset.tab); history.replaceState(null, '', '#' + b.dataset.tab); });
  });
  function route() {
    var h = decodeURIComponent(location.hash.slice(1));
    var m = /^([tpk])\/(.+)$/.exec(h);
    if (m && m[1] === 't' && IDX.trajs[+m[2]]) { showTab('trajectories'); showTraj(+m[2]); }
    else if (m && m[1] === 'p' && IDX.pairs[+m[2]]) { showTab('pairs'); showPair(+m[2]); }
    else if (m && m[1] === 'k') { showTab('tasks'); showTask(m[2]); }
    else if (['overview', 'trajectories', 'pairs', 'tasks'].indexOf(h) >= 0) showTab(h);
  }
  window.addEventListener('hashchange', route);

  // --- filters ------------------------------------------------------------------------------------
  function distinct(rows, key) {
    var seen = {};
    rows.forEach(function (r) { var v = r[key]; if (v !== null && v !== undefined && v !== '') seen[String(v)] = true; });
    return Object.keys(seen).sort(function (a, b) { return (+a - +b) || a.localeCompare(b); });
  }
  function filterBar(host, rows, fields, onChange) {
    var state = {};
    fields.forEach(function (f) {
      var values = f.values || distinct(rows, f.key);
      if (values.length < 2 && !f.always) return;
      var sel = el('select', { 'data-filter': f.key, onchange: function () { state[f.key] = sel.value; onChange(state); } },
        el('option', { value: '' }, 'all'), values.map(function (v) { return el('option', { value: v }, f.show ? f.show(v) : v); }));
      host.append(el('label', null, f.label + ' ', sel));
    });
    var search = el('input', { type: 'search', placeholder: 'task or id contains…', 'data-filter': 'q',
      oninput: function () { state.q = search.value.toLowerCase(); onChange(state); } });
    host.append(search);
    return state;
  }
  function matches(row, state) {
    return Object.keys(state).every(function (k) {
      var want = state[k];
      if (!want) return true;
      if (k === 'q') return (String(row.task) + ' ' + String(row.id || '')).toLowerCase().indexOf(want) >= 0;
      return String(row[k]) === want;
    });
  }

  // --- turns --------------------------------------------------------------------------------------
  function tokens(tok, vocab) {
    var box = el('div', { class: 'text tokens' });
    tok.ids.forEach(function (id, i) {
      var trained = tok.mask.charAt(i) === '1';
      box.append(el('span', { class: trained ? 'tk tr' : 'tk', title: 'id ' + id + (tok.sampled ? ' · sampled' : '') + (trained ? ' · trained' : ' · not trained') },
        vocab[String(id)] === undefined ? '⟨' + id + '⟩' : vocab[String(id)]));
    });
    return box;
  }
  function shot(s) {
    if (s.missing) return el('div', { class: 'shot missing' }, 'screenshot not found: ' + s.name);
    var frame = el('div', { class: 'shot' }, el('img', { src: s.src, alt: s.name, loading: 'lazy' }));
    if (s.box) {
      var b = el('div', { class: 'box', title: 'target box' });
      b.style.left = (100 * s.box[0]) + '%'; b.style.top = (100 * s.box[1]) + '%';
      b.style.width = (100 * (s.box[2] - s.box[0])) + '%'; b.style.height = (100 * (s.box[3] - s.box[1])) + '%';
      frame.append(b);
    }
    (s.marks || []).forEach(function (p) {
      var m = el('div', { class: 'mark', title: 'click at (' + p[0].toFixed(3) + ', ' + p[1].toFixed(3) + ')' });
      m.style.left = (100 * p[0]) + '%'; m.style.top = (100 * p[1]) + '%';
      frame.append(m);
    });
    return frame;
  }
  function turnNode(t, data, extraClass) {
    var text = data.strings[t.s];
    var head = el('div', { class: 'role' }, t.r + (t.rec ? ' → ' + t.rec : ''),
      t.r === 'agent' ? el('span', { class: 'muted' }, t.tok ? (t.tok.sampled ? ' · sampled ids' : ' · re-tokenized') : (t.n_ids ? ' · ' + t.n_ids + ' sampled ids' : '')) : null);
    var body;
    if (t.tok) body = tokens(t.tok, data.vocab);
    else body = el('div', { class: 'text' + (t.r === 'agent' && t.train ? ' tr' : '') }, text);
    return el('div', { class: 'turn ' + t.r + (extraClass ? ' ' + extraClass : '') }, head, body, (t.img || []).map(shot));
  }
  function legend() {
    return el('p', { class: 'legend muted' }, el('span', { class: 'tk tr' }, 'trained'), ' ',
      IDX.tokens ? 'tokens the loss mask trains when the episode is a training sample; hover a token for its id.'
        : 'turn-level: ' + IDX.note);
  }

  // --- trajectories -------------------------------------------------------------------------------
  var trajState, trajRows = [], trajShown = 0;
  function renderTrajList() {
    trajRows = IDX.trajs.filter(function (r) { return matches(r, trajState); });
    trajShown = 0;
    var table = clear($('traj-list'));
    table.append(el('thead', null, el('tr', null, ['stage', 'task', 'policy', 'split', 'family', 'ok', 'reward', 'steps'].map(function (h) { return el('th', null, h); }))));
    table.append(el('tbody'));
    $('traj-list').setAttribute('data-rows', String(trajRows.length));
    moreTraj();
  }
  function moreTraj() {
    var body = $('traj-list').querySelector('tbody');
    trajRows.slice(trajShown, trajShown + PAGE).forEach(function (r) {
      body.append(el('tr', { 'data-n': r.n, onclick: function () { location.hash = 't/' + r.n; } },
        el('td', null, r.stage), el('td', { class: 'task', title: r.task }, r.task), el('td', null, r.policy), el('td', null, r.split),
        el('td', null, r.family), el('td', null, okMark(r.ok)), el('td', null, fmt(r.reward)), el('td', null, fmt(r.steps))));
    });
    trajShown = Math.min(trajRows.length, trajShown + PAGE);
    $('traj-more').hidden = trajShown >= trajRows.length;
    $('traj-more').textContent = 'show more (' + (trajRows.length - trajShown) + ' left)';
  }
  function showTraj(n) {
    var r = IDX.trajs[n], host = clear($('traj-detail'));
    host.append(el('p', { class: 'muted' }, 'loading…'));
    chunk('t', r.c).then(function (data) {
      var d = data.items[String(n)];
      clear(host).append(
        el('h2', null, okMark(r.ok), ' ', r.id),
        el('p', { class: 'facts' }, 'stage ', el('b', null, r.stage), ' · policy ', el('b', null, r.policy || '–'), ' · split ', el('b', null, r.split || '–'),
          ' · reward ', el('b', null, fmt(r.reward)), ' · steps ', el('b', null, fmt(r.steps)), r.family ? ' · ' + r.family : null),
        el('p', null, el('a', { href: '#k/' + encodeURIComponent(r.run + '\u0000' + r.task) }, 'this task across rounds')),
        legend(),
        el('details', null, el('summary', null, 'metadata'), el('pre', null, JSON.stringify(d.meta, null, 1))),
        el('div', { class: 'turns' }, d.turns.map(function (t) { return turnNode(t, data); })));
    }).catch(function (e) { clear(host).append(el('p', { class: 'bad' }, String(e.message))); });
  }

  // --- pairs --------------------------------------------------------------------------------------
  var pairState;
  function renderPairList() {
    var rows = IDX.pairs.filter(function (r) { return matches(r, pairState); });
    var table = clear($('pair-list'));
    table.setAttribute('data-rows', String(rows.length));
    table.append(el('thead', null, el('tr', null, ['round', 'task', 'chosen', 'rejected'].map(function (h) { return el('th', null, h); }))));
    var body = el('tbody');
    rows.slice(0, 1000).forEach(function (r) {
      body.append(el('tr', { 'data-n': r.n, onclick: function () { location.hash = 'p/' + r.n; } },
        el('td', null, r.round === null ? r.file : 'round-' + r.round), el('td', { class: 'task', title: r.task }, r.task + (r.step ? ' (step)' : '')),
        el('td', null, fmt(r.cr)), el('td', null, fmt(r.rr))));
    });
    table.append(body);
  }
  function same(a, b, data) { return a && b && a.r === b.r && data.strings[a.s] === data.strings[b.s]; }
  function showPair(n) {
    var r = IDX.pairs[n], host = clear($('pair-detail'));
    chunk('p', r.c).then(function (data) {
      var d = data.items[String(n)];
      var len = Math.max(d.chosen.length, d.rejected.length), div = 0;
      while (div < len && same(d.chosen[div], d.rejected[div], data)) div++;
      var agentsInPrompt = d.prompt.filter(function (t) { return t.r === 'agent'; }).length;
      var prompt = el('details', { class: 'prompt', open: r.step || null },
        el('summary', null, r.step ? 'step pair: the shared prefix holds ' + agentsInPrompt + ' agent turn(s) before the step (' + d.prompt.length + ' turns)'
          : 'shared prompt: ' + d.prompt.length + ' turn(s)'),
        (r.step ? d.prompt.slice(-6) : d.prompt).map(function (t) { return turnNode(t, data); }));
      var grid = el('div', { class: 'pairgrid' },
        el('div', { class: 'side chosen' }, 'chosen · reward ' + fmt(r.cr) + (d.ids[0] ? ' · ' + d.ids[0] : '')),
        el('div', { class: 'side rejected' }, 'rejected · reward ' + fmt(r.rr) + (d.ids[1] ? ' · ' + d.ids[1] : '')));
      if (div > 0) {
        var sameRows = el('details', { class: 'span2' }, el('summary', null, div + ' identical turn(s) before they diverge'));
        for (var i = 0; i < div; i++) sameRows.append(turnNode(d.chosen[i], data));
        grid.append(sameRows);
      }
      for (var j = div; j < len; j++) {
        var mark = j === div ? 'diverge' : null;
        grid.append(el('div', { class: 'cell' }, d.chosen[j] ? turnNode(d.chosen[j], data, mark) : null),
          el('div', { class: 'cell' }, d.rejected[j] ? turnNode(d.rejected[j], data, mark) : null));
      }
      var screen = null;
      if (d.screen) {  // GUI pairs: both sides' first clicks on the last shared screenshot
        screen = el('figure', { class: 'screen' }, shot({ src: d.screen.src, name: d.screen.name }),
          el('figcaption', null, el('span', { class: 'key chosen' }), 'chosen click ', el('span', { class: 'key rejected' }), 'rejected click'));
        ['chosen', 'rejected'].forEach(function (side) {
          (d.screen[side] || []).forEach(function (p) {
            var m = el('div', { class: 'mark ' + side, title: side + ' click at (' + p[0].toFixed(3) + ', ' + p[1].toFixed(3) + ')' });
            m.style.left = (100 * p[0]) + '%'; m.style.top = (100 * p[1]) + '%';
            screen.querySelector('.shot').append(m);
          });
        });
      }
      clear(host).append(el('h2', null, r.task), el('p', { class: 'facts' }, (r.round === null ? r.file : 'round ' + r.round) + ' · strategy ' + (r.strategy || '–') +
        ' · the sides diverge at turn ' + (div + 1)), legend(), prompt, screen, grid);
    }).catch(function (e) { clear(host).append(el('p', { class: 'bad' }, String(e.message))); });
  }

  // --- the same task across rounds ---------------------------------------------------------------
  var KIND_ORDER = { expert: 0, explore: 1, eval: 2, file: 3 };
  var tasks = {};
  IDX.trajs.forEach(function (r) { var key = r.run + '\u0000' + r.task; (tasks[key] = tasks[key] || []).push(r); });
  Object.keys(tasks).forEach(function (k) {
    tasks[k].sort(function (a, b) { return (a.round || 0) - (b.round || 0) || KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || a.stage.localeCompare(b.stage); });
  });
  var taskState = {};
  function renderTaskList() {
    var keys = Object.keys(tasks).filter(function (k) {
      var eps = tasks[k];
      return eps.length > 1 && matches({ task: eps[0].task, kind: eps.map(function (e) { return e.kind; }).join(' '), family: eps[0].family }, { q: taskState.q, family: taskState.family })
        && (!taskState.kind || eps.some(function (e) { return e.kind === taskState.kind; }));
    }).sort();
    var table = clear($('task-list'));
    table.setAttribute('data-rows', String(keys.length));
    var body = el('tbody');
    keys.slice(0, 1000).forEach(function (k) {
      var eps = tasks[k];
      body.append(el('tr', { onclick: function () { location.hash = 'k/' + encodeURIComponent(k); } },
        el('td', { class: 'task', title: eps[0].task }, eps[0].task), el('td', null, eps.map(function (e) { return el('span', { title: e.stage }, okMark(e.ok)); }))));
    });
    table.append(el('thead', null, el('tr', null, el('th', null, 'task'), el('th', null, 'episodes in order'))), body);
  }
  function showTask(key) {
    var eps = tasks[key] || [], host = clear($('task-detail'));
    if (!eps.length) { host.append(el('p', { class: 'muted' }, 'no such task')); return; }
    Promise.all(eps.map(function (r) { return chunk('t', r.c); })).then(function (datas) {
      var columns = eps.map(function (r, i) {
        var data = datas[i];
        return data.items[String(r.n)].turns.filter(function (t) { return t.r === 'agent'; }).map(function (t) { return data.strings[t.a]; });
      });
      var grid = el('div', { class: 'across', style: null });
      grid.style.gridTemplateColumns = 'repeat(' + eps.length + ', minmax(14em, 1fr))';
      eps.forEach(function (r, i) {
        var prev = i > 0 ? columns[i - 1] : null, first = -1;
        if (prev) { for (var k = 0; k < columns[i].length; k++) { if (columns[i][k] !== prev[k]) { first = k; break; } } }
        grid.append(el('div', { class: 'col' },
          el('div', { class: 'colhead' }, el('a', { href: '#t/' + r.n }, r.stage), el('br'), r.policy || '', ' ', okMark(r.ok), ' reward ' + fmt(r.reward)),
          el('ol', null, columns[i].map(function (a, k) { return el('li', { class: k === first ? 'changed' : (prev && k > first && first >= 0 ? 'after' : null), title: k === first ? 'first action that differs from the column before' : null }, a); }))));
      });
      clear(host).append(el('h2', null, eps[0].task), el('p', { class: 'muted' }, 'Each column is one episode of this task, in round order; the first action that differs from the column before is marked.'), grid);
    }).catch(function (e) { clear(host).append(el('p', { class: 'bad' }, String(e.message))); });
  }

  // --- start --------------------------------------------------------------------------------------
  var commonFields = [{ key: 'run', label: 'run' }];
  trajState = filterBar($('traj-filters'), IDX.trajs, commonFields.concat([
    { key: 'kind', label: 'source' }, { key: 'split', label: 'split' }, { key: 'family', label: 'family' },
    { key: 'ok', label: 'success', values: ['true', 'false'], show: function (v) { return v === 'true' ? 'success' : 'failure'; }, always: true },
    { key: 'round', label: 'round' }, { key: 'policy', label: 'policy' }, { key: 'mode', label: 'mode' }]), renderTrajList);
  $('traj-more').addEventListener('click', moreTraj);
  pairState = filterBar($('pair-filters'), IDX.pairs, commonFields.concat([{ key: 'round', label: 'round' }, { key: 'strategy', label: 'strategy' }]), renderPairList);
  taskState = filterBar($('task-filters'), IDX.trajs, [{ key: 'kind', label: 'has episodes from' }, { key: 'family', label: 'family' }], renderTaskList);
  renderTrajList();
  renderPairList();
  renderTaskList();
  route();
})();
