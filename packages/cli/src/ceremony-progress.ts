/**
 * How the CLI shows a ceremony while it runs: approvals counted against the threshold (never
 * more than the threshold: approval ceremonies keep counting valid approvals past it), and each
 * custodian's refusal (with its reason: WRONG_CLUSTER, NOT_ENROLLED, …) or denial printed once,
 * as soon as the coordinator records it, rather than a count that stays put until the ceremony
 * expires. A ceremony that ends without completing is the SDK's typed error (ceremonyError), so
 * the CLI prints its reason (QUORUM_NOT_MET, CEREMONY_EXPIRED, …) and `--json` its code and reason.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { DeadlineExceededError, ceremonyError, type Ceremony, type KeyshardClient } from '@keyshard/client';
import { progress } from './output.ts';

/** `2/3`: approvals (or shares) so far out of the threshold, clamped to the threshold. */
export const tally = (c: Pick<Ceremony, 'approved_by' | 'threshold'>): string => `${Math.min(c.approved_by.length, c.threshold)}/${c.threshold}`;

/**
 * `  refused by custodian-4: WRONG_CLUSTER: ceremony … belongs to another cluster`: a custodian's
 * refusal (or a rejected answer) with its reason (none from an older coordinator) and its words,
 * less the `custodian custodian-4: ` they start with when the custodian's own.
 */
export function refusalLine(f: Ceremony['failures'][number]): string {
  const prefix = `custodian ${f.custodian_id}: `;
  const words = f.reason.startsWith(prefix) ? f.reason.slice(prefix.length) : f.reason;
  return `  refused by ${f.custodian_id}: ${f.error_reason ? `${f.error_reason}: ` : ''}${words}`;
}

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
      const line = refusalLine(f);
      if (!refusals.has(line)) out(line);
      refusals.add(line);
    }
    for (const id of c.denied_by) {
      if (!denials.has(id)) out(`  denied by ${id}`);
      denials.add(id);
    }
  };
}

/**
 * Follows ceremony `c` until it leaves OPEN, reporting each change; resolves with the completed
 * ceremony, rejects (exit 1) with the SDK's typed error if it failed, expired or was cancelled
 * (ceremonyError: reason QUORUM_NOT_MET, CEREMONY_EXPIRED, CANCELLED, …; the refusals in its
 * metadata), or is still open after `timeoutMs` (DeadlineExceededError).
 */
export async function followCeremony(client: KeyshardClient, c: Ceremony, report = ceremonyReporter(), timeoutMs = 24 * 3600_000): Promise<Ceremony> {
  const deadline = Date.now() + timeoutMs;
  report(c);
  while (c.state === 'CEREMONY_STATE_OPEN') {
    if (Date.now() > deadline)
      throw new DeadlineExceededError({ code: grpcStatus.DEADLINE_EXCEEDED, message: `${c.operation} ceremony ${c.id} still open after ${Math.round(timeoutMs / 1000)} s`, metadata: { ceremony_id: c.id } });
    await new Promise((r) => setTimeout(r, 200));
    c = await client.getCeremony(c.id);
    report(c);
  }
  if (c.state !== 'CEREMONY_STATE_COMPLETED') throw ceremonyError(c);
  return c;
}
