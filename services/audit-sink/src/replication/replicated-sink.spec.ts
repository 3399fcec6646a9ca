/**
 * Three sink processes (main.ts, `replication` configured, mutual TLS) driven by the real
 * AuditClient given all three replicas: load; SIGSTOP of the leader (another leads, the
 * producers follow; resumed, the old leader steps down and catches up); SIGKILL of the leader
 * mid-load, the killed one restarted; every acknowledged event is in every replica's log, the logs are byte-identical
 * after catch-up, and `verifyLogDir` (what `keyshard audit verify` runs) passes on each folder.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { AuditClient } from '@keyshard/audit-client';
import { loadCheckpointKeys, publicKeyFromPem, verifyLogDir } from '@keyshard/audit-log';
import { makeTestPki, type TestPki } from '@keyshard/pki/testing';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const IDS = ['audit-sink-1', 'audit-sink-2', 'audit-sink-3'];
const every: string[] = []; // every tag acknowledged in any test of this file

interface Proc {
  child: ChildProcess;
  lines: { msg?: string; role?: string; address?: string }[];
  exited: Promise<number | null>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

describe('replicated audit sink: 3 processes, SIGSTOP and SIGKILL of the leader under load', () => {
  let dir: string;
  let pki: TestPki;
  const ports = new Map<string, number>();
  const procs = new Map<string, Proc>();
  let client: AuditClient | undefined;

  const configFile = (id: string) => path.join(dir, `${id}.json`);
  const dataDir = (id: string) => path.join(dir, id, 'data');

  function start(id: string): Promise<Proc> {
    const child = spawn(process.execPath, ['--conditions=keyshard-source', '--import', 'tsx', 'services/audit-sink/src/main.ts', '--config', configFile(id)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: Proc['lines'] = [];
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const p: Proc = { child, lines, exited };
    procs.set(id, p);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${id} did not start: ${stderr}`)), 30_000);
      let buf = '';
      child.stdout!.on('data', (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, nl)) as Proc['lines'][number];
          buf = buf.slice(nl + 1);
          lines.push(line);
          if (line.msg === 'listening') {
            clearTimeout(timer);
            resolve(p);
          }
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${id} exited with ${code}: ${stderr}`));
      });
    });
  }

  /** The replica whose last role line says leader (and that is running). */
  const leaderId = () =>
    [...procs.entries()].find(([, p]) => p.child.exitCode === null && p.child.signalCode === null && p.lines.filter((l) => l.msg === 'audit replica role').at(-1)?.role === 'leader')?.[0];

  async function waitFor<T>(what: string, fn: () => T | undefined, ms = 20_000): Promise<T> {
    const until = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v !== undefined) return v;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const segments = (id: string) => {
    const d = path.join(dataDir(id), 'segments');
    return Buffer.concat(fs.readdirSync(d).sort().map((f) => fs.readFileSync(path.join(d, f))));
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicated-sink-'));
    pki = await makeTestPki(dir, IDS[0]!, [...IDS.slice(1), 'coordinator', 'auditor']);
    for (const id of IDS) ports.set(id, await freePort());
    for (const id of IDS) {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      fs.mkdirSync(path.join(dir, id, 'keys'), { recursive: true });
      fs.writeFileSync(path.join(dir, id, 'keys', 'checkpoint.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      fs.writeFileSync(path.join(dir, id, 'keys', 'checkpoint.pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    }
    const replicas = IDS.map((id) => ({ id, address: `127.0.0.1:${ports.get(id)}`, checkpointPublicKey: path.join(dir, id, 'keys', 'checkpoint.pub.pem') }));
    for (const id of IDS) {
      const cfg = {
        listen: `127.0.0.1:${ports.get(id)}`, dataDir: dataDir(id), tls: pki.files(id),
        appenders: [{ principal: 'coordinator', scope: 'coordinator' }], readers: ['auditor'], logLevel: 'info',
        checkpointKeyFile: path.join(dir, id, 'keys', 'checkpoint.pem'), hmacKeyFile: path.join(dir, id, 'keys', 'hmac.key'),
        replication: { replicas, electionTimeoutMs: 1000, heartbeatMs: 100 },
      };
      fs.writeFileSync(configFile(id), JSON.stringify(cfg));
    }
    // One HMAC key for all replicas: the same event must hash to the same record everywhere.
    fs.writeFileSync(path.join(dir, 'hmac.key'), 'ab'.repeat(32), { mode: 0o600 });
    for (const id of IDS) fs.copyFileSync(path.join(dir, 'hmac.key'), path.join(dir, id, 'keys', 'hmac.key'));
    await Promise.all(IDS.map((id) => start(id)));
    client = new AuditClient({
      address: replicas[0]!.address, replicas: replicas.map((r) => ({ address: r.address, serverId: r.id })), tls: pki.material('coordinator'), source: 'coordinator',
      timeoutMs: 8000, checkpointKeys: loadCheckpointKeys(replicas.map((r) => r.checkpointPublicKey)),
    });
  });

  after(async () => {
    await client?.close().catch(() => {});
    for (const p of procs.values()) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** 8 producers recording until `stop` resolves; what was acknowledged and what was refused. */
  function loadUntil(stop: Promise<unknown>): { acked: string[]; failed: string[]; done: Promise<void> } {
    const acked: string[] = [];
    const failed: string[] = [];
    let n = 0;
    let running = true;
    void stop.finally(() => (running = false));
    const worker = async () => {
      while (running) {
        const tag = `s${++n}-${Math.random().toString(36).slice(2, 8)}`;
        try {
          await client!.record({ principal: 'app', operation: 'keys.Encrypt', result: 'ok', key_id: 'k1', details: { tag } });
          acked.push(tag);
        } catch {
          failed.push(tag);
        }
      }
    };
    return { acked, failed, done: Promise.all(Array.from({ length: 8 }, () => worker())).then(() => {}) };
  }

  it('SIGSTOP of the leader for 4 s: another leads, producers follow it; on SIGCONT the old leader steps down and catches up', async () => {
    const first = await waitFor('a leader', leaderId);
    let release!: () => void;
    const load = loadUntil(new Promise<void>((r) => (release = r)));
    await waitFor('50 acknowledged', () => (load.acked.length >= 50 ? true : undefined));
    const stopped = procs.get(first)!;
    stopped.child.kill('SIGSTOP');
    try {
      const atStop = load.acked.length;
      await waitFor('100 acknowledged while the old leader is stopped', () => (load.acked.length >= atStop + 100 ? true : undefined), 30_000);
      // What a coordinator's Status shows: the replica it sends to, acknowledged there (so the leader), not the stopped one.
      await waitFor('the producer sending to an acknowledging replica', () => (client!.sendingTo.acknowledged && client!.sendingTo.serverId !== first ? true : undefined));
      await new Promise((r) => setTimeout(r, 4000 - 0));
    } finally {
      stopped.child.kill('SIGCONT');
    }
    const roleLines = () => stopped.lines.filter((l) => l.msg === 'audit replica role');
    await waitFor('the resumed leader steps down', () => (roleLines().at(-1)?.role === 'follower' ? true : undefined));
    const atCont = load.acked.length;
    await waitFor('100 more acknowledged', () => (load.acked.length >= atCont + 100 ? true : undefined), 30_000);
    release();
    await load.done;
    every.push(...load.acked);
    console.log(`# SIGSTOP: acknowledged ${load.acked.length}, refused ${load.failed.length}`);
    assert.equal(load.failed.length, 0, 'no record refused: producers moved to the new leader within their deadline');
  });

  it('every acknowledged event is on every replica; logs byte-identical after the killed leader returns; each folder verifies offline', async () => {
    const first = await waitFor('a leader', leaderId);
    const acked: string[] = [];
    const failed: string[] = [];
    let n = 0;
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const tag = `e${++n}`;
        try {
          await client!.record({ principal: 'app', operation: 'keys.Encrypt', result: 'ok', key_id: 'k1', details: { tag } });
          acked.push(tag);
        } catch {
          failed.push(tag);
        }
      }
    };
    const workers = Array.from({ length: 8 }, () => worker());
    await waitFor('100 acknowledged', () => (acked.length >= 100 ? true : undefined));
    procs.get(first)!.child.kill('SIGKILL');
    const killedAt = acked.length;
    await waitFor('a new leader', () => {
      const l = leaderId();
      return l && l !== first ? l : undefined;
    });
    await waitFor('100 more acknowledged after the kill', () => (acked.length >= killedAt + 100 ? true : undefined), 30_000);
    await start(first);
    await waitFor('200 more acknowledged with the killed replica back', () => (acked.length >= killedAt + 200 ? true : undefined), 30_000);
    stop = true;
    await Promise.all(workers);
    // Stop everyone gracefully (a last checkpoint each), then compare the folders.
    await new Promise((r) => setTimeout(r, 1500)); // followers learn the last commit with the next heartbeat
    for (const p of procs.values()) p.child.kill('SIGTERM');
    for (const p of procs.values()) assert.equal(await p.exited, 0);
    const bytes = IDS.map(segments);
    for (const b of bytes) assert.ok(b.equals(bytes[0]!), 'replica logs are byte-identical');
    for (const id of IDS) {
      const { id: keyId, key } = publicKeyFromPem(fs.readFileSync(path.join(dir, id, 'keys', 'checkpoint.pub.pem')));
      const v = verifyLogDir(dataDir(id), { trust: { sinkKeys: new Map([[keyId, key]]), witnesses: [], witnessQuorum: 0 } });
      assert.equal(v.ok, true, `${id}: ${v.reason}`);
    }
    const stored = new Set(bytes[0]!.toString('utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { event: { details: { tag: string } } }).event.details.tag));
    const lost = [...every, ...acked].filter((t) => !stored.has(t));
    assert.deepEqual(lost, [], 'no acknowledged event lost');
    console.log(`# acknowledged ${acked.length}, refused ${failed.length}, stored ${stored.size}`);
  });
});
