/**
 * Observability and limits (issue 7) against a real cluster: one coordinator with /metrics on
 * and a KeyService concurrency limit of 2, three custodians (threshold 2) with /metrics on.
 *  - /metrics of the coordinator and of a custodian: requests by method and status code,
 *    latency histograms, seal state that flips with unseal and seal, leadership, ceremonies by
 *    operation and outcome, audit spool depth, etcd errors, what a custodian holds;
 *  - one request id, given by the caller of StartUnseal, in the coordinator's log and audit
 *    events, on its calls to the custodians, and in the custodians' logs and audit events;
 *  - `keyshard status --json` lists etcd's members and the audit sink (and says when the sink
 *    is down), and the replica at its advertiseAddress;
 *  - a burst beyond the limit: the excess is refused RESOURCE_EXHAUSTED at once and not
 *    audited, the admitted calls succeed, ceremony calls still work; an oversized message
 *    (unary, or one message of a client stream) is refused RESOURCE_EXHAUSTED and other
 *    calls go on.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ADMIN, APP, COORDINATOR, DevCluster, operatorOf } from '@keyshard/devcluster';
import { waitForCeremony, type KeyshardClient, type Status } from '@keyshard/client';
import { keyshardProto, makeClient, readTls, requestMetadata, unaryCall } from '@keyshard/rpc';
import { keyshard, readEnvFile } from './support/cli.ts';
import { refusalOf, rejectsWith, waitFor } from './support/grpc.ts';

type LogLine = Record<string, unknown>;
interface AuditLine {
  event: { operation: string; source: string; principal: string; request_id: string; code: string; result: string };
}

const MiB = 1024 * 1024;

describe('observability: metrics, request ids, cluster status, overload', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  let env: Record<string, string>;
  const metricsAt: Record<string, string> = {};
  let advertised: string;

  const logOf = (name: string): LogLine[] =>
    readFileSync(cluster.process(name).logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  const auditEvents = () =>
    readFileSync(cluster.auditLogFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as AuditLine).event);
  const scrape = async (name: string) => (await fetch(`http://${metricsAt[name]}/metrics`)).text();
  /** The value of one series (`name{labels}` exactly as exposed), undefined if absent. */
  const metric = async (name: string, series: string) => {
    const line = (await scrape(name)).split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  const requests = (name: string, method: string, code: string) => metric(name, `keyshard_rpc_requests_total{method="${method}",code="${code}"}`).then((v) => v ?? 0);
  const rewriteConfig = (name: string, change: (cfg: Record<string, unknown>) => void) => {
    const file = cluster.layout.configFile(name);
    const cfg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    change(cfg);
    writeFileSync(file, JSON.stringify(cfg, null, 2));
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-observability-'));
    cluster = await DevCluster.create({
      dir,
      custodians: 3,
      threshold: 2,
      coordinatorOverrides: { metrics: { listen: '127.0.0.1:0' }, maxConcurrentCalls: 2 },
    });
    // Custodians: /metrics on any free port. The coordinator: registered under a name, not its listen IP.
    for (const id of cluster.custodianIds) rewriteConfig(id, (cfg) => (cfg.metrics = { listen: '127.0.0.1:0' }));
    rewriteConfig(COORDINATOR, (cfg) => {
      advertised = `localhost:${String(cfg.listen).split(':')[1]}`;
      cfg.advertiseAddress = advertised;
    });
    await cluster.start();
    for (const name of [COORDINATOR, ...cluster.custodianIds]) {
      const line = logOf(name).find((l) => l.msg === 'metrics listening');
      assert.ok(line, `${name} logs where /metrics is served`);
      assert.match(String(line.address), /^127\.0\.0\.1:[1-9]\d*$/);
      metricsAt[name] = String(line.address);
    }
    admin = cluster.client();
    app = cluster.client(APP);
    env = readEnvFile(cluster.envFile);
  });

  after(async () => {
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('/metrics: requests by method and code, latencies, seal state, leadership, ceremonies; custodians too', async () => {
    assert.equal(await metric(COORDINATOR, 'keyshard_sealed'), 1, 'a coordinator starts sealed');
    await cluster.bootstrap(); // init, then an unseal ceremony the custodians approve by policy
    assert.equal(await metric(COORDINATOR, 'keyshard_sealed'), 0, 'unsealed');
    assert.equal(await requests(COORDINATOR, 'ceremony.Init', 'OK'), 1);
    assert.equal(await metric(COORDINATOR, 'keyshard_ceremonies_total{operation="unseal",outcome="created"}'), 1);
    assert.equal(await metric(COORDINATOR, 'keyshard_ceremonies_total{operation="unseal",outcome="completed"}'), 1);
    await waitFor('leadership', async () => ((await metric(COORDINATOR, 'keyshard_leader')) === 1 ? true : undefined));

    const key = await admin.createKey('observed', { policy: { encrypt: [APP] } }); // app encrypts; nobody decrypts
    let ciphertext: Buffer | undefined;
    for (let i = 0; i < 3; i++) ciphertext = (await app.encrypt(key.id, Buffer.from(`m${i}`))).ciphertext;
    await rejectsWith(app.decrypt(ciphertext!), 'PERMISSION_DENIED');
    assert.equal(await requests(COORDINATOR, 'keys.CreateKey', 'OK'), 1);
    assert.equal(await requests(COORDINATOR, 'keys.Encrypt', 'OK'), 3);
    assert.equal(await requests(COORDINATOR, 'keys.Decrypt', 'PERMISSION_DENIED'), 1);
    assert.equal(await requests(COORDINATOR, 'keys.Decrypt', 'OK'), 0);
    assert.equal(await metric(COORDINATOR, 'keyshard_rpc_request_duration_seconds_count{method="keys.Encrypt"}'), 3);
    assert.equal(await metric(COORDINATOR, 'keyshard_rpc_request_duration_seconds_bucket{le="+Inf",method="keys.Encrypt"}'), 3);
    assert.ok((await metric(COORDINATOR, 'keyshard_rpc_request_duration_seconds_sum{method="keys.Encrypt"}'))! > 0);
    assert.equal(await metric(COORDINATOR, 'keyshard_key_calls_in_flight'), 0);
    assert.equal(await metric(COORDINATOR, 'keyshard_etcd_errors_total'), 0);
    await waitFor('the spool shipped', async () => ((await metric(COORDINATOR, 'keyshard_audit_spool_pending_events')) === 0 ? true : undefined));
    assert.match(await scrape(COORDINATOR), /^process_resident_memory_bytes /m, 'process metrics too');

    // A custodian: the calls the coordinator made (init delivered a share; the unseal proposed a ceremony).
    const c1 = 'custodian-1';
    assert.equal(await requests(c1, 'custodian.DeliverShare', 'OK'), 1);
    assert.ok((await requests(c1, 'custodian.ProposeCeremony', 'OK')) >= 1);
    assert.ok((await requests(c1, 'custodian.GetIdentity', 'OK')) >= 1);
    assert.equal(await metric(c1, 'keyshard_rpc_request_duration_seconds_count{method="custodian.DeliverShare"}'), 1);
    assert.equal(await metric(c1, 'keyshard_custodian_share_clusters'), 1);
    assert.equal(await metric(c1, 'keyshard_custodian_pending_ceremonies'), 0);
    // No label carries a key id, a principal or a ceremony id.
    for (const name of [COORDINATOR, c1]) assert.doesNotMatch(await scrape(name), new RegExp(`${key.id}|principal=|cer-`));
  });

  it('one request id: caller → coordinator (log, audit) → custodians (calls, logs, audit)', async () => {
    await admin.seal();
    assert.equal(await metric(COORDINATOR, 'keyshard_sealed'), 1, 'sealed again');
    const rid = `obs-${randomUUID()}`;
    const c = await waitForCeremony(admin, await admin.startUnseal(undefined, { requestId: rid }));
    assert.equal(c.state, 'CEREMONY_STATE_COMPLETED');
    assert.equal(await metric(COORDINATOR, 'keyshard_sealed'), 0, 'the seal gauge flips back');
    assert.equal(await metric(COORDINATOR, 'keyshard_ceremonies_total{operation="unseal",outcome="completed"}'), 2);

    // The coordinator's log: the call itself and what the ceremony it opened logged later.
    const coordinatorLines = logOf(COORDINATOR).filter((l) => l.request_id === rid);
    assert.ok(coordinatorLines.some((l) => l.msg === 'request completed' && l.method === 'ceremony.StartUnseal'), JSON.stringify(coordinatorLines));
    assert.ok(coordinatorLines.some((l) => l.msg === 'unsealed' && l.ceremonyId === c.id), 'the ceremony driven for the request logs with its id');

    // Each custodian served the coordinator's calls for this ceremony under the same id.
    for (const id of cluster.custodianIds) {
      const lines = logOf(id).filter((l) => l.request_id === rid);
      assert.ok(lines.some((l) => l.msg === 'request completed' && l.method === 'custodian.ProposeCeremony'), `${id}: ${JSON.stringify(lines)}`);
    }

    // The audit log: the coordinator's events (the call, its intent, the ceremony's steps) and the custodians'.
    const events = await waitFor('the audit events of the request', async () => {
      const all = auditEvents().filter((e) => e.request_id === rid);
      return all.some((e) => e.operation === 'ceremony.unseal.completed') ? all : undefined;
    });
    const coordinatorOps = new Set(events.filter((e) => e.source === COORDINATOR).map((e) => e.operation));
    for (const op of ['ceremony.StartUnseal.requested', 'ceremony.StartUnseal', 'ceremony.unseal.created', 'ceremony.unseal.share_accepted', 'ceremony.unseal.completing', 'ceremony.unseal.completed'])
      assert.ok(coordinatorOps.has(op), `${op} carries the request id: ${[...coordinatorOps].join(', ')}`);
    const custodianSources = new Set(events.filter((e) => e.operation === 'custodian.ProposeCeremony').map((e) => e.source));
    assert.deepEqual([...custodianSources].sort(), cluster.custodianIds);
    // Calls of other requests keep their own ids.
    assert.ok(auditEvents().some((e) => e.operation === 'ceremony.Seal' && e.request_id !== rid && e.request_id !== ''));
  });

  it('keyshard status --json: replicas at their advertised address, etcd members, the audit sink', async () => {
    const endpoints = (JSON.parse(readFileSync(cluster.layout.configFile(COORDINATOR), 'utf8')) as { etcd: { endpoints: string[] } }).etcd.endpoints;
    const sinkAddress = `127.0.0.1:${cluster.layout.plan.ports.audit}`;
    const res = await keyshard(['status', '--json'], env);
    assert.equal(res.code, 0, res.stderr);
    const s = JSON.parse(res.stdout) as Status;
    assert.deepEqual(s.replicas.map((r) => [r.id, r.address]), [[COORDINATOR, advertised]], 'registered under advertiseAddress');
    assert.ok(s.etcd, 'etcd is reported');
    assert.equal(s.etcd.reachable, true);
    assert.equal(s.etcd.members.length, endpoints.length);
    for (const m of s.etcd.members) {
      assert.match(m.id, /^[0-9a-f]+$/);
      assert.ok(m.name.length > 0);
      assert.ok(m.client_urls.every((u) => endpoints.includes(u)), `${m.client_urls} are the configured endpoints`);
      assert.equal(m.learner, false);
    }
    assert.equal(s.etcd.members.filter((m) => m.leader).length, 1, 'one raft leader');
    assert.match(s.etcd.version, /^3\.\d+\.\d+$/);
    assert.ok(s.audit_sink);
    assert.deepEqual([s.audit_sink.address, s.audit_sink.reachable, s.audit_sink.error], [sinkAddress, true, '']);
    const records = auditEvents().length;
    assert.ok(Number(s.audit_sink.tree_size) > 0 && Number(s.audit_sink.tree_size) <= records + 10, `tree size ${s.audit_sink.tree_size}, ${records} records`);
    assert.ok(!Number.isNaN(Date.parse(s.audit_sink.checkpoint_time)));

    const text = (await keyshard(['status'], env)).stdout;
    assert.match(text, /^etcd\s+\S+\s+https:\/\/127\.0\.0\.1:\d+\s+leader/m);
    const shown = new RegExp(`^audit sink\\s+${sinkAddress.replace(/\./g, '\\.')}\\s+reachable, (\\d+) records$`, 'm').exec(text);
    assert.ok(shown, text);
    assert.ok(Number(shown[1]) >= Number(s.audit_sink.tree_size), 'the log only grows');

    // With the sink down, status still answers (its own audit event waits in the spool) and says so.
    await cluster.process('audit-sink').stop();
    try {
      const down = JSON.parse((await keyshard(['status', '--json'], env)).stdout) as Status;
      assert.deepEqual([down.audit_sink?.reachable, down.etcd?.reachable], [false, true]);
      assert.match((await keyshard(['status'], env)).stdout, /^audit sink\s+\S+\s+UNREACHABLE/m);
    } finally {
      await cluster.start(['audit-sink']);
    }
    await waitFor('the sink back in status', async () => ((await admin.status()).audit_sink?.reachable ? true : undefined));
  });

  it('a burst beyond maxConcurrentCalls: the excess is refused RESOURCE_EXHAUSTED at once, the rest succeed', async () => {
    const key = await admin.getKey('observed');
    const burstClient = cluster.client(APP);
    try {
      const refusedBefore = await requests(COORDINATOR, 'keys.Encrypt', 'RESOURCE_EXHAUSTED');
      const okBefore = await requests(COORDINATOR, 'keys.Encrypt', 'OK');
      const auditedBefore = auditEvents().filter((e) => e.operation === 'keys.Encrypt').length;
      const started = Date.now();
      const [results, status] = await Promise.all([
        Promise.allSettled(Array.from({ length: 64 }, (_, i) => burstClient.encrypt(key.id, Buffer.from(`burst ${i}`)))),
        admin.status(), // ceremony calls are not limited: an admin can still see (and seal) an overloaded replica
      ]);
      assert.equal(status.sealed, false);
      const ok = results.filter((r) => r.status === 'fulfilled').length;
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => refusalOf(r.reason));
      assert.ok(ok >= 2, `the admitted calls succeed (${ok})`);
      assert.ok(refused.length >= 1, 'a burst of 64 exceeds a limit of 2');
      for (const e of refused) {
        assert.deepEqual([e.code, e.reason], ['RESOURCE_EXHAUSTED', 'OVERLOADED'], e.message);
        assert.match(e.message, /keys service is at its limit of 2 concurrent calls/);
      }
      assert.ok(Date.now() - started < 10_000);
      assert.equal((await burstClient.encrypt(key.id, Buffer.from('after'))).key_id, key.id, 'served again once the burst is over');

      assert.equal((await requests(COORDINATOR, 'keys.Encrypt', 'RESOURCE_EXHAUSTED')) - refusedBefore, refused.length, 'every refusal counted');
      assert.equal((await requests(COORDINATOR, 'keys.Encrypt', 'OK')) - okBefore, ok + 1);
      // Shed calls did nothing and are not audited; the admitted ones are.
      await waitFor('the spool shipped', async () => ((await metric(COORDINATOR, 'keyshard_audit_spool_pending_events')) === 0 ? true : undefined));
      const audited = auditEvents().filter((e) => e.operation === 'keys.Encrypt');
      assert.equal(audited.length - auditedBefore, ok + 1);
      assert.equal(audited.filter((e) => e.code === 'RESOURCE_EXHAUSTED').length, 0);
      assert.equal(await metric(COORDINATOR, 'keyshard_key_calls_in_flight'), 0);
    } finally {
      burstClient.close();
    }
  });

  it('an oversized message is refused RESOURCE_EXHAUSTED (unary and in a client stream) and other calls go on', async () => {
    const key = await admin.getKey('observed');
    const other = cluster.client(APP);
    try {
      // Coordinator (maxMessageBytes 8 MiB by default): a 9 MiB plaintext, with a normal call from another client alongside.
      const [huge, normal] = await Promise.allSettled([app.encrypt(key.id, Buffer.alloc(9 * MiB)), other.encrypt(key.id, Buffer.from('small'))]);
      assert.equal(huge.status, 'rejected');
      assert.equal(refusalOf((huge as PromiseRejectedResult).reason).code, 'RESOURCE_EXHAUSTED');
      assert.equal(normal.status, 'fulfilled');
      assert.equal((await app.encrypt(key.id, Buffer.from('still fine'))).key_id, key.id, 'the same client goes on');

      // One message of a client stream (VerifyBackup) over the limit.
      const tls = readTls(cluster.layout.certs[ADMIN]!);
      const backup = makeClient<grpc.Client>(keyshardProto().BackupService, cluster.coordinatorAddress, tls);
      try {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          const call = (backup as unknown as { VerifyBackup(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }).VerifyBackup(
            requestMetadata(),
            resolve,
          );
          call.on('error', () => {});
          call.write({ data: Buffer.alloc(9 * MiB) });
          call.end();
        });
        assert.equal(err && grpc.status[err.code], 'RESOURCE_EXHAUSTED', err?.details);
      } finally {
        backup.close();
      }

      // A custodian accepts 1 MiB at most.
      const c1 = 'custodian-1';
      const opTls = readTls(cluster.layout.certs[operatorOf(c1)]!);
      const raw = makeClient(keyshardProto().CustodianService, cluster.custodianAddress(c1), opTls);
      try {
        await rejectsWith(unaryCall(raw, 'ShowCeremony', { id: 'x'.repeat(2 * MiB) }), 'RESOURCE_EXHAUSTED');
        await rejectsWith(unaryCall(raw, 'ShowCeremony', { id: 'no-such-ceremony' }), 'NOT_FOUND'); // served as usual
      } finally {
        raw.close();
      }
      assert.equal((await other.status()).sealed, false);
    } finally {
      other.close();
    }
  });
});
