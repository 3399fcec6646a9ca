/**
 * Crash safety of the audit sink as a real process: SIGKILL it under load 20 times (restarting
 * it on the same data dir each time). Every event it acknowledged must be in the log exactly
 * once, and the log — segments, checkpoints, signatures — must verify offline.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuditClient, loadCheckpointKeys } from '@keyshard/audit-client';
import { DevCluster, COORDINATOR } from '@keyshard/devcluster';
import { readTls } from '@keyshard/rpc';
import { verifyLogDir } from '@keyshard/audit-log';

const ROUNDS = 20;
const WORKERS = 8;

describe('audit sink under SIGKILL', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-audit-crash-'));
    cluster = await DevCluster.create({ dir, custodians: 1, threshold: 1 });
    await cluster.start(['audit-sink']);
  });

  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`${ROUNDS} SIGKILLs under load: every acknowledged event is stored once and the log verifies`, async () => {
    const address = `127.0.0.1:${cluster.layout.plan.ports.audit}`;
    const audit = new AuditClient({
      address, tls: readTls(cluster.layout.certs[COORDINATOR]!), source: COORDINATOR, timeoutMs: 1000,
      checkpointKeys: loadCheckpointKeys([cluster.layout.sinkCheckpointPublicKey]),
    });
    const acked: string[] = [];
    let refused = 0;
    let seq = 0;
    let running = true;
    const worker = async () => {
      while (running) {
        const id = `crash-${seq++}`;
        try {
          await audit.record({ id, principal: 'load', operation: 'keys.Encrypt', result: 'ok', details: { n: id } });
          acked.push(id);
        } catch {
          refused += 1;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const workers = Array.from({ length: WORKERS }, worker);
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const before = acked.length;
        const deadline = Date.now() + 5_000;
        while (acked.length < before + 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        assert.ok(acked.length > before, `round ${round}: nothing acknowledged after the restart`);
        await cluster.process('audit-sink').kill();
        await cluster.start(['audit-sink']);
      }
    } finally {
      running = false;
      await Promise.all(workers);
      await audit.close();
    }
    await cluster.process('audit-sink').stop();

    const logDir = cluster.layout.auditDir;
    const v = verifyLogDir(logDir, { trust: { sinkKeys: loadCheckpointKeys([cluster.layout.sinkCheckpointPublicKey]), witnesses: [], witnessQuorum: 0 } });
    assert.equal(v.ok, true, `${v.firstBadIndex}: ${v.reason}`);
    const stored = readdirSync(path.join(logDir, 'segments'))
      .flatMap((f) => readFileSync(path.join(logDir, 'segments', f), 'utf8').split('\n').filter(Boolean))
      .map((l) => JSON.parse(l).event.id as string);
    assert.equal(new Set(stored).size, stored.length, 'no event stored twice');
    const have = new Set(stored);
    const lost = acked.filter((id) => !have.has(id));
    assert.deepEqual(lost, [], `${lost.length} acknowledged events missing`);
    assert.ok(v.checkpoints >= ROUNDS, `${v.checkpoints} checkpoints`);
    process.stdout.write(`# ${acked.length} acknowledged, ${stored.length} stored, ${refused} refused during outages, ${v.checkpoints} checkpoints\n`);
  });
});
