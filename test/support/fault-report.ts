/**
 * What a fault-injection scenario measured, how it is worked out from the load's records, and
 * the one table the suite prints at the end.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { KeyshardClient } from '@keyshard/client';
import { OP_KINDS, sleep, type OpKind, type SteadyLoad, type WindowStats } from './load.ts';

export interface ScenarioResult {
  name: string;
  /** Calls started from the fault until the component was restored (restart, SIGCONT, heal). */
  during: Record<OpKind | 'all', WindowStats>;
  /** Calls started from the restore until the end of the scenario, per kind. */
  after: Record<OpKind, WindowStats>;
  /**
   * From the fault until the steady load (Encrypt, Decrypt, CreateKey: not EncryptNew, which
   * also fails on a replica's stale view) was back at ~100 % (1 s buckets, ≥ 99 %).
   */
  recoverSeconds: number;
  /** From the restore until the component served again. */
  restoreSeconds: number;
  /** From the fault until another replica reported itself leader (leader scenarios only). */
  failoverSeconds?: number;
  /** Acknowledged writes (CreateKeys and Encrypts) lost: keys gone or unusable, plus undecryptable ciphertexts. */
  writesLost: number;
  /** Acknowledged ciphertexts that no longer decrypt to their plaintext. */
  undecryptable: number;
  /** Acknowledged writes a replica did not show at first (its watch lagged), and the longest such wait. */
  stale: number;
  staleSeconds: number;
  note: string;
  times: ScenarioTimes;
}

/** The timestamps a scenario is measured between. */
export interface ScenarioTimes {
  fault: number;
  restore: number;
  serving: number;
  end: number;
}

export function measure(load: SteadyLoad, t: ScenarioTimes): Pick<ScenarioResult, 'during' | 'after' | 'recoverSeconds' | 'restoreSeconds' | 'times'> {
  const during = { all: load.window(t.fault, t.restore) } as ScenarioResult['during'];
  const after = {} as ScenarioResult['after'];
  for (const k of OP_KINDS) {
    during[k] = load.window(t.fault, t.restore, k);
    after[k] = load.window(t.restore, t.end, k);
  }
  return {
    during,
    after,
    recoverSeconds: (load.recoveredAt(t.fault, t.end, ['Encrypt', 'Decrypt', 'CreateKey']) - t.fault) / 1000,
    restoreSeconds: (t.serving - t.restore) / 1000,
    times: t,
  };
}

/** The Encrypt success ratio every scenario must keep during its fault, the SDK's retries counted (issue 7's target). */
export const ENCRYPT_AT_LEAST = 0.999;

/**
 * Asserts one scenario's row against the suite's targets (README "Fault suites"): no
 * acknowledged write lost, no ciphertext undecryptable, Encrypt ≥ 99.9 % during the fault,
 * CreateKey 100 % during the fault unless the fault leaves no majority of some component
 * (`createKeyAvailable: false`; issue 18: the SDK retries a state change with its request token,
 * and the audit log survives one replica's loss), and for a scenario that deposes the leader
 * (`leaderTtlSeconds` given) failover ≤ 2 × that TTL. Each message starts with the scenario's name.
 */
