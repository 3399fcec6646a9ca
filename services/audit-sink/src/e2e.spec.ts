/**
 * End to end: the sink as a real child process (main.ts, mutual TLS, port 0) driven by the
 * real AuditClient; then crash (SIGKILL), restart on the same data dir, and graceful stop.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { AuditClient, AuditSpool } from '@keyshard/audit-client';
import { AuditReader } from '@keyshard/audit-client/reader';
import { createLogger } from '@keyshard/config';
import { COSIGNED_FILE, checkpointNote, cosign, fromCheckpointMsg, hmacValue, keyIdOf, verifyInclusion, verifyLogDir, witnessName } from '@keyshard/audit-log';
import { makeTestPki, type TestPki } from '@keyshard/pki/testing';
import { KeyshardError } from '@keyshard/errors';
import { isServiceError, keyshardProto, makeClient, reasonOfStatus, unaryCall } from '@keyshard/rpc';
import * as grpc from '@grpc/grpc-js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const children = new Set<ChildProcess>();

interface Sink {
  child: ChildProcess;
  address: string;
  stdout: string[];
  exited: Promise<number | null>;
}

/** Spawns main.ts and resolves with the address from its "listening" log line. */
function startSink(configFile: string): Promise<Sink> {
  const child = spawn(process.execPath, ['--conditions=keyshard-source', '--import', 'tsx', 'services/audit-sink/src/main.ts', '--config', configFile], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => (children.delete(child), r(code))));
  const stdout: string[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sink did not start: ${stderr}`)), 20_000);
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        stdout.push(line);
        const rec = JSON.parse(line) as { msg?: string; address?: string };
        if (rec.msg === 'listening' && rec.address) {
          clearTimeout(timer);
          resolve({ child, address: rec.address, stdout, exited });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`sink exited with ${code}: ${stderr}`), { exitCode: code, stderr }));
    });
  });
}

const isCode = (code: string) => (e: unknown) => e instanceof KeyshardError && e.code === code;

describe('audit sink end to end', () => {
  let dir: string;
  let pki: TestPki;
  let sink: Sink;
  let configFile: string;
  const clients: AuditClient[] = [];
  const grpcClients: grpc.Client[] = [];
  // The sink made its checkpoint key on first start; producers are configured with its public key.
  const sinkKeys = () => {
    const pub = createPublicKey(createPrivateKey(readFileSync(path.join(dir, 'sink-keys', 'checkpoint.pem'))));
    return new Map([[keyIdOf(pub), pub]]);
  };
  const alerts: string[] = [];
  const auditClient = (cn: string, opts: { source?: string; timeoutMs?: number } = {}) => {
    const c = new AuditClient({
      address: sink.address, tls: pki.material(cn), source: opts.source ?? cn, timeoutMs: opts.timeoutMs ?? 2000,
      checkpointKeys: sinkKeys(), onAlert: (a) => alerts.push(a.reason),
    });
    clients.push(c);
    return c;
  };
  const rawClient = (cn: string) => rawClientAt(sink.address, cn);
  const rawClientAt = (address: string, cn: string) => {
    const c = makeClient(keyshardProto().AuditService, address, pki.material(cn));
    grpcClients.push(c);
    return c;
  };
  const writeConfig = (listen: string, dataDir = path.join(dir, 'data'), more: Record<string, unknown> = {}) => {
    const file = path.join(dir, `sink-${Math.random().toString(36).slice(2)}.json`);
    const keys = path.join(dir, 'sink-keys');
    const cfg = {
      listen, dataDir, tls: pki.files('audit-sink'), appenders: [{ principal: 'coordinator', scope: 'coordinator' }, { principal: 'custodian-1', scope: 'custodian' }], readers: ['auditor'], logLevel: 'info',
      checkpointKeyFile: path.join(keys, 'checkpoint.pem'), hmacKeyFile: path.join(keys, 'hmac.key'), sensitive: { details: ['tenant'] }, ...more,
    };
    writeFileSync(file, JSON.stringify(cfg));
    return file;
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'audit-e2e-'));
    pki = await makeTestPki(dir, 'audit-sink', ['coordinator', 'intruder', 'auditor', 'custodian-1']);
    configFile = writeConfig('127.0.0.1:0');
    sink = await startSink(configFile);
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    for (const c of grpcClients) c.close();
    for (const child of children) if (child.pid) process.kill(child.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('logs the actually bound port', () => {
    assert.match(sink.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(sink.address, '127.0.0.1:0');
  });

  it('500 concurrent events are all acknowledged, stored once each, and the log verifies', async () => {
    const c = auditClient('coordinator');
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        c.record({ principal: `svc-${i % 7}`, operation: i % 2 ? 'keys.Encrypt' : 'keys.Decrypt', result: 'ok', key_id: `key-${i % 5}`, details: { n: String(i) } }),
      ),
    );
    const file = path.join(dir, 'data', 'audit.log');
    assert.equal(readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 500);
    const v = verifyLogDir(path.join(dir, 'data'), { trust: { sinkKeys: sinkKeys(), witnesses: [], witnessQuorum: 0 } });
    assert.equal(v.ok, true, v.reason);
    assert.equal(v.records, 500);

    const cp = await unaryCall(rawClient('auditor'), 'GetCheckpoint', {});
    assert.deepEqual([cp.tree_size, cp.root_hash], [500, v.rootHash]);
    const proof = await unaryCall(rawClient('auditor'), 'GetInclusionProof', { index: 123, tree_size: 400 });
    assert.ok(verifyInclusion(123, 400, proof.leaf_hash, proof.path, proof.root_hash));
  });

  it('readers page through Query with filters; appenders may not Query', async () => {
    const reader = rawClient('auditor');
    const seen: number[] = [];
    let token = '';
    do {
      const page = await unaryCall(reader, 'Query', { operation: 'keys.Encrypt', page_size: 60, page_token: token });
      assert.ok(page.events.length <= 60);
      for (const e of page.events) {
        assert.equal(e.event?.operation, 'keys.Encrypt');
        assert.equal(e.event?.source, 'coordinator');
        seen.push(e.index);
      }
      token = page.next_page_token;
    } while (token);
    assert.equal(seen.length, 250);
    assert.equal(new Set(seen).size, 250);
    await assert.rejects(unaryCall(reader, 'Query', { page_token: 'bm9wZQ' }), (e) => isServiceError(e) && e.code === grpc.status.INVALID_ARGUMENT);
    await assert.rejects(unaryCall(rawClient('coordinator'), 'Query', {}), (e) => isServiceError(e) && e.code === grpc.status.PERMISSION_DENIED);
    await assert.rejects(unaryCall(reader, 'GetInclusionProof', { index: 600 }), (e) => isServiceError(e) && e.code === grpc.status.INVALID_ARGUMENT);
  });

  it('stores marked and configured sensitive details as HMACs that HashValue reproduces', async () => {
    await auditClient('coordinator').record({ principal: 'p', operation: 'keys.Encrypt', result: 'ok', details: { 'sensitive.context.user': 'alice', tenant: 'acme', version: '3' } });
    const text = readFileSync(path.join(dir, 'data', 'audit.log'), 'utf8');
    assert.ok(!text.includes('alice') && !text.includes('acme'));
    const key = Buffer.from(readFileSync(path.join(dir, 'sink-keys', 'hmac.key'), 'utf8').trim(), 'hex');
    const stored = JSON.parse(text.trim().split('\n').at(-1)!).event.details;
    assert.deepEqual(stored, { 'sensitive.context.user': hmacValue(key, 'alice'), tenant: hmacValue(key, 'acme'), version: '3' });
    const { hash } = await unaryCall(rawClient('auditor'), 'HashValue', { value: 'acme' });
    assert.equal(hash, stored.tenant);
  });

  it('refuses an appender whose certificate CN is not listed, a forged source, and a forged alert; records the last two as refusals', async () => {
    await assert.rejects(auditClient('intruder', { source: 'coordinator' }).record({ principal: 'p', operation: 'keys.Encrypt', result: 'ok' }), isCode('PERMISSION_DENIED'));
    await assert.rejects(auditClient('coordinator', { source: 'custodian-1' }).record({ principal: 'p', operation: 'custodian.GetStatus', result: 'ok' }), isCode('PERMISSION_DENIED'));
    await assert.rejects(auditClient('coordinator').record({ principal: 'p', operation: 'audit.alert', result: 'ok', details: { rule: 'destroy' } }), isCode('PERMISSION_DENIED'));
    // The refusal is recorded as the batch is refused (refusals.ts appends without holding the
    // reply back), so it may become durable just after the appender hears the refusal.
    let page = await unaryCall(rawClient('auditor'), 'Query', { operation: 'audit.append_refused' });
    for (let i = 0; i < 50 && page.events.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 50));
      page = await unaryCall(rawClient('auditor'), 'Query', { operation: 'audit.append_refused' });
    }
    assert.deepEqual(
      page.events.map((e) => [e.index, e.event?.principal, e.event?.source, e.event?.code, e.event?.details.tried_operation, e.event?.details.claimed_source]),
      [[501, 'coordinator', 'audit-sink', 'PERMISSION_DENIED', 'custodian.GetStatus', 'custodian-1'], [502, 'coordinator', 'audit-sink', 'PERMISSION_DENIED', 'audit.alert', undefined]],
      'the unlisted intruder is refused before it is an appender: nothing to record',
    );
    assert.equal(verifyLogDir(path.join(dir, 'data'), { trust: { sinkKeys: sinkKeys(), witnesses: [], witnessQuorum: 0 } }).records, 503);
  });

  it('a producer over its quota is refused RESOURCE_EXHAUSTED: its spool keeps the events, backs off and ships them all once the bucket refills', async () => {
    // Another sink on its own log, with a coordinator quota of 400 events/s (burst 1000).
    const quotas = { coordinator: { eventsPerSecond: 400, burstEvents: 1000 } };
    const tight = await startSink(writeConfig('127.0.0.1:0', path.join(dir, 'quota-data'), { quotas }));
    const client = new AuditClient({ address: tight.address, tls: pki.material('coordinator'), source: 'coordinator', checkpointKeys: sinkKeys() });
    const spool = await AuditSpool.open({ dir: path.join(dir, 'quota-spool'), source: 'coordinator', shipDelayMs: 5 }, client, createLogger('spool', 'silent'));
    try {
      const t0 = Date.now();
      // 2,000 Encrypts' events: each is durable in the spool at once, whatever the sink says.
      await Promise.all(Array.from({ length: 2000 }, (_, i) => spool.record({ principal: 'app', operation: 'keys.Encrypt', result: 'ok', details: { n: String(i) } })));
      assert.ok(Date.now() - t0 < 2000, `recording took ${Date.now() - t0} ms`);
      while (spool.pending > 0) {
        assert.ok(Date.now() - t0 < 15_000, `${spool.pending} events still unshipped`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // 1,000 in the burst, the rest at 400/s: refused at least once on the way, retried about once a second, not in a loop.
      const refusedLines = tight.stdout.filter((l) => JSON.parse(l).msg === 'append refused');
      assert.ok(refusedLines.length >= 1 && refusedLines.length <= 6, `${refusedLines.length} refused batches`);
      assert.deepEqual(JSON.parse(refusedLines[0]!), { ...JSON.parse(refusedLines[0]!), reason: 'quota', principal: 'coordinator', scope: 'coordinator', limit: 'events' });
      const page = await unaryCall(rawClientAt(tight.address, 'auditor'), 'Query', { operation: 'audit.append_refused' });
      assert.deepEqual(
        page.events.map((e) => [e.event?.operation, e.event?.principal, e.event?.code, e.event?.details.reason, e.event?.details.limit]),
        [['audit.append_refused', 'coordinator', 'RESOURCE_EXHAUSTED', 'AUDIT_QUOTA', 'events']],
        'one refusal recorded for the window, however many batches were refused',
      );
      await spool.close();
      await client.close();
      const v = verifyLogDir(path.join(dir, 'quota-data'), { trust: { sinkKeys: sinkKeys(), witnesses: [], witnessQuorum: 0 } });
      assert.equal(v.ok, true, v.reason);
      assert.equal(v.records, 2001, 'every event once, and the one refusal');
    } finally {
      process.kill(tight.child.pid!, 'SIGTERM');
      await tight.exited;
    }
  });

  it('after SIGKILL, record() rejects with UNAVAILABLE within the timeout; a restart resumes', async () => {
    const c = auditClient('coordinator', { timeoutMs: 1500 });
    await c.record({ principal: 'p', operation: 'keys.BeforeKill', result: 'ok' });
    process.kill(sink.child.pid!, 'SIGKILL');
    await sink.exited;
    const t0 = Date.now();
    await assert.rejects(c.record({ principal: 'p', operation: 'keys.DuringOutage', result: 'ok' }), isCode('UNAVAILABLE'));
    assert.ok(Date.now() - t0 <= 1500 + 250, `took ${Date.now() - t0} ms`);

    // Same data dir (the dead process's lock is taken over) and same port, so the client reconnects lazily.
    // Until the channel's reconnect backoff (at most 1 s) elapses, record() still fails fast.
    sink = await startSink(writeConfig(sink.address));
    const deadline = Date.now() + 3000;
    for (;;) {
      try {
        await c.record({ principal: 'p', operation: 'keys.AfterRestart', result: 'ok' });
        break;
      } catch (e) {
        if (!isCode('UNAVAILABLE')(e) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const v = verifyLogDir(path.join(dir, 'data'), { trust: { sinkKeys: sinkKeys(), witnesses: [], witnessQuorum: 0 } });
    assert.equal(v.ok, true, v.reason);
    assert.equal(v.records, 505);
    // The restarted sink proved its new checkpoint extends the one the client verified before the kill.
    assert.equal(c.distrusted, undefined);
    assert.equal(c.lastCheckpoint?.tree_size, 505);
    assert.deepEqual(alerts, []);
  });

  it('refuses to start on a tampered log', async () => {
    const bad = path.join(dir, 'tampered');
    cpSync(path.join(dir, 'data'), bad, { recursive: true, verbatimSymlinks: true });
    rmSync(path.join(bad, 'LOCK'), { force: true });
    const seg = path.join(bad, 'segments', readdirSync(path.join(bad, 'segments'))[0]!);
    const src = readFileSync(seg, 'utf8').split('\n');
    src[1] = src[1]!.replace('"result":"ok"', '"result":"denied"');
    writeFileSync(seg, src.join('\n'));
    await assert.rejects(startSink(writeConfig('127.0.0.1:0', bad)), (e: { exitCode?: number; stderr?: string }) =>
      e.exitCode === 1 && /failed verification at record 1/.test(e.stderr ?? ''),
    );
  });

  it('ATTACK (appender): AddCosignature only from coordinators, one write per caller per interval: a custodian is refused, a flooding coordinator after its first', async () => {
    const readers: AuditReader[] = [];
    const readerOf = (cn: string) => (readers.push(new AuditReader({ address: sink.address, tls: pki.material(cn) })), readers.at(-1)!);
    const witnessKey = generateKeyPairSync('ed25519').privateKey;
    const cp = fromCheckpointMsg((await unaryCall(rawClient('coordinator'), 'GetCheckpoint', {}))!);
    const note = checkpointNote(cp);
    const cosigned = (cn: string, time: number) => ({ checkpoint: cp, note, cosignatures: [cosign(witnessKey, witnessName(cn), note, time)] });
    const reason = (code: grpc.status, want: string) => (e: unknown) => isServiceError(e) && e.code === code && reasonOfStatus(e) === want;
    const lines = () => readFileSync(path.join(dir, 'data', COSIGNED_FILE), 'utf8').split('\n').filter(Boolean).length;
    const t = Math.floor(Date.now() / 1000);
    try {
      // Before the fix a custodian (any appender) could append lines to cosigned.log at will.
      await assert.rejects(readerOf('custodian-1').addCosignature(cosigned('custodian-1', t)), reason(grpc.status.PERMISSION_DENIED, 'AUDIT_SCOPE'));
      const coordinator = readerOf('coordinator');
      await coordinator.addCosignature(cosigned('coordinator', t));
      await coordinator.addCosignature(cosigned('coordinator', t)); // nothing newer: accepted, not written
      await assert.rejects(coordinator.addCosignature(cosigned('coordinator', t + 1)), reason(grpc.status.RESOURCE_EXHAUSTED, 'AUDIT_QUOTA'));
      for (let i = 2; i < 20; i++) await coordinator.addCosignature(cosigned('coordinator', t + i)).catch(() => {});
      await assert.rejects(coordinator.addCosignature({ ...cosigned('coordinator', t + 30), cosignatures: [cosigned('coordinator', t + 30).cosignatures[0]!, cosigned('coordinator', t + 31).cosignatures[0]!] }), (e) => isServiceError(e) && e.code === grpc.status.INVALID_ARGUMENT);
      assert.equal(lines(), 1, 'one line written for the whole flood');
      let page = await unaryCall(rawClient('auditor'), 'Query', { operation: 'audit.append_refused' });
      for (let i = 0; i < 50 && page.events.filter((e) => e.event?.details.tried_operation === 'AuditService.AddCosignature').length < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
        page = await unaryCall(rawClient('auditor'), 'Query', { operation: 'audit.append_refused' });
      }
      assert.deepEqual(
        page.events.filter((e) => e.event?.details.tried_operation === 'AuditService.AddCosignature').map((e) => [e.event?.principal, e.event?.code, e.event?.details.reason]),
        [['custodian-1', 'PERMISSION_DENIED', 'AUDIT_SCOPE'], ['coordinator', 'RESOURCE_EXHAUSTED', 'AUDIT_QUOTA']],
        'each refusal recorded like the Append refusals (once per window)',
      );
    } finally {
      for (const r of readers) r.close();
    }
  });

  it('SIGTERM drains, closes the log and exits 0', async () => {
    // A client still holds an open Append stream: draining must end it rather than wait it out.
    const t0 = Date.now();
    process.kill(sink.child.pid!, 'SIGTERM');
    assert.equal(await sink.exited, 0);
    assert.ok(Date.now() - t0 < 3000, `shutdown took ${Date.now() - t0} ms`);
    assert.ok(sink.stdout.some((l) => JSON.parse(l).msg === 'stopped'));
    assert.equal(existsSync(path.join(dir, 'data', 'LOCK')), false);
  });
});
