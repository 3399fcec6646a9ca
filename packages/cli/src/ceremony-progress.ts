/**
 * How the CLI shows a ceremony while it runs: approvals counted against the threshold (never
 * more than the threshold: approval ceremonies keep counting valid approvals past it), and each
 * custodian's refusal or denial printed once, as soon as the coordinator records it, rather
 * than a count that stays put until the ceremony expires.
 */
import { ceremonyState, type Ceremony, type KeyshardClient } from '@keyshard/client';
import { progress } from './output.ts';

/** `2/3`: approvals (or shares) so far out of the threshold, clamped to the threshold. */
export const tally = (c: Pick<Ceremony, 'approved_by' | 'threshold'>): string => `${Math.min(c.approved_by.length, c.threshold)}/${c.threshold}`;

/**
 * Prints what is new in each state of one ceremony: its progress line when it changes (default
 * `approvals 2/3`), each refusal and each denial once, as it arrives.
 */
export function ceremonyReporter(progressLine: (c: Ceremony) => string = (c) => `approvals ${tally(c)}`, out: (line: string) => void = progress): (c: Ceremony) => void {
  let shown = '';
  const refusals = new Set<string>();
  const denials = new Set<string>();
  return (c) => {
    const line = progressLine(c);
    if (line !== shown) out(line);
    shown = line;
    for (const f of c.failures) {
      const k = `${f.custodian_id}\0${f.reason}`;
      if (!refusals.has(k)) out(`  refused by ${f.custodian_id}: ${f.reason}`);
      refusals.add(k);
    }
    for (const id of c.denied_by) {
      if (!denials.has(id)) out(`  denied by ${id}`);
      denials.add(id);
    }
  };
}

/**
 * Follows ceremony `c` until it leaves OPEN, reporting each change; resolves with the completed
 * ceremony, rejects (exit 1) if it failed, expired or was cancelled.
 */
export async function followCeremony(client: KeyshardClient, c: Ceremony, report = ceremonyReporter(), timeoutMs = 24 * 3600_000): Promise<Ceremony> {
  const deadline = Date.now() + timeoutMs;
  report(c);
  while (c.state === 'CEREMONY_STATE_OPEN') {
    if (Date.now() > deadline) throw new Error(`${c.operation} ceremony ${c.id} still open after ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, 200));
    c = await client.getCeremony(c.id);
    report(c);
  }
  if (c.state !== 'CEREMONY_STATE_COMPLETED') throw new Error(`${c.operation} ceremony ${c.id} ${ceremonyState(c)}${c.error ? `: ${c.error}` : ''}`);
  return c;
}
