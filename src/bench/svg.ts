// A small SVG line-chart writer for benchmark results: axes with round ticks (linear or log),
// one <path> per series with markers and a legend. Text only; no chart library.

/** One line of a chart. */
export interface Series {
  name: string;
  points: Array<[number, number]>;
}

/** What to draw. */
export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Log-2 x axis (concurrency sweeps double each step). */
  xLog?: boolean;
  width?: number;
  height?: number;
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const MARGIN = { left: 70, top: 40, bottom: 55 };
// Room for the legend: its swatch plus the longest series name (about 7 px per character at 12 px).
const legendWidth = (series: Series[]): number => 50 + 7 * Math.max(8, ...series.map((x) => x.name.length));

/** Escapes text for XML content and attribute values. */
export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** About `count` round tick values covering [lo, hi] (1, 2, 5 × 10^k steps; at least `minStep`). */
export function niceTicks(lo: number, hi: number, count = 5, minStep = 0): number[] {
  if (!(hi > lo)) return [lo];
  const raw = Math.max((hi - lo) / count, minStep);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10_000) return `${Number((v / 1000).toPrecision(3))}k`;
  if (a >= 1) return String(Number(v.toPrecision(4)));
  return String(Number(v.toPrecision(2)));
}

/** Renders the chart as a standalone SVG document. */
export function renderLineChart(c: LineChart): string {
  const MARGIN_RIGHT = legendWidth(c.series);
  const width = c.width ?? 520 + MARGIN_RIGHT;
  const height = c.height ?? 400;
  const plotW = width - MARGIN.left - MARGIN_RIGHT;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const drawable = ([x, y]: [number, number]): boolean =>
    Number.isFinite(x) && Number.isFinite(y) && (!c.xLog || x > 0);
  const all = c.series.flatMap((s) => s.points).filter(drawable);
  const tx = (x: number): number => (c.xLog ? Math.log2(x) : x);
  const xs = all.map(([x]) => tx(x));
  let xLo = xs.length ? Math.min(...xs) : 0;
  let xHi = xs.length ? Math.max(...xs) : 1;
  if (xHi === xLo) { xLo -= 1; xHi += 1; }
  const yHiRaw = all.length ? Math.max(...all.map(([, y]) => y)) : 1;
  const yTicks = niceTicks(0, yHiRaw > 0 ? yHiRaw * 1.05 : 1);
  const yHi = Math.max(yTicks[yTicks.length - 1] ?? 1, yHiRaw) || 1;
  const px = (x: number): number => MARGIN.left + ((tx(x) - xLo) / (xHi - xLo)) * plotW;
  const py = (y: number): number => MARGIN.top + plotH - (y / yHi) * plotH;
  const xTicks = c.xLog
    ? Array.from({ length: Math.floor(xHi) - Math.ceil(xLo) + 1 }, (_, i) => 2 ** (Math.ceil(xLo) + i))
    // Whole-number data (HSM counts) gets whole-number ticks.
    : niceTicks(xLo, xHi, 5, all.every(([x]) => Number.isInteger(x)) ? 1 : 0).filter((v) => v >= xLo && v <= xHi);
  const r = (n: number): string => n.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${xmlEscape(c.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${xmlEscape(c.title)}</text>`);
  out.push('<g class="grid" stroke="#ddd">');
  for (const v of yTicks) out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${r(py(v))}" y2="${r(py(v))}"/>`);
  out.push('</g>');
  out.push(`<g class="axes" stroke="#333"><line x1="${MARGIN.left}" y1="${MARGIN.top + plotH}" x2="${MARGIN.left + plotW}" y2="${MARGIN.top + plotH}"/><line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + plotH}"/></g>`);
  out.push('<g class="ticks">');
  for (const v of yTicks) out.push(`<text x="${MARGIN.left - 6}" y="${r(py(v) + 4)}" text-anchor="end">${fmt(v)}</text>`);
  for (const v of xTicks) out.push(`<text x="${r(px(v))}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${fmt(v)}</text>`);
  out.push('</g>');
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${height - 12}" text-anchor="middle">${xmlEscape(c.xLabel)}</text>`);
  out.push(`<text x="16" y="${MARGIN.top + plotH / 2}" text-anchor="middle" transform="rotate(-90 16 ${MARGIN.top + plotH / 2})">${xmlEscape(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const pts = s.points.filter(drawable).sort((a, b) => a[0] - b[0]);
    const d = pts.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${r(px(x))},${r(py(y))}`).join(' ');
    out.push(`<g class="series" data-series="${xmlEscape(s.name)}">`);
    out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${r(px(x))}" cy="${r(py(y))}" r="3" fill="${colour}"><title>${xmlEscape(`${s.name}: ${fmt(x)} → ${fmt(y)}`)}</title></circle>`);
    const ly = MARGIN.top + 10 + i * 18;
    out.push(`<line x1="${width - MARGIN_RIGHT + 15}" x2="${width - MARGIN_RIGHT + 35}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"/>`);
    out.push(`<text x="${width - MARGIN_RIGHT + 40}" y="${ly + 4}">${xmlEscape(s.name)}</text>`);
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
