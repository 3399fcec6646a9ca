/**
 * grpc.health.v1 and server reflection on real processes (issue 7, items 1, 2 and 5): a dev
 * cluster of etcd, an audit sink, three custodians (threshold 2) and one coordinator.
 *  - the coordinator is NOT_SERVING ("" and keyshard.v1.KeyService) while sealed, SERVING once
 *    unsealed and NOT_SERVING again after Seal; its CeremonyService (liveness) always SERVING;
 *  - while etcd is stopped (SIGSTOP) an unsealed coordinator is NOT_SERVING and Status says etcd
 *    is unreachable; once etcd resumes it is SERVING again, still unsealed;
 *  - custodians and the audit sink are SERVING once started, each checked with its own
 *    certificate, as a Kubernetes exec probe does (the compiled probe script is run too);
 *  - reflection on the coordinator lists keyshard.v1.KeyService;
 *  - with Watch streams open, every component still stops cleanly on SIGTERM.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { ADMIN, COORDINATOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { checkHealth, healthDefinition, listServices, makeClient, readTls, type HealthStatus } from '@keyshard/rpc';
import { observeFor, waitFor } from './support/grpc.ts';
import { readLog } from './support/fault-report.ts';

const run = promisify(execFile);
const KEYS = 'keyshard.v1.KeyService';

describe('health and reflection on every component', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  const tlsOf = (principal: string) => readTls(cluster.layout.certs[principal]!);
  const coordinator = (service: string) => checkHealth(cluster.coordinatorAddress, tlsOf(ADMIN), service);
  const auditAddress = () => `127.0.0.1:${cluster.layout.plan.ports.audit}`;

  /** The Kubernetes exec probe, run as the manifests run it (compiled, plain node); resolves with its exit code. */
  const probe = async (address: string, principal: string, service: string): Promise<number> => {
    const c = cluster.layout.certs[principal]!;
    const args = ['packages/rpc/dist/health-probe.js', '--address', address, '--ca', c.ca, '--cert', c.cert, '--key', c.key, '--service', service];
    try {
      await run(process.execPath, args, { cwd: REPO_ROOT, timeout: 30_000 });
      return 0;
    } catch (e) {
      return (e as { code?: number }).code ?? -1;
    }
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-health-'));
    // A short registration lease, so that stopping etcd for a few seconds loses it (see the etcd case).
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, coordinatorOverrides: { registrationTtlSeconds: 2 } });
    await cluster.start();
    admin = cluster.client(ADMIN);
  });

  after(async () => {
    admin?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a sealed coordinator is NOT_SERVING for "" and KeyService, and SERVING for CeremonyService', async () => {
    assert.equal((await admin.status()).sealed, true);
    assert.equal(await coordinator(''), 'NOT_SERVING');
    assert.equal(await coordinator(KEYS), 'NOT_SERVING');
    assert.equal(await coordinator('keyshard.v1.CeremonyService'), 'SERVING');
    assert.equal(await probe(cluster.coordinatorAddress, COORDINATOR, KEYS), 1, 'the readiness probe fails while sealed');
    assert.equal(await probe(cluster.coordinatorAddress, COORDINATOR, 'keyshard.v1.CeremonyService'), 0, 'the liveness probe passes');
  });

  it('custodians and the audit sink are SERVING, asked with their own certificates', async () => {
    for (const id of cluster.custodianIds) {
      assert.equal(await checkHealth(cluster.custodianAddress(id), tlsOf(id), ''), 'SERVING', id);
      assert.equal(await checkHealth(cluster.custodianAddress(id), tlsOf(id), 'keyshard.v1.CustodianService'), 'SERVING', id);
    }
    assert.equal(await checkHealth(auditAddress(), tlsOf('audit-sink'), ''), 'SERVING');
    assert.equal(await checkHealth(auditAddress(), tlsOf('audit-sink'), 'keyshard.v1.AuditService'), 'SERVING');
    assert.equal(await probe(cluster.custodianAddress('custodian-1'), 'custodian-1', ''), 0);
    assert.equal(await probe(auditAddress(), 'audit-sink', ''), 0);
  });

  it('the coordinator is SERVING once unsealed, and a Watch sees it go NOT_SERVING on Seal', async () => {
    await cluster.bootstrap();
    assert.equal(await coordinator(''), 'SERVING');
    assert.equal(await coordinator(KEYS), 'SERVING');
    assert.equal(await probe(cluster.coordinatorAddress, COORDINATOR, KEYS), 0, 'the readiness probe passes once unsealed');

    const Health = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
    const client = makeClient<grpc.Client & { Watch(r: { service: string }): grpc.ClientReadableStream<{ status: HealthStatus }> }>(Health, cluster.coordinatorAddress, tlsOf(ADMIN));
    const seen: HealthStatus[] = [];
    const call = client.Watch({ service: KEYS });
    call.on('data', (r) => seen.push(r.status));
    call.on('error', () => {});
    try {
      await waitFor('the first Watch message', async () => (seen.length > 0 ? true : undefined), 5_000);
      await admin.seal();
      await waitFor('NOT_SERVING on the Watch', async () => (seen.at(-1) === 'NOT_SERVING' ? true : undefined), 10_000);
      assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
      assert.equal(await coordinator(''), 'NOT_SERVING');
    } finally {
      call.cancel();
      client.close();
    }
  });

  it('while etcd is stopped the unsealed coordinator is NOT_SERVING, and SERVING again once etcd resumes', async (t) => {
    await cluster.bootstrap(); // unsealed again after the Seal above
    assert.equal(await coordinator(KEYS), 'SERVING');
    const etcd = cluster.process(cluster.etcdNames[0]!);
    const stoppedAt = Date.now();
    etcd.pause();
    try {
      await waitFor('NOT_SERVING with etcd stopped', async () => ((await coordinator(KEYS)) === 'NOT_SERVING' ? true : undefined), 30_000);
      t.diagnostic(`NOT_SERVING ${Date.now() - stoppedAt} ms after etcd was stopped`);
      assert.equal(await coordinator(''), 'NOT_SERVING');
      assert.equal(await coordinator('keyshard.v1.CeremonyService'), 'SERVING', 'liveness holds: a restart would drop the root key');
      assert.equal(await probe(cluster.coordinatorAddress, COORDINATOR, KEYS), 1, 'the readiness probe fails');
      const s = await admin.status();
      assert.equal(s.etcd?.reachable, false, 'Status answers, and says etcd is unreachable');
      assert.notEqual(s.etcd?.error, '');
      assert.equal(s.sealed, false, 'an etcd outage does not seal the replica');
      // Held past 2 × the registration TTL: the lease is lost and registering again fails, with
      // backoff: a few log lines, not thousands (etcd3's open circuit breaker fails calls at once).
      const logSince = () => readLog(cluster.process(COORDINATOR).logFile).filter((l) => l.time >= stoppedAt);
      await waitFor('the registration lease lost and registering again failing', async () =>
        logSince().some((l) => l.msg === 'registration failed; retrying with backoff') ? true : undefined, 30_000);
      await observeFor('the coordinator log for the first 12 s of the etcd outage', Math.max(0, stoppedAt + 12_000 - Date.now()), () => {
        const n = logSince().length;
        assert.ok(n < 100, `${n} log lines in ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s of etcd outage`);
      }, 1_000);
      const lines = logSince();
      const counts = new Map<string, number>();
      for (const l of lines) counts.set(l.msg, (counts.get(l.msg) ?? 0) + 1);
      t.diagnostic(`coordinator log while etcd was stopped: ${[...counts].map(([m, n]) => `${n}× ${m}`).join('; ')}`);
      assert.ok(lines.length < 100, `${lines.length} log lines in 12 s of etcd outage`);
    } finally {
      etcd.resume();
    }
    const resumedAt = Date.now();
    await waitFor('SERVING once etcd is back', async () => ((await coordinator(KEYS)) === 'SERVING' ? true : undefined), 30_000);
    t.diagnostic(`SERVING ${Date.now() - resumedAt} ms after etcd resumed`);
    assert.equal(await coordinator(''), 'SERVING');
    const s = await admin.status();
    assert.deepEqual([s.etcd?.reachable, s.etcd?.error, s.sealed], [true, '', false]);
    await waitFor('the replica registered again', async () => ((await admin.status()).replicas.some((r) => r.id === COORDINATOR && !r.sealed) ? true : undefined), 30_000);
  });

  it('reflection on the coordinator lists keyshard.v1.KeyService (and the other services)', async () => {
    const names = await listServices(cluster.coordinatorAddress, tlsOf(ADMIN));
    for (const s of [KEYS, 'keyshard.v1.CeremonyService', 'grpc.health.v1.Health']) assert.ok(names.includes(s), `${s} in ${names.join(', ')}`);
  });

  it('with Watch streams open, every component stops on SIGTERM with exit code 0', async () => {
    const Health = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
    const watched: [string, string, string][] = [
      [COORDINATOR, cluster.coordinatorAddress, ADMIN],
      ...cluster.custodianIds.map((id): [string, string, string] => [id, cluster.custodianAddress(id), id]),
      ['audit-sink', auditAddress(), 'audit-sink'],
    ];
    const watching = new Set<string>(); // components whose Watch stream has sent its first status
    const clients = watched.map(([name, address, principal]) => {
      const client = makeClient<grpc.Client & { Watch(r: { service: string }): grpc.ClientReadableStream<unknown> }>(Health, address, tlsOf(principal));
      const call = client.Watch({ service: '' });
      call.on('error', () => {});
      call.on('data', () => watching.add(name));
      return client;
    });
    try {
      await waitFor('a first Watch message from every component', async () => (watching.size === watched.length ? true : undefined), 10_000);
      for (const [name] of watched) {
        const p = cluster.process(name);
        await p.stop(10_000);
        assert.equal(p.child?.signalCode, null, `${name} needed SIGKILL`);
        assert.equal(p.child?.exitCode, 0, `${name} exit code`);
      }
    } finally {
      for (const c of clients) c.close();
    }
  });
});
