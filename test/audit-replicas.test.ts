/**
 * Replicated audit log in a whole cluster (issue 18 item 2): three audit sink replicas, one
 * coordinator, SDK load of CreateKey (audited fail-closed: answered only once the sink
 * acknowledged) and Encrypt; SIGKILL of the audit leader mid-load. Every CreateKey that
 * succeeded has its event in the final log of every replica, the killed replica catches up
 * after its restart, the three logs are byte-identical, and `keyshard audit verify` passes on
 * each replica's folder with the cluster's trust file (every replica's key, the coordinator's
 * witness cosigning the leader's checkpoints, quorum 1).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { APP, DevCluster } from '@keyshard/devcluster';
import type { Status } from '@keyshard/client';
import { keyshard, readEnvFile } from './support/cli.ts';
import { waitFor } from './support/grpc.ts';

describe('replicated audit log: 3 sink replicas, audit leader SIGKILLed under SDK load', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-audit-replicas-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2, auditReplicas: 3 });
    await cluster.start();
    await cluster.bootstrap();
  });

  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const segments = (id: string) => {
    const d = path.join(cluster.layout.auditDirOf(id), 'segments');
    return Buffer.concat(readdirSync(d).sort().map((f) => readFileSync(path.join(d, f))));
  };

  it('no acknowledged event lost; logs byte-identical after catch-up; each folder verifies', async () => {
    const admin = cluster.client();
    const app = cluster.client(APP);
    const created: string[] = [];
    let failedCreates = 0;
    let encrypts = 0;
    let n = 0;
    let running = true;
    const worker = async () => {
      while (running) {
        const alias = `replicated-${++n}`;
        try {
          const key = await admin.createKey(alias, { policy: { encrypt: [APP] } });
          created.push(key.id);
          await app.encrypt(key.id, Buffer.from('hello'), {});
          encrypts += 1;
        } catch {
          failedCreates += 1;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    try {
      await waitFor('30 keys created', async () => (created.length >= 30 ? true : undefined));
      const leader = await cluster.waitForAuditLeader();
      await cluster.process(leader).kill();
      const atKill = created.length;
      const next = await waitFor('a new audit leader', async () => {
        const l = cluster.auditLeader();
        return l && l !== leader ? l : undefined;
      });
      await waitFor('30 more keys after the kill', async () => (created.length >= atKill + 30 ? true : undefined), 60_000);
      // `keyshard status` shows every replica: the killed one unreachable, the one that leads now
      // marked leader (it acknowledged the coordinator's latest batch) and sent to.
      const env = readEnvFile(cluster.envFile);
      const shown = await waitFor('status naming the new leader', async () => {
        const r = await keyshard(['status', '--json'], env);
        assert.equal(r.code, 0, r.stderr);
        const s = JSON.parse(r.stdout) as Status;
        const lead = s.audit_replicas.filter((x) => x.leader).map((x) => x.server_id);
        return lead.length === 1 && lead[0] === cluster.auditLeader() ? s : undefined;
      }, 30_000);
      assert.deepEqual(shown.audit_replicas.map((x) => [x.server_id, x.address, x.reachable]), cluster.auditSinkIds.map((id) => [id, cluster.layout.auditSinkAddress(id), id !== leader]));
      const sentTo = shown.audit_replicas.filter((x) => x.sending);
      assert.deepEqual(sentTo.map((x) => x.server_id), [shown.audit_replicas.find((x) => x.leader)!.server_id], 'the leader is the replica sent to');
      assert.equal(shown.audit_sink?.server_id, sentTo[0]!.server_id, 'audit_sink: the replica the coordinator sends to');
      const text = (await keyshard(['status'], env)).stdout;
      for (const id of cluster.auditSinkIds) assert.match(text, new RegExp(`^audit sink\\s+${id}\\s+127\\.0\\.0\\.1:\\d+\\s+(reachable|UNREACHABLE)`, 'm'), text);
      assert.match(text, new RegExp(`^audit sink\\s+${leader}\\s+\\S+\\s+UNREACHABLE`, 'm'), text);
      await cluster.start([leader]);
      const atReturn = created.length;
      await waitFor('20 more keys with the replica back', async () => (created.length >= atReturn + 20 ? true : undefined), 60_000);
      // The witness publishes (at most every 10 s, while the log grows) to every replica, the one
      // that was down included once it is back.
      await waitFor('a cosignature published on every replica', async () =>
        cluster.auditSinkIds.every((id) => {
          const f = path.join(cluster.layout.auditDirOf(id), 'cosigned.log');
          return existsSync(f) && readFileSync(f, 'utf8').trim() !== '';
        })
          ? true
          : undefined,
      30_000);
      console.log(`# audit leader ${leader} killed, ${next} took over; CreateKey ok ${created.length}, failed ${failedCreates}; Encrypt ok ${encrypts}`);
    } finally {
      running = false;
      await Promise.all(workers);
      admin.close();
      app.close();
    }
    // Stop the producers, then the replicas (each writes a last checkpoint), and compare folders.
    for (const id of [...cluster.coordinatorIds, ...cluster.custodianIds]) await cluster.process(id).stop();
    await new Promise((r) => setTimeout(r, 500)); // followers learn the last commit with the next heartbeat
    await Promise.all(cluster.auditSinkIds.map((id) => cluster.process(id).stop()));
    const logs = cluster.auditSinkIds.map(segments);
    for (const [i, b] of logs.entries()) assert.ok(b.equals(logs[0]!), `${cluster.auditSinkIds[i]}'s log differs from ${cluster.auditSinkIds[0]}'s`);
    const createdLogged = new Set(
      logs[0]!
        .toString('utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).event as { operation: string; key_id: string; result: string })
        .filter((e) => e.operation === 'keys.CreateKey' && e.result === 'ok')
        .map((e) => e.key_id),
    );
    assert.deepEqual(created.filter((k) => !createdLogged.has(k)), [], 'every created key has its audit event in every replica');
    const env = readEnvFile(cluster.envFile);
    for (const id of cluster.auditSinkIds) {
      // The cluster's trust roots (every replica's key: a folder holds checkpoints signed by the
      // leaders of its time; the coordinator's witness, quorum 1): the witness cosigned the
      // leader's checkpoints and published them on every replica.
      const t = await keyshard(['audit', 'verify', cluster.layout.auditDirOf(id), '--trust', cluster.layout.trustFile, '--json'], env);
      assert.equal(t.code, 0, `${id} with the trust file: ${t.stdout}${t.stderr}`);
    }
  });
});
