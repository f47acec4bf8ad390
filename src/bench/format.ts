// Human-readable tables of a `bench hsm` result (the CLI's default output).
import type { HsmBenchResult } from './hsm.js';
import type { LatencySplit } from './stats.js';

function ms(x: number): string {
  return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0);
}

function split(s: LatencySplit): string {
  return `${ms(s.networkMs)} + ${ms(s.queueMs)} + ${ms(s.serviceMs)}`;
}

/** The result as aligned text: one table per operation and target, then knees and scaling. */
export function formatHsmResult(r: HsmBenchResult): string {
  const lines: string[] = [];
  const budget = 'count' in r.budget ? `${r.budget.count} ops per point` : `${r.budget.seconds} s per point`;
  lines.push(`hsmproxy bench hsm: ${r.targets.join('; ')} — ${budget}, node ${r.node}, ${r.cpus} CPUs, load average ${r.loadavg.join(' ')}`);
  const where = (op: string, hsms: number | null): string => `${op} on ${hsms === null ? 'the PKCS#11 token' : `${hsms} HSM${hsms === 1 ? '' : 's'}`}`;
  const groups = new Map<string, typeof r.points>();
  for (const p of r.points) {
    const k = where(p.op, p.hsms);
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  for (const [name, points] of groups) {
    lines.push('', name);
    lines.push(`${'in flight'.padStart(9)} ${'ops/s'.padStart(9)} ${'p50 ms'.padStart(8)} ${'p95 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)}  p99 = network + queue + service (ms)`);
    for (const p of points) {
      const l = p.latency;
      const tail = p.splitReported ? split(l.p99) : '(this backend reports no HSM timings)';
      const err = p.errors > 0 ? `  ${p.errors} errors: ${p.firstError ?? ''}` : '';
      lines.push(`${String(p.concurrency).padStart(9)} ${p.opsPerSec.toFixed(0).padStart(9)} ${ms(l.p50.totalMs).padStart(8)} ${ms(l.p95.totalMs).padStart(8)} ${ms(l.p99.totalMs).padStart(8)} ${ms(l.max.totalMs).padStart(8)}  ${tail}${err}`);
    }
    const knee = r.knees.find((k) => where(k.op, k.hsms) === name);
    if (knee) lines.push(`knee: ${knee.concurrency === null ? 'none in this sweep' : `${knee.concurrency} in flight`} (${knee.rule})`);
  }
  if (r.scaling) {
    lines.push('', `scaling (profile ${r.profile ?? '?'}): best point per cluster size`);
    lines.push(`${'op'.padEnd(20)} ${'HSMs'.padStart(4)} ${'ops/s'.padStart(9)} ${'p99 ms'.padStart(8)} ${'in flight'.padStart(9)}`);
    for (const s of r.scaling) lines.push(`${s.op.padEnd(20)} ${String(s.hsms).padStart(4)} ${s.opsPerSec.toFixed(0).padStart(9)} ${ms(s.p99Ms).padStart(8)} ${String(s.concurrency).padStart(9)}`);
  }
  return lines.join('\n') + '\n';
}