export function assertRow(r: ScenarioResult, o: { leaderTtlSeconds?: number; createKeyAvailable?: boolean } = {}): void {
  assert.equal(r.writesLost, 0, `${r.name}: ${r.writesLost} acknowledged write(s) lost`);
  assert.equal(r.undecryptable, 0, `${r.name}: ${r.undecryptable} acknowledged ciphertext(s) no longer decrypt`);
  const e = r.during.Encrypt;
  assert.ok(e.total > 0, `${r.name}: no Encrypt was started during the fault, so its success ratio says nothing`);
  assert.ok(e.ratio >= ENCRYPT_AT_LEAST, `${r.name}: Encrypt success ${(100 * e.ratio).toFixed(3)} % < ${100 * ENCRYPT_AT_LEAST} % during the fault: ${JSON.stringify(e.codes)}`);
  if (o.createKeyAvailable !== false) {
    const c = r.during.CreateKey;
    assert.ok(c.total > 0, `${r.name}: no CreateKey was started during the fault, so its success ratio says nothing`);
    assert.equal(c.ok, c.total, `${r.name}: CreateKey ${c.ok}/${c.total} during the fault (every one must succeed: the remaining components are a majority): ${JSON.stringify(c.codes)}`);
  }
  if (o.leaderTtlSeconds === undefined) return;
  assert.ok(r.failoverSeconds !== undefined, `${r.name}: no leader failover was measured`);
  assert.ok(r.failoverSeconds <= 2 * o.leaderTtlSeconds, `${r.name}: failover took ${r.failoverSeconds} s, more than 2 × ${o.leaderTtlSeconds} s`);
}

/**
 * Polls the Status of each of `clients` until one names a leader other than `deposed`;
 * resolves with the time it did (Date.now()).
 */
export async function waitForNewLeader(clients: KeyshardClient[], deposed: string, timeoutMs: number): Promise<{ at: number; leader: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answers = await Promise.all(clients.map((c) => c.status({ timeoutMs: 1_000 }).then((s) => s.leader_id, () => '')));
    const leader = answers.find((l) => l && l !== deposed);
    if (leader) return { at: Date.now(), leader };
    if (Date.now() > deadline) throw new Error(`no replica other than ${deposed} became leader within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** A service's structured log (pino JSON lines), parsed; lines that are not JSON are skipped. */
export function readLog(file: string): { time: number; msg: string; err?: string; keyId?: string; version?: number }[] {
  const out: ReturnType<typeof readLog> = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const l = JSON.parse(line) as { time: string; msg: string; err?: string; keyId?: string; version?: number };
      out.push({ ...l, time: Date.parse(l.time) });
    } catch {
      // a line cut by SIGKILL
    }
  }
  return out;
}

const pct = (s: WindowStats) => (s.total ? `${((100 * s.ok) / s.total).toFixed(2)}% (${s.total - s.ok}/${s.total})` : '-');
const secs = (n: number | undefined) => (n === undefined ? '-' : n.toFixed(1));

/** The failures' status codes per kind, e.g. "CreateKey UNAVAILABLE×3", during the fault and after the restore. */
function failures(r: ScenarioResult): string {
  const codes = (w: Record<OpKind, WindowStats>) => OP_KINDS.flatMap((k) => Object.entries(w[k].codes).map(([code, n]) => `${k} ${code}×${n}`)).join(', ');
  const during = codes(r.during);
  const after = codes(r.after);
  return [during && `during: ${during}`, after && `after the restore: ${after}`].filter(Boolean).join('; ');
}

/** One fixed-width table: a row per scenario. */
export function renderTable(rows: ScenarioResult[]): string {
  const header = ['scenario', 'all ok (failed/calls)', 'Encrypt ok', 'Decrypt ok', 'CreateKey ok', 'new-key Encrypt ok', 'recover s', 'restore s', 'failover s', 'lost', 'undecr.', 'stale (max s)'];
  const body = rows.map((r) => [
    r.name,
    pct(r.during.all),
    pct(r.during.Encrypt),
    pct(r.during.Decrypt),
    pct(r.during.CreateKey),
    pct(r.during.EncryptNew),
    secs(r.recoverSeconds),
    secs(r.restoreSeconds),
    secs(r.failoverSeconds),
    String(r.writesLost),
    String(r.undecryptable),
    r.stale ? `${r.stale} (${secs(r.staleSeconds)})` : '0',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ');
  const notes = rows.map((r) => [r.note, failures(r)].filter(Boolean).join('; ')).flatMap((n, i) => (n ? [`  ${rows[i]!.name}: ${n}`] : []));
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...body.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}
