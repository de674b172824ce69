// Switchyard web UI: charts drawn as SVG by hand. A few kilobytes do what the dashboard needs (lines over
// time, an attempt waterfall); a charting library would be most of the UI's weight and one more thing to
// vendor and keep up to date.

import { h, s, int, ms, time } from './lib.js';

export const PALETTE = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];

const PAD = { left: 64, right: 14, top: 12, bottom: 26 };

/** 1, 2, 2.5, 5 times a power of ten, at least `v` (2.5 left out for whole numbers below 10). */
function niceCeil(v, whole) {
  if (!(v > 0)) return whole ? 1 : 1e-9;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (whole && m === 2.5 && p < 10) continue;
    if (m * p >= v) return whole ? Math.max(1, m * p) : m * p;
  }
  return 10 * p;
}

/** Gridlines for 0..max: a round step, four or so of them. */
function yTicks(max, whole) {
  if (!(max > 0)) return { top: whole ? 4 : 1, step: whole ? 1 : 0.25 };
  const step = niceCeil(max / 4, whole);
  return { top: Math.max(1, Math.ceil(max / step - 1e-9)) * step, step };
}

function pad2(n) { return String(n).padStart(2, '0'); }

function timeLabel(t, span) {
  const d = new Date(t);
  if (span <= 2 * 86400e3) return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

/**
 * Draws into `wrap` at its own width (so text is never scaled up or down), and again when that width
 * changes. The first drawing happens once the figure is laid out.
 */
function responsive(wrap, draw) {
  let drawn = 0;
  const redraw = () => {
    const w = Math.round(wrap.clientWidth);
    if (!w || w === drawn) return;
    drawn = w;
    const svg = draw(w);
    const old = wrap.querySelector('svg');
    if (old) old.replaceWith(svg); else wrap.prepend(svg);
  };
  new ResizeObserver(redraw).observe(wrap);
}

/**
 * Lines over time. `series`: [{name, color, points: [[t_ms, value|null], ...]}]; a null value breaks the
 * line (no requests in that interval, so no latency to show). `format` labels the y axis and tooltips;
 * `whole` says the values are counts (ticks on whole numbers).
 */
export function lineChart({ series, from, to, format = int, whole = false, height = 200, label = 'chart', empty = 'No requests in this range.' }) {
  const H = height;
  const values = series.flatMap((x) => x.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const wrap = h('figure', { class: 'chart' });
  if (!values.length) {
    wrap.append(h('div', { class: 'chart-empty muted' }, empty));
    return wrap;
  }
  const { top: yMax, step } = yTicks(Math.max(...values), whole);
  const span = Math.max(1, to - from);
  responsive(wrap, (W) => {
    const x = (t) => PAD.left + ((t - from) / span) * (W - PAD.left - PAD.right);
    const y = (v) => PAD.top + (1 - v / yMax) * (H - PAD.top - PAD.bottom);
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg', role: 'img', 'aria-label': label });
    for (let v = 0; v <= yMax + step / 2; v += step) {
      svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }),
        s('text', { x: PAD.left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, format(v)));
    }
    const xTicks = W < 420 ? 2 : 4;
    for (let i = 0; i <= xTicks; i++) {
      const t = from + (span * i) / xTicks;
      svg.append(s('text', { x: x(t), y: H - 8, class: 'tick', 'text-anchor': i === 0 ? 'start' : i === xTicks ? 'end' : 'middle' }, timeLabel(t, span)));
    }
    for (const ser of series) {
      let d = '';
      let pen = false;
      const dots = [];
      for (const [t, v] of ser.points) {
        if (v === null || v === undefined) { pen = false; continue; }
        d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
        dots.push([t, v]);
      }
      svg.append(s('path', { d, fill: 'none', stroke: ser.color, 'stroke-width': 2, 'stroke-linejoin': 'round', class: 'line' }));
      // A dot (with its tooltip) where something happened; every one when there are few.
      for (const [t, v] of dots) {
        if (dots.length > 40 && v === 0) continue;
        svg.append(s('circle', { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: dots.length === 1 ? 3.5 : 2.5, fill: ser.color },
          s('title', {}, `${ser.name} · ${time(t)} · ${format(v)}`)));
      }
    }
    return svg;
  });
  if (series.length > 1 || (series[0] && series[0].name)) {
    wrap.append(h('figcaption', { class: 'legend' }, series.map((ser) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = ser.color;
      return h('span', { class: 'legend-item' }, sw, ser.name);
    })));
  }
  return wrap;
}

const OUTCOME_COLOR = { success: '#059669', skipped: '#9ca3af' };

/**
 * The attempt trail on a time line from the request's arrival: each attempt from its start to its end,
 * green when it succeeded, red when it failed, grey when skipped; hedges dashed.
 */
export function waterfall(attempts, totalMs) {
  const rowH = 26;
  const H = PAD.top + attempts.length * rowH + 22;
  const end = Math.max(1, totalMs || 0, ...attempts.map((a) => (a.start_ms || 0) + (a.latency_ms || 0)));
  const wrap = h('figure', { class: 'chart waterfall-wrap' });
  responsive(wrap, (W) => {
    const labelW = Math.min(300, Math.max(140, W * 0.3));
    const x = (t) => labelW + (t / end) * (W - labelW - PAD.right - 70);
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg waterfall', role: 'img', 'aria-label': 'attempt timeline' });
    svg.append(s('line', { x1: x(0), x2: x(0), y1: PAD.top - 4, y2: H - 20, class: 'grid' }));
    const maxChars = Math.floor((labelW - 12) / 7.5);
    attempts.forEach((a, i) => {
      const top = PAD.top + i * rowH;
      const color = a.skipped ? OUTCOME_COLOR.skipped : OUTCOME_COLOR[a.outcome] || '#dc2626';
      const label = `${i + 1}. ${a.target}`;
      svg.append(s('text', { x: 4, y: top + 15, class: 'tick label' }, label.length > maxChars ? `${label.slice(0, maxChars - 1)}…` : label));
      const x0 = x(a.start_ms || 0);
      const w = Math.max(2, x((a.start_ms || 0) + (a.latency_ms || 0)) - x0);
      svg.append(s('rect', {
        x: x0.toFixed(1), y: top + 4, width: w.toFixed(1), height: rowH - 10, rx: 3, fill: color,
        class: a.hedged ? 'hedged' : null, 'stroke-dasharray': a.hedged ? '4 2' : null,
      }, s('title', {}, `${a.target}: ${a.skipped ? 'skipped' : a.outcome}${a.status ? ` (${a.status})` : ''}, started +${ms(a.start_ms)}, took ${ms(a.latency_ms)}${a.hedged ? ', hedge' : ''}`)));
      svg.append(s('text', { x: (x0 + w + 4).toFixed(1), y: top + 15, class: 'tick' }, a.skipped ? 'skipped' : ms(a.latency_ms)));
    });
    svg.append(s('text', { x: x(0), y: H - 6, class: 'tick', 'text-anchor': 'start' }, '0'),
      s('text', { x: x(end), y: H - 6, class: 'tick', 'text-anchor': 'end' }, ms(end)));
    return svg;
  });
  return wrap;
}
