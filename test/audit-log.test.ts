/**
 * The tamper-evident audit log against a real cluster: every call lands in the Merkle log;
 * the sink's checkpoints and proofs agree with an independent implementation written here
 * from RFC 6962's definitions; an auditor reads through the `keyshard audit` CLI; a copy of
 * the log that is modified, cut or reordered, cut with its checkpoints.log trimmed, stripped of
 * checkpoints.log, edited with recomputed leaves or re-signed with a key planted in its keys/,
 * is BAD under `keyshard audit verify` with trust roots kept outside it, at the first bad index.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ADMIN, AUDITOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { AuditReader } from '@keyshard/audit-client/reader';
import { checkpointNote, cosign, keyIdOf, signCheckpoint, trustFileText, vkeyOf, witnessName, type SignedCheckpoint } from '@keyshard/audit-log';
import { readTls } from '@keyshard/rpc';
import { rejectsWith, waitFor } from './support/grpc.ts';

const run = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');

// RFC 6962 §2.1, written out again from the definitions (not the code under test).
const sha = (...parts: Buffer[]) => parts.reduce((h, p) => h.update(p), createHash('sha256')).digest();
const split = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1);
const MTH = (d: Buffer[]): Buffer =>
  d.length === 0 ? sha() : d.length === 1 ? sha(Buffer.from([0]), d[0]!) : sha(Buffer.from([1]), MTH(d.slice(0, split(d.length))), MTH(d.slice(split(d.length))));
const PATH = (m: number, d: Buffer[]): Buffer[] =>
  d.length <= 1 ? [] : m < split(d.length) ? [...PATH(m, d.slice(0, split(d.length))), MTH(d.slice(split(d.length)))] : [...PATH(m - split(d.length), d.slice(split(d.length))), MTH(d.slice(0, split(d.length)))];
const SUBPROOF = (m: number, d: Buffer[], b: boolean): Buffer[] => {
  if (m === d.length) return b ? [] : [MTH(d)];
  const k = split(d.length);
  return m <= k ? [...SUBPROOF(m, d.slice(0, k), b), MTH(d.slice(k))] : [...SUBPROOF(m - k, d.slice(k), false), MTH(d.slice(0, k))];
};
/** The canonical encoding: JSON with keys sorted at every level, no whitespace. */
const canonical = (v: unknown): string =>
  v !== null && typeof v === 'object'
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`
    : JSON.stringify(v);

describe('audit log (RFC 6962 Merkle log, signed checkpoints, auditor CLI)', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let client: KeyshardClient;
  let reader: AuditReader;
  let auditorEnv: NodeJS.ProcessEnv;
  const segmentLines = (logDir: string) =>
    readdirSync(path.join(logDir, 'segments')).sort().flatMap((f) => readFileSync(path.join(logDir, 'segments', f), 'utf8').split('\n').filter(Boolean));
  const cli = (args: string[], env = auditorEnv) => run(process.execPath, [CLI, ...args], { env, cwd: REPO_ROOT });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-audit-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    // The admin makes an encrypt-only key for app: app's encryptions are audited ok, its decrypt denied.
    const admin = cluster.client();
    const key = await admin.createKey('audited', { policy: { encrypt: ['app'] } });
    admin.close();
    client = cluster.client('app');
    for (let i = 0; i < 20; i++) await client.encrypt('audited', Buffer.from(`payload ${i}`), {}, { requestId: `req-enc-${i}` });
    await rejectsWith(client.decrypt((await client.encrypt(key.id, Buffer.from('x'))).ciphertext), 'PERMISSION_DENIED');
    const certs = cluster.layout.certs[AUDITOR]!;
    auditorEnv = { ...process.env, KEYSHARD_AUDIT_ADDR: `127.0.0.1:${cluster.layout.plan.ports.audit}`, KEYSHARD_CA: certs.ca, KEYSHARD_AUDIT_CERT: certs.cert, KEYSHARD_AUDIT_KEY: certs.key };
    reader = new AuditReader({ address: auditorEnv.KEYSHARD_AUDIT_ADDR!, tls: readTls(certs) });
  });

  after(async () => {
    reader?.close();
    client?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the signed checkpoint, inclusion and consistency proofs equal those of an independent RFC 6962 implementation', async () => {
    const cp = await reader.checkpoint();
    const records = segmentLines(cluster.layout.auditDir).map((l) => JSON.parse(l));
    assert.ok(cp.tree_size > 25 && cp.tree_size <= records.length, `${cp.tree_size} of ${records.length}`);
    const entries = records.slice(0, cp.tree_size).map((r) => Buffer.from(canonical(r.event), 'utf8'));
    assert.equal(MTH(entries).toString('hex'), cp.root_hash);
    for (const i of [0, 1, 7, cp.tree_size - 1]) {
      const p = await reader.inclusionProof(i, cp.tree_size);
      assert.deepEqual(p.path.map((h) => h.toString('hex')), PATH(i, entries).map((h) => h.toString('hex')), `PATH(${i})`);
      assert.equal(p.leafHash.toString('hex'), sha(Buffer.from([0]), entries[i]!).toString('hex'));
    }
    await client.encrypt('audited', Buffer.from('one more'));
    // Crypto-operation events reach the sink through the coordinator's spool, a moment later.
    const later = await waitFor('a larger tree', async () => {
      const c = await reader.checkpoint();
      return c.tree_size > cp.tree_size ? c : undefined;
    });
    const all = segmentLines(cluster.layout.auditDir).slice(0, later.tree_size).map((l) => Buffer.from(canonical(JSON.parse(l).event), 'utf8'));
    assert.equal(MTH(all).toString('hex'), later.root_hash);
    const proof = await reader.consistencyProof(cp.tree_size, later.tree_size);
    assert.deepEqual(proof.map((h) => h.toString('hex')), SUBPROOF(cp.tree_size, all, true).map((h) => h.toString('hex')));
    assert.ok(await reader.checkConsistency(cp, later));
  });

  it('`keyshard audit` reads: checkpoint, query with filters, tail, tail --follow, hash; other roles may not read', async () => {
    const { stdout: cpJson } = await cli(['audit', 'checkpoint', '--json']);
    assert.match(JSON.parse(cpJson).root_hash, /^[0-9a-f]{64}$/);

    const { stdout: q } = await cli(['audit', 'query', '--operation', 'keys.Encrypt', '--result', 'ok', '--json']);
    const encrypts = q.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(encrypts.length >= 21);
    assert.ok(encrypts.every((e) => e.event.operation === 'keys.Encrypt' && e.event.result === 'ok'));
    const { stdout: denied } = await cli(['audit', 'query', '--principal', 'app', '--result', 'denied']);
    assert.match(denied, /denied\s+keys\.Decrypt\s+by app\s+from coordinator-\d+\s+code=PERMISSION_DENIED/, 'each event names the component that recorded it');
    const { stdout: none } = await cli(['audit', 'query', '--operation', 'keys.Encrypt', '--to', '2000-01-01T00:00:00Z']);
    assert.equal(none, 'no events match\n', 'an empty result says so');
    const { stdout: noneJson } = await cli(['audit', 'query', '--operation', 'keys.Encrypt', '--to', '2000-01-01T00:00:00Z', '--json']);
    assert.equal(noneJson, '', '--json: no lines');

    const { stdout: tail } = await cli(['audit', 'tail', '-n', '3', '--json']);
    assert.equal(tail.trim().split('\n').length, 3);

    const follower = spawn(process.execPath, [CLI, 'audit', 'tail', '-n', '1', '--follow'], { env: auditorEnv, cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      const printed = (what: string) =>
        new Promise<void>((resolve, reject) => {
          const check = () => (out.includes(what) ? resolve() : undefined);
          follower.stdout!.on('data', check);
          follower.once('exit', (code) => reject(new Error(`tail --follow exited ${code}: ${out}`)));
          check();
        });
      follower.stdout!.on('data', (d) => (out += d));
      await printed('\n'); // the last stored event: it is connected
      await client.encrypt('audited', Buffer.from('followed'), {}, { requestId: 'req-followed' });
      await printed('req=req-followed');
    } finally {
      follower.kill('SIGKILL');
    }

    const { stdout: viaSink } = await cli(['audit', 'hash', 'acme-tenant']);
    const { stdout: offline } = await cli(['audit', 'hash', 'acme-tenant', '--key-file', path.join(dir, 'audit-keys', 'hmac.key')]);
    assert.match(viaSink, /^hmac-sha256:[0-9a-f]{64}\n$/);
    assert.equal(viaSink, offline);

    const admin = cluster.layout.certs[ADMIN]!;
    const asAdmin = await cli(['audit', 'query'], { ...auditorEnv, KEYSHARD_AUDIT_CERT: admin.cert, KEYSHARD_AUDIT_KEY: admin.key }).catch((e) => e);
    assert.match(asAdmin.stderr, /NOT_AUTHORIZED/);
  });

  it('`keyshard audit verify` trusts only roots from outside the folder; a modified, cut, reordered or re-signed copy is BAD at the first bad index', async () => {
    // The roots an auditor keeps outside the log folder: the sink's public key, and a witness's
    // vkey. The witness here is this test (an Ed25519 key of its own cosigning the sink's real
    // checkpoint, C2SP tlog-cosignature), so the test does not depend on the coordinators' witnesses.
    const witness = generateKeyPairSync('ed25519');
    const wName = witnessName('auditor-test');
    const trustFile = path.join(dir, 'trust.json');
    writeFileSync(trustFile, trustFileText([readFileSync(cluster.layout.sinkCheckpointPublicKey, 'utf8')], [vkeyOf(wName, witness.publicKey)], 1));
    const { stdout: cpJson } = await cli(['audit', 'checkpoint', '--json']);
    const cpFile = path.join(dir, 'held-checkpoint.json');
    writeFileSync(cpFile, cpJson);
    const held = JSON.parse(cpJson) as SignedCheckpoint;
    // Stored checkpoints around one record: size k, then k+1 (GetCheckpoint stores a fresh one when the tree grew).
    await client.encrypt('audited', Buffer.from('between'));
    const next = await waitFor('one more record', async () => {
      const c = await reader.checkpoint();
      return c.tree_size > held.tree_size ? c : undefined;
    });
    const note = checkpointNote(next);
    const cosigned = { checkpoint: next, note, cosignatures: [cosign(witness.privateKey, wName, note, Math.floor(Date.now() / 1000))] };
    const cosignedFile = path.join(dir, 'cosigned.json');
    writeFileSync(cosignedFile, `${JSON.stringify([cosigned], null, 2)}\n`);
    const roots = ['--trust', trustFile, '--cosigned', cosignedFile];

    const live = JSON.parse((await cli(['audit', 'verify', cluster.layout.auditDir, ...roots, '--checkpoint', cpFile, '--json'])).stdout);
    assert.equal(live.ok, true, live.reason);
    assert.ok(live.records >= next.tree_size && live.checkpoints >= 2);
    assert.deepEqual([live.trusted.held, live.witnesses.map((w: { name: string; treeSize: number }) => [w.name, w.treeSize])], [held.tree_size, [[wName, next.tree_size]]]);
    assert.ok(live.trusted.cosigned.includes(next.tree_size), JSON.stringify(live.trusted));
    const { stdout: human } = await cli(['audit', 'verify', cluster.layout.auditDir, ...roots]);
    assert.match(human, /^ok: \d+ records, root [0-9a-f]{64}, \d+ stored checkpoints verified, cosigned by 1 trusted witness\(es\) of 1 required \(auditor-test at size \d+\)/);

    // No trust root: a usage error naming the flags; one inside the folder: refused.
    const none = await cli(['audit', 'verify', cluster.layout.auditDir]).catch((e) => e);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^keyshard: audit verify needs the trust roots from outside the log folder: --trust FILE .*--sink-key FILE.*--witness VKEY/);
    const inside = await cli(['audit', 'verify', cluster.layout.auditDir, '--sink-key', path.join(cluster.layout.auditDir, 'keys', `${held.key_id}.pem`), '--witness-quorum', '0']).catch((e) => e);
    assert.equal(inside.code, 2);
    assert.match(inside.stderr, /--sink-key .* is inside the log folder/);

    const copyOf = (name: string) => {
      const copy = path.join(dir, `copy-${name}`);
      cpSync(cluster.layout.auditDir, copy, { recursive: true, verbatimSymlinks: true });
      const seg = path.join(copy, 'segments', readdirSync(path.join(copy, 'segments')).sort()[0]!);
      const lines = readFileSync(seg, 'utf8').split('\n').filter(Boolean);
      const cps = path.join(copy, 'checkpoints.log');
      const stored = readFileSync(cps, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as SignedCheckpoint);
      return { copy, seg, lines, cps, stored };
    };
    const bad = async (copy: string, extra: string[] = []) => {
      const res = await cli(['audit', 'verify', copy, ...roots, ...extra]).then(() => assert.fail(`${copy}: verify passed`), (e) => e);
      assert.equal(res.code, 1, res.stderr);
      return res.stdout as string;
    };
    const tamper = async (name: string, edit: (lines: string[]) => string[]) => {
      const { copy, seg, lines } = copyOf(name);
      writeFileSync(seg, `${edit(lines).join('\n')}\n`);
      return bad(copy);
    };
    const flipByte = (l: string) => {
      const b = Buffer.from(l);
      b[b.indexOf('"operation"') + 14]! ^= 0x01;
      return b.toString();
    };
    assert.match(await tamper('flip', (ls) => ls.map((l, i) => (i === 9 ? flipByte(l) : l))), /^BAD index 9: /);
    assert.match(await tamper('delete', (ls) => ls.filter((_, i) => i !== 12)), /^BAD index 12: expected index 12, found 13/);
    assert.match(await tamper('reorder', (ls) => ls.map((l, i) => ls[i === 4 ? 5 : i === 5 ? 4 : i]!)), /^BAD index 4: /);
    assert.match(await tamper('truncate', (ls) => ls.slice(0, held.tree_size - 2)), new RegExp(`^BAD index ${held.tree_size - 2}: .*were removed`));

    // Issue 17's four: a cut tail with checkpoints.log trimmed to match, though newer than the held checkpoint.
    const cut = next.tree_size - 1;
    assert.ok(cut >= held.tree_size);
    {
      const { copy, seg, lines, cps, stored } = copyOf('cut-tail');
      writeFileSync(seg, `${lines.slice(0, cut).join('\n')}\n`);
      writeFileSync(cps, stored.filter((c) => c.tree_size <= cut).map((c) => `${JSON.stringify(c)}\n`).join(''));
      assert.match(await bad(copy, ['--checkpoint', cpFile]), new RegExp(`^BAD index ${cut}: --cosigned ${cosignedFile} item 1 covers ${next.tree_size} records, the log holds ${cut}: records ${cut}\\.\\.${next.tree_size - 1} were removed`));
    }
    // A deleted checkpoints.log.
    {
      const { copy, cps } = copyOf('no-checkpoints');
      rmSync(cps);
      assert.match(await bad(copy), /^BAD: no checkpoints: checkpoints\.log is missing/);
    }
    // An edit with recomputed leaves: record k, between the stored checkpoints of sizes k and k+1 (or the next one).
    const entry = (l: string) => canonical(JSON.parse(l).event);
    const recompute = (ls: string[], k: number, change: (e: Record<string, unknown>) => void) =>
      ls.map((l, i) => {
        if (i !== k) return l;
        const e = JSON.parse(l).event;
        change(e);
        return `{"index":${i},"leaf":"${sha(Buffer.from([0]), Buffer.from(canonical(e))).toString('hex')}","event":${canonical(e)}}`;
      });
    {
      const k = held.tree_size;
      const { copy, seg, lines, stored } = copyOf('edit');
      const after = Math.min(...stored.map((c) => c.tree_size).filter((s) => s > k));
      writeFileSync(seg, `${recompute(lines, k, (e) => (e.principal = 'someone-else')).join('\n')}\n`);
      const out = await bad(copy);
      assert.match(out, after === k + 1 ? new RegExp(`^BAD index ${k}: record ${k} was changed: `) : new RegExp(`^BAD index ${k}: a record in ${k}\\.\\.${after - 1} was changed`));
    }
    // A rewrite re-signed with a key planted in keys/: record k changed, every checkpoint re-signed.
    {
      const k = 3;
      const { copy, seg, lines, cps, stored } = copyOf('planted');
      const rewritten = recompute(lines, k, (e) => (e.principal = 'planted-principal'));
      writeFileSync(seg, `${rewritten.join('\n')}\n`);
      const planted = generateKeyPairSync('ed25519');
      const plantedId = keyIdOf(planted.publicKey);
      writeFileSync(path.join(copy, 'keys', `${plantedId}.pem`), planted.publicKey.export({ type: 'spki', format: 'pem' }));
      const entries = rewritten.map((l) => Buffer.from(entry(l), 'utf8'));
      writeFileSync(cps, stored.map((c) => `${JSON.stringify(signCheckpoint(planted.privateKey, plantedId, c.tree_size, MTH(entries.slice(0, c.tree_size))))}\n`).join(''));
      rmSync(path.join(copy, 'cosigned.log'), { force: true });
      const res = await cli(['audit', 'verify', copy, ...roots, '--json']).catch((e) => e);
      assert.equal(res.code, 1);
      const r = JSON.parse(res.stdout);
      assert.equal(r.firstBadIndex, 0, r.reason);
      assert.match(r.reason, new RegExp(`^checkpoints\\.log line 1 \\(size \\d+\\) does not verify under the trusted sink keys: signed with key id "${plantedId}" \\(keys/ holds a key with that id`));
      assert.ok(r.notes.some((n: string) => n.includes(`keys/${plantedId}.pem holds a key (id ${plantedId}) not in the trust roots: ignored`)), r.notes.join('\n'));
    }
  });

  it('holds no plaintext: a scan of every record finds none of the payloads', async () => {
    const text = segmentLines(cluster.layout.auditDir).join('\n');
    for (let i = 0; i < 20; i++) {
      const p = Buffer.from(`payload ${i}`);
      for (const form of [p.toString('utf8'), p.toString('base64'), p.toString('hex')]) assert.ok(!text.includes(form), `payload ${i} as ${form}`);
    }
    assert.ok(readFileSync(cluster.auditLogFile, 'utf8').includes('"operation":"keys.Encrypt"'), 'audit.log is the active segment');
  });
});
