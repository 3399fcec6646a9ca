/**
 * Audit alerts (issue 5 item 8) against a real cluster, with the sink's default rules and its
 * /metrics endpoint on (port 0):
 *  - a principal denied five times within a minute raises one `denials` alert, not one more for
 *    the denials that follow: an `audit.alert` event of the sink in the Merkle log (Query, an
 *    inclusion proof, `keyshard audit query`), a warn line in the sink's log and
 *    keyshard_audit_alerts_total{rule="denials"} on /metrics; four denials raise nothing;
 *  - a key scheduled for destruction and destroyed through a quorum ceremony raises a `destroy`
 *    alert for each of the coordinator's real events (scheduled, ceremony opened, completed).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { APP, AUDITOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import { waitForCeremony, type KeyshardClient } from '@keyshard/client';
import { AuditReader, type StoredAuditEvent } from '@keyshard/audit-client/reader';
import { canonicalJson } from '@keyshard/crypto';
import { readTls } from '@keyshard/rpc';
import { observeFor, rejectsWith, waitFor, waitUntilPast } from './support/grpc.ts';

const run = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
const SINK = 'audit-sink'; // the sink's certificate identity in a dev cluster

describe('audit alerts (denials, destroy) from a real cluster', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  let reader: AuditReader;
  let auditorEnv: NodeJS.ProcessEnv;
  let metricsAddress: string;

  const sinkLog = () =>
    readFileSync(cluster.process('audit-sink').logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const query = async (filter: Parameters<AuditReader['query']>[0]) => {
    const out: StoredAuditEvent[] = [];
    for await (const e of reader.query(filter)) out.push(e);
    return out;
  };
  const alerts = (rule: string) => query({ operation: 'audit.alert' }).then((all) => all.filter((a) => a.event.details.rule === rule));
  const metric = async (series: string) => {
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-alerts-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    // The sink's config as the cluster wrote it, plus a metrics endpoint on any free port.
    const configFile = cluster.layout.configFile('audit-sink');
    writeFileSync(configFile, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), metrics: { listen: '127.0.0.1:0' } }));
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client();
    app = cluster.client(APP);
    const certs = cluster.layout.certs[AUDITOR]!;
    auditorEnv = { ...process.env, KEYSHARD_AUDIT_ADDR: `127.0.0.1:${cluster.layout.plan.ports.audit}`, KEYSHARD_CA: certs.ca, KEYSHARD_AUDIT_CERT: certs.cert, KEYSHARD_AUDIT_KEY: certs.key };
    reader = new AuditReader({ address: auditorEnv.KEYSHARD_AUDIT_ADDR!, tls: readTls(certs) });
    const listening = sinkLog().find((l) => l.msg === 'metrics listening');
    assert.ok(listening, 'the sink logs where /metrics is served');
    metricsAddress = listening.address as string;
    assert.match(metricsAddress, /^127\.0\.0\.1:[1-9]\d*$/);
  });

  after(async () => {
    reader?.close();
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('five denials of one principal within a minute: one alert in the log, the sink log and /metrics', async () => {
    const key = await admin.createKey('alerted', { policy: { encrypt: [APP] } }); // app may encrypt, not decrypt
    const { ciphertext } = await app.encrypt(key.id, Buffer.from('not for app to read'));
    const deniedInLog = (n: number) => waitFor(`${n} denials of app in the log`, async () => ((await query({ principal: APP, result: 'denied' })).length >= n ? true : undefined));

    for (let i = 0; i < 4; i++) await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    await deniedInLog(4);
    assert.deepEqual(await alerts('denials'), [], 'four denials are below the default threshold of five');
    assert.equal(await metric('keyshard_audit_alerts_total{rule="denials"}'), 0);

    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    const [alert] = await waitFor('the denials alert', async () => {
      const a = await alerts('denials');
      return a.length > 0 ? a : undefined;
    });
    for (let i = 0; i < 3; i++) await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    await deniedInLog(8);
    // An alert is appended right after the event that caused it: watched for 500 ms after the eighth denial is in the log.
    await observeFor('the denials alerts in the log after three more denials', 500, async () => {
      assert.equal((await alerts('denials')).length, 1, 'denials after the alert, within its window, raise no second one');
    });

    // The alert: an event of the sink itself, about app, with the counts.
    const e = alert!.event;
    assert.deepEqual([e.operation, e.principal, e.source, e.result], ['audit.alert', SINK, SINK, 'ok']);
    assert.deepEqual(
      { subject: e.details.subject, count: e.details.count, threshold: e.details.threshold, window: e.details.window_seconds, code: e.details.last_code },
      { subject: APP, count: '5', threshold: '5', window: '60', code: 'PERMISSION_DENIED' },
    );
    // In the Merkle log: its leaf is the hash of exactly this event, with a verified inclusion proof.
    const proof = await reader.inclusionProof(alert!.index);
    assert.equal(proof.leafHash.toString('hex'), createHash('sha256').update(Buffer.from([0])).update(canonicalJson(e)).digest('hex'));
    // It names the record that tipped it: app's fifth denial, stored before it.
    const trigger = Number(e.details.trigger_index);
    assert.ok(trigger < alert!.index);
    const stop = new AbortController();
    for await (const r of reader.tail(trigger, { signal: stop.signal })) {
      assert.deepEqual([r.index, r.event.principal, r.event.code, r.event.operation], [trigger, APP, 'PERMISSION_DENIED', 'keys.Decrypt']);
      break;
    }
    stop.abort();

    // The metric and the warn log line.
    assert.equal(await metric('keyshard_audit_alerts_total{rule="denials"}'), 1);
    assert.equal(await metric('keyshard_audit_alerts_total{rule="destroy"}'), 0);
    const cp = await reader.checkpoint();
    assert.ok((await metric('keyshard_audit_log_records'))! >= cp.tree_size);
    assert.ok((await metric('keyshard_audit_events_appended_total'))! > 0);
    assert.ok((await metric('keyshard_audit_append_batch_seconds_count'))! > 0);
    const lines = sinkLog().filter((l) => l.msg === 'audit alert');
    assert.equal(lines.length, 1);
    assert.deepEqual([lines[0]!.level, lines[0]!.rule, lines[0]!.subject, lines[0]!.count], [40, 'denials', APP, '5']); // pino: 40 = warn

    // What an auditor reads.
    const { stdout } = await run(process.execPath, [CLI, 'audit', 'query', '--operation', 'audit.alert'], { env: auditorEnv, cwd: REPO_ROOT });
    assert.match(stdout, /ALERT\s+denials: 5 denied calls by app within 60 s\s.*subject=app/);
  });

  it('a key scheduled for destruction and destroyed by a quorum ceremony: a destroy alert for each step', async () => {
    const k = await admin.createKey('doomed');
    await waitUntilPast('the end of the waiting period', (await admin.scheduleKeyDestruction(k.id, 1)).destruction_at);
    const c = await waitForCeremony(admin, await admin.startCeremony('destroy-key', { key: k.id })); // custodians approve by policy
    assert.equal(c.state, 'CEREMONY_STATE_COMPLETED');

    const destroyed = await waitFor('three destroy alerts', async () => {
      const a = await alerts('destroy');
      return a.length >= 3 ? a : undefined;
    });
    assert.deepEqual(
      destroyed.map((a) => [a.event.details.trigger_operation, a.event.key_id, a.event.ceremony_id, a.event.details.subject]),
      [
        ['keys.ScheduleKeyDestruction', k.id, '', 'admin'],
        ['ceremony.destroy-key.created', k.id, c.id, 'admin'],
        ['ceremony.destroy-key.completed', k.id, c.id, 'admin'],
      ],
    );
    assert.equal(await metric('keyshard_audit_alerts_total{rule="destroy"}'), 3);
    assert.equal(sinkLog().filter((l) => l.msg === 'audit alert' && l.rule === 'destroy').length, 3);
  });
});
