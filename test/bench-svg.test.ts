// The SVG chart writer: a well-formed standalone document (parsed here by a strict little XML
// reader), one series group with one line per series, names escaped, round axis ticks.
import t from 'tap';
import { niceTicks, renderLineChart } from '../src/bench/svg.js';

interface XmlNode { name: string; attrs: Record<string, string>; children: XmlNode[]; text: string }

/** Parses XML strictly enough to catch what breaks SVG viewers: nesting, quoting, entities, one root. */
function parseXml(src: string): XmlNode {
  const token = /<!--[\s\S]*?-->|<\/([A-Za-z][\w:-]*)\s*>|<([A-Za-z][\w:-]*)((?:\s+[\w:-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)|(<)/g;
  const checkText = (s: string): void => {
    for (const m of s.matchAll(/&([^;\s]*);?/g)) {
      if (!/^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);$/.test(m[0])) throw new Error(`bad entity ${m[0]}`);
    }
  };
  const decode = (s: string): string => s.replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" })[e]!);
  const root: XmlNode = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [root];
  for (const m of src.replace(/^<\?xml[^>]*\?>/, '').matchAll(token)) {
    const [, close, open, attrText, selfClose, text, stray] = m;
    const top = stack[stack.length - 1]!;
    if (stray) throw new Error(`stray < at ${m.index}`);
    if (text !== undefined) {
      if (stack.length === 1 && text.trim()) throw new Error('text outside the root element');
      checkText(text);
      top.text += decode(text);
    } else if (close) {
      if (top.name !== close) throw new Error(`</${close}> closes <${top.name}>`);
      stack.pop();
    } else if (open) {
      const attrs: Record<string, string> = {};
      for (const a of (attrText ?? '').matchAll(/([\w:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]}`);
        checkText(a[2] ?? a[3] ?? '');
        attrs[a[1]!] = decode(a[2] ?? a[3] ?? '');
      }
      const node: XmlNode = { name: open, attrs, children: [], text: '' };
      if (stack.length === 1 && root.children.length > 0) throw new Error('more than one root element');
      top.children.push(node);
      if (!selfClose) stack.push(node);
    }
  }
  if (stack.length !== 1) throw new Error(`<${stack[stack.length - 1]!.name}> is never closed`);
  if (root.children.length !== 1) throw new Error('no root element');
  return root.children[0]!;
}

function all(n: XmlNode, pred: (x: XmlNode) => boolean): XmlNode[] {
  return [...(pred(n) ? [n] : []), ...n.children.flatMap((c) => all(c, pred))];
}

const chart = {
  title: 'ops/s vs HSMs <unlimited & "hsm2m">',
  xLabel: 'HSMs', yLabel: 'operations/s',
  series: [
    { name: 'sign-ec-p256 (unlimited)', points: [[1, 9000], [2, 15000], [3, 17000]] as Array<[number, number]> },
    { name: 'sign-rsa2048-pss (hsm2m.medium)', points: [[1, 990], [2, 1980], [3, 2950]] as Array<[number, number]> },
    { name: 'p99 & max', points: [[1, 3], [3, 7]] as Array<[number, number]> },
  ],
};

t.test('the chart is a well-formed SVG document', async (t) => {
  const root = parseXml(renderLineChart(chart));
  t.equal(root.name, 'svg');
  t.equal(root.attrs.xmlns, 'http://www.w3.org/2000/svg');
  t.match(root.attrs.viewBox, /^0 0 \d+ \d+$/);
});

t.test('each series is one group with exactly one line, named in its legend', async (t) => {
  const root = parseXml(renderLineChart(chart));
  const groups = all(root, (n) => n.name === 'g' && n.attrs.class === 'series');
  t.equal(groups.length, chart.series.length, 'one group per series');
  groups.forEach((g, i) => {
    const s = chart.series[i]!;
    t.equal(g.attrs['data-series'], s.name, 'names survive escaping');
    const paths = g.children.filter((c) => c.name === 'path');
    t.equal(paths.length, 1, `${s.name}: one line`);
    t.equal((paths[0]!.attrs.d!.match(/[ML]/g) ?? []).length, s.points.length, `${s.name}: one vertex per point`);
    t.equal(g.children.filter((c) => c.name === 'circle').length, s.points.length, `${s.name}: one marker per point`);
    t.ok(g.children.some((c) => c.name === 'text' && c.text === s.name), `${s.name}: in the legend`);
  });
});

t.test('points map left-to-right and bottom-to-top', async (t) => {
  const root = parseXml(renderLineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[3, 30], [1, 10], [2, 20]] }] }));
  const d = all(root, (n) => n.name === 'path')[0]!.attrs.d!;
  const xy = [...d.matchAll(/[ML]([\d.]+),([\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
  t.ok(xy[0]![0] < xy[1]![0] && xy[1]![0] < xy[2]![0], 'sorted by x');
  t.ok(xy[0]![1] > xy[1]![1] && xy[1]![1] > xy[2]![1], 'larger y is drawn higher');
});

t.test('a log-2 x axis ticks at powers of two', async (t) => {
  const root = parseXml(renderLineChart({ title: 't', xLabel: 'in flight', yLabel: 'ms', xLog: true, series: [{ name: 'p99', points: [[1, 1], [4, 2], [16, 3], [64, 9]] }] }));
  const ticks = all(root, (n) => n.name === 'g' && n.attrs.class === 'ticks')[0]!.children.map((c) => c.text);
  for (const v of ['1', '2', '4', '8', '16', '32', '64']) t.ok(ticks.includes(v), `tick ${v}`);
});

t.test('an empty chart still renders a valid document', async (t) => {
  t.equal(parseXml(renderLineChart({ title: 'nothing yet', xLabel: 'x', yLabel: 'y', series: [] })).name, 'svg');
});

t.test('ticks are round numbers covering the range', async (t) => {
  t.same(niceTicks(0, 1000), [0, 200, 400, 600, 800, 1000]);
  t.same(niceTicks(0, 7.3), [0, 2, 4, 6]);
  t.same(niceTicks(5, 5), [5]);
});

t.test('the XML reader used here rejects broken documents', async (t) => {
  t.throws(() => parseXml('<svg><g></svg>'));
  t.throws(() => parseXml('<svg a="1" a="2"/>'));
  t.throws(() => parseXml('<svg>a & b</svg>'));
  t.throws(() => parseXml('<svg/><svg/>'));
});
