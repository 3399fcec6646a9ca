/**
 * Scoped appenders and quotas (issue 17 item 1) on the audit sink as `keyshard dev` configures
 * it (real process, mutual TLS, its /metrics on), attacked with the components' own certificates:
 *  - custodian-1's certificate records `keys.Decrypt` by `admin` (the attack of the issue):
 *    refused PERMISSION_DENIED (AUDIT_SCOPE), nothing of it stored, counted on /metrics, recorded
 *    as an `audit.append_refused` event of the sink naming custodian-1, which `keyshard audit
 *    query` shows with the source of every event;
 *  - custodian-1 floods 4 KB events (the 2,000 went in within 0.56 s): refused
 *    RESOURCE_EXHAUSTED (AUDIT_QUOTA) within its burst, one refusal recorded however many batches
 *    were refused, and `keyshard audit verify` of the log directory still says ok.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AuditClient, loadCheckpointKeys } from '@keyshard/audit-client';
import { AuditReader, type StoredAuditEvent } from '@keyshard/audit-client/reader';
import { AUDITOR, COORDINATOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import { readTls } from '@keyshard/rpc';
import { rejectsWith } from './support/grpc.ts';

const run = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
const CUSTODIAN = 'custodian-1';
const SINK = 'audit-sink';

describe('audit appenders: scopes and quotas', { timeout: 120_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let reader: AuditReader;
  let auditorEnv: NodeJS.ProcessEnv;
  let metricsAddress: string;
  const clients: AuditClient[] = [];

  const appender = (cn: string) => {
    const c = new AuditClient({
      address: `127.0.0.1:${cluster.layout.plan.ports.audit}`, tls: readTls(cluster.layout.certs[cn]!), source: cn, timeoutMs: 5_000,
      checkpointKeys: loadCheckpointKeys([cluster.layout.sinkCheckpointPublicKey]),
    });
    clients.push(c);
    return c;
  };
  const query = async (filter: Parameters<AuditReader['query']>[0]) => {
    const out: StoredAuditEvent[] = [];
    for await (const e of reader.query(filter)) out.push(e);
    return out;
  };
  const metric = async (series: string) => {
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  const cli = (args: string[]) => run(process.execPath, [CLI, ...args], { env: auditorEnv, cwd: REPO_ROOT });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-audit-scope-'));
    cluster = await DevCluster.create({ dir, custodians: 1, threshold: 1 });
    // The sink's config as `keyshard dev` writes it, plus a metrics endpoint on any free port.
    const configFile = cluster.layout.configFile(SINK);
    writeFileSync(configFile, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), metrics: { listen: '127.0.0.1:0' } }));
    await cluster.start([SINK]);
    const listening = readFileSync(cluster.process(SINK).logFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l.msg === 'metrics listening');
    metricsAddress = listening.address;
    const certs = cluster.layout.certs[AUDITOR]!;
    auditorEnv = { ...process.env, KEYSHARD_AUDIT_ADDR: `127.0.0.1:${cluster.layout.plan.ports.audit}`, KEYSHARD_CA: certs.ca, KEYSHARD_AUDIT_CERT: certs.cert, KEYSHARD_AUDIT_KEY: certs.key };
    reader = new AuditReader({ address: auditorEnv.KEYSHARD_AUDIT_ADDR!, tls: readTls(certs) });
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    reader?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a custodian's certificate recording `keys.Decrypt` by admin: refused, counted, recorded as the sink's refusal, shown with its source", async () => {
    const forged = { principal: 'admin', operation: 'keys.Decrypt', result: 'ok', key_id: 'k_forged' } as const;
    await rejectsWith(appender(CUSTODIAN).record(forged), 'PERMISSION_DENIED', 'AUDIT_SCOPE');
    // The same event from a coordinator is what a coordinator may record.
    await appender(COORDINATOR).record({ ...forged, key_id: 'k_real' });

    assert.deepEqual((await query({ operation: 'keys.Decrypt' })).map((e) => [e.event.key_id, e.event.source]), [['k_real', COORDINATOR]], 'nothing of the forged event is stored');
    assert.equal(await metric('keyshard_audit_append_refusals_total{reason="scope"}'), 1);
    assert.equal(await metric('keyshard_audit_append_refusals_total{reason="quota"}'), 0);
    const [refusal, ...more] = await query({ operation: 'audit.append_refused' });
    assert.equal(more.length, 0);
    assert.deepEqual(
      [refusal!.event.principal, refusal!.event.source, refusal!.event.result, refusal!.event.code, refusal!.event.details.reason, refusal!.event.details.scope, refusal!.event.details.tried_operation],
      [CUSTODIAN, SINK, 'denied', 'PERMISSION_DENIED', 'AUDIT_SCOPE', 'custodian', 'keys.Decrypt'],
    );
    assert.equal(JSON.stringify(refusal!.event).includes('k_forged'), false, 'the refusal does not copy the refused event');

    // What an auditor reads: who called, and which component recorded it.
    const { stdout: refused } = await cli(['audit', 'query', '--operation', 'audit.append_refused']);
    assert.match(refused, /denied\s+audit\.append_refused\s+by custodian-1\s+from audit-sink\s+code=PERMISSION_DENIED\s.*tried_operation=keys\.Decrypt/);
    const { stdout: decrypts } = await cli(['audit', 'query', '--operation', 'keys.Decrypt']);
    assert.match(decrypts, /^\s*\d+\s+\S+\s+ok\s+keys\.Decrypt\s+by admin\s+from coordinator-1\s+key=k_real\s/);
    const { stdout: tail } = await cli(['audit', 'tail', '-n', '2']);
    assert.match(tail, /audit\.append_refused\s+by custodian-1\s+from audit-sink\s.*\n.*keys\.Decrypt\s+by admin\s+from coordinator-1\s/);
    const { stdout: tailJson } = await cli(['audit', 'tail', '-n', '2', '--json']);
    assert.deepEqual(tailJson.trim().split('\n').map((l) => JSON.parse(l).event.source), [SINK, COORDINATOR]);
  });

  it('a flood of 4 KB events from a custodian: RESOURCE_EXHAUSTED within its burst, one refusal recorded, and the log still verifies', async () => {
    const flooder = appender(CUSTODIAN);
    const batch = (b: number) => Array.from({ length: 100 }, (_, i) => ({
      id: `flood-${b}-${i}`, time: new Date().toISOString(), source: CUSTODIAN, principal: 'admin', operation: 'custodian.GetStatus', key_id: '', ceremony_id: '',
      result: 'ok', code: '', request_id: '', details: { pad: 'x'.repeat(4000) },
    }));
    const t0 = performance.now();
    let stored = 0;
    let refusals = 0;
    for (let b = 0; b < 20 && refusals < 5; b++) {
      try {
        await flooder.recordAll(batch(b));
        stored += 100;
      } catch (e) {
        await rejectsWith(Promise.reject(e), 'RESOURCE_EXHAUSTED', 'AUDIT_QUOTA');
        refusals += 1;
      }
    }
    const ms = performance.now() - t0;
    assert.equal(refusals, 5, `refused within 20 batches of 100 (${stored} events stored)`);
    // The custodian default: a 2 MiB burst, then 512 KiB/s — about 500 of these events, not 2,000.
    assert.ok(stored >= 300 && stored <= 700, `${stored} events of 4 KB stored before the quota refused (${Math.round(ms)} ms)`);
    assert.equal(await metric('keyshard_audit_append_refusals_total{reason="quota"}'), 5);
    const recorded = (await query({ operation: 'audit.append_refused' })).filter((e) => e.event.details.reason === 'AUDIT_QUOTA');
    assert.deepEqual(
      recorded.map((e) => [e.event.principal, e.event.code, e.event.details.limit, e.event.details.tried_operation]),
      [[CUSTODIAN, 'RESOURCE_EXHAUSTED', 'bytes', 'custodian.GetStatus']],
      'one refusal recorded for the window, not one per refused batch',
    );

    await cluster.process(SINK).stop();
    const { stdout } = await cli(['audit', 'verify', cluster.layout.auditDir, '--sink-key', cluster.layout.sinkCheckpointPublicKey, '--witness-quorum', '0']);
    assert.match(stdout, /^ok: \d+ records/);
  });
});
