"""The JavaScript the env runs in a MiniWoB++ task page (reading state only, never acting).

Actions reach the page as real mouse and keyboard events; these snippets only start episodes and
read what is on screen: the task's globals (`WOB_DONE_GLOBAL`, `WOB_RAW_REWARD_GLOBAL`, ...) and
the boxes of the elements inside `#wrap`.
"""

from __future__ import annotations

# The task area: MiniWoB++ lays every task out in a 160 x 210 CSS-pixel `#wrap` at the top left.
AREA_W, AREA_H = 160, 210
# The window miniwob's own driver uses; dialogs and menus are positioned inside it.
VIEWPORT = (500, 320)
# setTimeout's limit is 2**31 - 1 ms; one day stays well below it.
NO_TIME_LIMIT_MS = 86_400_000

# True once the page has run its onload handler (the START cover exists) and defines a task.
PAGE_READY_JS = (
    "() => document.readyState === 'complete' && typeof core !== 'undefined' && "
    "core.cover_div !== null && typeof genProblem === 'function'"
)

# End whatever episode runs, seed the page's Math.random, lift the timer, start a new episode.
RESET_JS = """([seed, maxMs]) => {
  core.endEpisode(0);
  Math.seedrandom(seed);
  core.EPISODE_MAX_TIME = maxMs;
  core.startEpisodeReal();
  return true;
}"""

# Widgets (accordions, dialogs) jump to their end state instead of animating for ~0.4 s.
NO_ANIMATIONS_JS = "() => { if (window.jQuery) jQuery.fx.off = true; return true; }"

TASK_READY_JS = "() => WOB_TASK_READY === true"

UTTERANCE_JS = "() => core.getUtterance()"

# The episode's outcome. Waits first (at most 1 s) for running jQuery animations, so that the
# screenshot and element boxes that follow show where things came to rest.
STATE_JS = """() => new Promise((resolve) => {
  const t0 = performance.now();
  const report = () => resolve({
    done: WOB_DONE_GLOBAL === true,
    utterance: core.getUtterance(),
    raw_reward: Number(WOB_RAW_REWARD_GLOBAL) || 0,
    reason: WOB_REWARD_REASON === null || WOB_REWARD_REASON === undefined ? null : String(WOB_REWARD_REASON),
  });
  const check = () => {
    const busy = window.jQuery && jQuery.timers && jQuery.timers.length > 0;
    if (!busy || performance.now() - t0 > 1000) report(); else setTimeout(check, 15);
  };
  check();
})"""

# Two animation frames: enough for a wheel scroll to reach the page's scroll offsets.
SETTLE_FRAMES_JS = (
    "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"
)

# Every rendered element of the task (the query excepted) with its box in CSS pixels and a point
# inside the task area where document.elementFromPoint hits the element itself (or a child), so a
# click there reaches it even when another element covers part of it. The task is `#wrap *` plus
# what widgets attach to the body (jQuery UI dialogs, menus), leaving out MiniWoB's own overlays.
ELEMENTS_JS = """([W, H]) => {
  const wrap = document.getElementById('wrap');
  if (!wrap) return [];
  const query = document.getElementById('query');
  const skip = new Set(['reward-display', 'click-canvas', 'sync-task-cover', 'attention-canvas']);
  const all = Array.from(wrap.querySelectorAll('*'));
  for (const top of document.body.children) {
    if (top === wrap || skip.has(top.id) || top.tagName === 'SCRIPT' || top.tagName === 'STYLE') continue;
    all.push(top, ...top.querySelectorAll('*'));
  }
  const fx = [0.5, 0.3, 0.7, 0.15, 0.85];
  const out = [];
  let index = -1;
  for (const el of all) {
    index += 1;
    if (query && (el === query || query.contains(el))) continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden') continue;
    let own = '';
    for (const n of el.childNodes) if (n.nodeType === 3) own += n.data;
    let point = null;
    const x0 = Math.max(r.left, 0), x1 = Math.min(r.right, W);
    const y0 = Math.max(r.top, 0), y1 = Math.min(r.bottom, H);
    const hits = (px, py) => {
      if (px < x0 || px >= x1 || py < y0 || py >= y1) return false;
      const hit = document.elementFromPoint(px, py);
      return !!hit && (hit === el || el.contains(hit));
    };
    if (x1 - x0 >= 1 && y1 - y0 >= 1) {
      search:
      for (const ay of fx) {
        for (const ax of fx) {
          const px = Math.min(Math.floor(x0 + (x1 - x0) * ax), Math.ceil(x1) - 1) + 0.5;
          const py = Math.min(Math.floor(y0 + (y1 - y0) * ay), Math.ceil(y1) - 1) + 0.5;
          if (hits(px, py)) { point = [px, py]; break search; }
        }
      }
      // Mostly covered: scan a finer grid (at most ~400 probes) for a visible sliver.
      const step = Math.max(2, Math.ceil(Math.sqrt((x1 - x0) * (y1 - y0) / 400)));
      fine:
      for (let py = Math.floor(y0) + 1.5; point === null && py < y1; py += step) {
        for (let px = Math.floor(x0) + 1.5; px < x1; px += step) {
          if (hits(px, py)) { point = [px, py]; break fine; }
        }
      }
    }
    const item = {
      index: index,
      tag: el.tagName.toLowerCase(),
      id: el.id || '',
      classes: el.getAttribute('class') || '',
      type: el.getAttribute('type') || '',
      text: own.replace(/\\s+/g, ' ').trim(),
      label: (el.innerText || el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 300),
      box: [r.left, r.top, r.right, r.bottom],
      point: point,
      focused: document.activeElement === el,
      attrs: {},
    };
    for (const name of ['href', 'data-type', 'name', 'placeholder']) {
      const v = el.getAttribute(name);
      if (v !== null) item.attrs[name] = v;
    }
    if (el instanceof HTMLInputElement && (el.type === 'checkbox' || el.type === 'radio')) {
      item.checked = el.checked;
    } else if (typeof el.value === 'string' && (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement)) {
      item.value = el.value;
    }
    if (el instanceof HTMLSelectElement) {
      item.options = Array.from(el.options).map((o) => o.textContent.trim());
      item.selected = el.selectedIndex;
    }
    if (el.scrollHeight > el.clientHeight + 1 && (style.overflowY === 'auto' || style.overflowY === 'scroll' || el instanceof HTMLTextAreaElement)) {
      item.scroll = [el.scrollTop, el.scrollHeight, el.clientHeight];
    }
    out.push(item);
  }
  return out;
}"""
