/**
 * Issue 17 item 5, recovery keys: a private key given where the recovery *public* key belongs —
 * straight to the coordinator (export-share ceremony start) or to a custodian (enrollment of a
 * recovery key), bypassing the CLI — is refused INVALID_ARGUMENT, and afterwards no etcd value
 * under the cluster's prefix and no file of the audit folder holds "PRIVATE KEY" or any fragment
 * of the key's base64. Non-RSA and RSA-2048 public keys are refused alike. The CLI refuses the
 * wrong half under --recovery-public-key / --recovery-private-key before sending anything (exit 2).
 * Transport keys alike (issue 17 item 6): a coordinator's transport *private* key file given to
 * enrollment (EnrollTransportKey, RevokeTransportKey, `custodian enroll --transport-public-key`)
 * is refused the same way, and none of it lands in etcd or the audit folder either.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { COORDINATOR, DevCluster, operatorOf } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { readTls } from '@keyshard/rpc';
import { connectEtcd } from '@keyshard/store';
import { keyshard, readEnvFile } from './support/cli.ts';
import { rejectsWith } from './support/grpc.ts';

const b64Body = (pem: string) => pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
/** Every 24-character window of the key's base64 body, at a stride of 8: any 32 characters of it that leaked contain one. */
const fragments = (body: string) => {
  const out: string[] = [];
  for (let i = 0; i + 24 <= body.length; i += 8) out.push(body.slice(i, i + 24));
  return out;
};
function filesUnder(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe('recovery keys: only an RSA public key of >= 3072 bits; a private key goes nowhere', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-recovery-key-'));
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let env: Record<string, string>;
  const recovery = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const privatePem = recovery.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const privatePkcs1 = recovery.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const publicPem = recovery.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const small = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  /** The coordinator's real transport private key (its 0600 key file), read once the cluster made it. */
  let transportPrivatePem = '';
  const files = { priv: path.join(dir, 'recovery.pem'), pub: path.join(dir, 'recovery.pub.pem'), small: path.join(dir, 'small.pub.pem') };
  const custodianEnv = (id: string) => {
    const cert = cluster.layout.certs[operatorOf(id)]!;
    return { ...env, KEYSHARD_CUSTODIAN_ADDR: cluster.custodianAddress(id), KEYSHARD_CUSTODIAN_CERT: cert.cert, KEYSHARD_CUSTODIAN_KEY: cert.key };
  };
  const auditLines = () => readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n');
  const exportShareCeremonies = async () => (await admin.listCeremonies(true)).ceremonies.filter((c) => c.operation === 'export-share');

  before(async () => {
    writeFileSync(files.priv, privatePem, { mode: 0o600 });
    writeFileSync(files.pub, publicPem);
    writeFileSync(files.small, small);
    cluster = await DevCluster.create({ dir: path.join(dir, 'cluster'), custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client();
    env = readEnvFile(cluster.envFile);
    transportPrivatePem = readFileSync(cluster.layout.transportKeyFile[COORDINATOR]!, 'utf8');
    assert.match(transportPrivatePem, /PRIVATE KEY/);
  });

  after(async () => {
    admin?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the CLI refuses the wrong half (or a small key) before sending anything: exit 2, one line naming the flag', async () => {
    const before = auditLines().length;
    const soPin = cluster.layout.soPinFile['custodian-1']!;
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['custodian', 'backup', '--custodian-id', 'custodian-1', '--recovery-public-key', files.priv, '--out', path.join(dir, 'x.export')], env, /^--recovery-public-key .*: the recovery key is a private key/],
      [['custodian', 'backup', '--custodian-id', 'custodian-1', '--recovery-public-key', files.small, '--out', path.join(dir, 'x.export')], env, /^--recovery-public-key .*at least 3072 bits \(got 2048\)/],
      [['custodian', 'enroll', '--recovery-public-key', files.priv, '--so-pin-file', soPin], custodianEnv('custodian-1'), /^--recovery-public-key .*: the recovery key is a private key/],
      [['custodian', 'revoke', '--recovery-public-key', files.priv, '--so-pin-file', soPin], custodianEnv('custodian-1'), /^--recovery-public-key .*private key/],
      [['custodian', 'enroll', '--coordinator', COORDINATOR, '--transport-public-key', cluster.layout.transportKeyFile[COORDINATOR]!, '--so-pin-file', soPin], custodianEnv('custodian-1'), /^--transport-public-key .*: the transport key is a private key/],
      [['custodian', 'revoke', '--coordinator', COORDINATOR, '--transport-public-key', cluster.layout.transportKeyFile[COORDINATOR]!, '--so-pin-file', soPin], custodianEnv('custodian-1'), /^--transport-public-key .*: the transport key is a private key/],
    ];
    // restore checks the key only once it has an export to import: a well-formed (unused) one.
    const exportFile = path.join(dir, 'fake.export');
    writeFileSync(exportFile, JSON.stringify({ format: 'keyshard-share-export', version: 1, custodian_id: 'custodian-1', cluster_id: 'c', generation: 1, peers_json: '', wrapped_share: '', succession_statement: '', oaep_hash: 'sha1', recovery_key_fingerprint: '' }));
    cases.push([['custodian', 'restore', '--in', exportFile, '--recovery-private-key', files.pub], custodianEnv('custodian-1'), /^--recovery-private-key .*: holds a public key/]);
    for (const [args, e, why] of cases) {
      const r = await keyshard(args, e);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!.replace(/^(error|keyshard): /, ''), why);
      assert.ok(!r.stderr.includes('PRIVATE KEY') && !r.stdout.includes('PRIVATE KEY'));
    }
    // The old flag name is gone.
    const old = await keyshard(['custodian', 'backup', '--custodian-id', 'custodian-1', '--recovery-key', files.pub, '--out', path.join(dir, 'x.export')], env);
    assert.notEqual(old.code, 0);
    // Nothing was sent: no audited call (every call is audited, refusals too), no ceremony. (The
    // reads of bootstrap's waits — status, and admin's polls of the unseal ceremony — are spooled
    // and shipped in batches, so they may land in the log during this test: not ours; none of the
    // commands above reads a ceremony.)
    const polls = new Set(['ceremony.Status', 'ceremony.GetCeremony']);
    const since = auditLines().slice(before).map((l) => JSON.parse(l).event as Record<string, any>).filter((e) => !polls.has(e.operation));
    assert.deepEqual(since, [], 'no call reached a server');
    assert.deepEqual(await exportShareCeremonies(), []);
  });

  it('a private key as the recovery key straight through the SDK is refused INVALID_ARGUMENT (coordinator and custodian), not echoed', async () => {
    const noKey = (e: unknown) => !String((e as Error).message).includes('PRIVATE KEY') && !fragments(b64Body(privatePem)).some((f) => String((e as Error).message).includes(f));
    for (const pem of [privatePem, privatePkcs1, `${privatePem}${publicPem}`]) {
      const err = await rejectsWith(admin.startCeremony('export-share', { custodian: 'custodian-1', recovery_key: pem }), 'INVALID_ARGUMENT', /recovery key/);
      assert.ok(noKey(err));
    }
    await rejectsWith(admin.startCeremony('export-share', { custodian: 'custodian-1', recovery_key: small }), 'INVALID_ARGUMENT', /at least 3072 bits/);
    await rejectsWith(admin.startCeremony('export-share', { custodian: 'custodian-1', recovery_key: ec }), 'INVALID_ARGUMENT', /RSA public key/);
    await rejectsWith(admin.startCeremony('export-share', { custodian: 'custodian-1', recovery_key: 'garbage' }), 'INVALID_ARGUMENT', /not a public key PEM/);
    assert.deepEqual(await exportShareCeremonies(), [], 'no ceremony was opened');

    const op = cluster.operatorClient('custodian-1');
    try {
      const soPin = readFileSync(cluster.layout.soPinFile['custodian-1']!, 'utf8').trim();
      for (const pem of [privatePem, privatePkcs1]) {
        const err = await rejectsWith(op.enrollTransportKey({ kind: 'recovery', publicKeyPem: pem, soPin }), 'INVALID_ARGUMENT', /private key/);
        assert.ok(noKey(err));
      }
      await rejectsWith(op.enrollTransportKey({ kind: 'recovery', publicKeyPem: small, soPin }), 'INVALID_ARGUMENT', /at least 3072 bits/);
      // The public key is what it takes (and the private one is refused even once it is enrolled).
      const ok = await op.enrollTransportKey({ kind: 'recovery', publicKeyPem: publicPem, soPin });
      assert.equal(ok.kind, 'recovery');
      await rejectsWith(op.enrollTransportKey({ kind: 'recovery', publicKeyPem: privatePem, soPin }), 'INVALID_ARGUMENT', /private key/);
      // The coordinator's transport private key, where its public key belongs: refused, and the
      // public key it holds stays enrolled (nothing was replaced or revoked).
      const transportBefore = (await op.listTrustedKeys()).keys.filter((k) => k.kind === 'transport');
      const transportNoKey = (e: unknown) => !String((e as Error).message).includes('PRIVATE KEY') && !fragments(b64Body(transportPrivatePem)).some((f) => String((e as Error).message).includes(f));
      for (const call of [
        () => op.enrollTransportKey({ coordinatorId: COORDINATOR, publicKeyPem: transportPrivatePem, soPin }),
        () => op.revokeTransportKey({ coordinatorId: COORDINATOR, publicKeyPem: transportPrivatePem, soPin }),
      ])
        assert.ok(transportNoKey(await rejectsWith(call(), 'INVALID_ARGUMENT', /the transport key is a private key/)));
      assert.deepEqual((await op.listTrustedKeys()).keys.filter((k) => k.kind === 'transport'), transportBefore);
    } finally {
      op.close();
    }
    // The refusals are audited (fail closed: the call returns once its record is written).
    const refusals = auditLines().map((l) => JSON.parse(l).event as Record<string, any>).filter((e) => e.code === 'INVALID_ARGUMENT');
    assert.ok(refusals.some((e) => e.source === COORDINATOR || String(e.source).startsWith('coordinator')), 'the coordinator audited its refusals');
    assert.ok(refusals.some((e) => e.operation === 'custodian.EnrollTransportKey'), 'the custodian audited its refusals');
  });

  it('no etcd value under the cluster prefix and no file of the audit folder holds the private key or any fragment of it', async () => {
    const needles = ['PRIVATE KEY', ...fragments(b64Body(privatePem)), ...fragments(b64Body(privatePkcs1)), ...fragments(b64Body(transportPrivatePem))];
    const etcd = connectEtcd({ endpoints: [cluster.etcdEndpoint], tls: readTls(cluster.layout.certs[COORDINATOR]!) });
    try {
      const prefix = `/keyshard/${cluster.layout.plan.clusterName}/`;
      const values = await etcd.getAll().prefix(prefix).strings();
      assert.ok(Object.keys(values).length > 0, 'the scan reads the cluster records');
      for (const [k, v] of Object.entries(values)) for (const n of needles) assert.ok(!v.includes(n), `etcd ${k} holds ${n === 'PRIVATE KEY' ? n : 'a fragment of the private key'}`);
    } finally {
      etcd.close();
    }
    const auditFiles = [...filesUnder(cluster.layout.auditDir), ...filesUnder(path.join(cluster.layout.dir, 'spool'))];
    assert.ok(auditFiles.includes(cluster.auditLogFile), 'the scan reads the audit log');
    for (const f of auditFiles) {
      const text = readFileSync(f).toString('latin1');
      for (const n of needles) assert.ok(!text.includes(n), `${f} holds ${n === 'PRIVATE KEY' ? n : 'a fragment of the private key'}`);
    }
  });
});
