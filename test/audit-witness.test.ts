/**
 * Witnesses (issue 17 item 2) against a real cluster of two coordinator replicas, etcd and the
 * real audit sink:
 *  - each replica cosigns the sink's checkpoints, its record lands in etcd (under the cluster
 *    prefix: backed up), and `keyshard audit checkpoint --cosigned --json` returns cosigned
 *    checkpoints that verify against the trust roots `keyshard dev` wrote (DIR/audit-trust.json);
 *  - the rollback attack: the sink's folder replaced by an older copy of itself → every replica
 *    alarms (Status), CreateKey is refused UNAVAILABLE (AUDIT_UNAVAILABLE, "not trusted"), and a
 *    restarted replica alarms again at once (its anchor comes from etcd, not from the sink);
 *  - `keyshard audit witness reset --confirm` by an admin: service resumes everywhere, and the
 *    reset is in the audit log with the old and new checkpoints.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, AUDITOR, DevCluster } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { AuditReader } from '@keyshard/audit-client/reader';
import { parseVkey, publicKeyFromPem, verifyCosignedCheckpoint, type CosignedCheckpoint } from '@keyshard/audit-log';
import { clusterPrefix, paths } from '@keyshard/store';
import { readTls } from '@keyshard/rpc';
import { keyshard, readEnvFile } from './support/cli.ts';
import { rejectsWith, waitFor } from './support/grpc.ts';

describe('audit witnesses: cosigned checkpoints, a rolled-back sink, the operator reset', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let ids: string[];
  let admins: Record<string, KeyshardClient>;
  let reader: AuditReader;
  let env: Record<string, string>;
  let olderCopy: string;

  const witnessRecords = async (): Promise<Map<string, CosignedCheckpoint>> => {
    const prefix = `${clusterPrefix(cluster.layout.plan.clusterName)}${paths.witnessesPrefix}`;
    const out = (await cluster.etcdctl(['get', prefix, '--prefix'])).trim();
    const lines = out ? out.split('\n') : [];
    const m = new Map<string, CosignedCheckpoint>();
    for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i]!.slice(prefix.length), JSON.parse(lines[i + 1]!) as CosignedCheckpoint);
    return m;
  };
  const statusOf = (id: string) => admins[id]!.status({ timeoutMs: 3_000 });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-witness-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, coordinators: 2, coordinatorOverrides: { witnessIntervalMs: 300, joinCheckSeconds: 1 } });
    ids = cluster.coordinatorIds;
    await cluster.start();
    await cluster.bootstrap();
    admins = Object.fromEntries(ids.map((id) => [id, cluster.client(ADMIN, { coordinator: id })]));
    reader = new AuditReader({ address: `127.0.0.1:${cluster.layout.plan.ports.audit}`, tls: readTls(cluster.layout.certs[AUDITOR]!) });
    env = readEnvFile(cluster.envFile);
    // The attacker's older copy of the sink's folder, taken early (what a restore of an old disk image gives).
    olderCopy = path.join(dir, 'audit-older');
    cpSync(cluster.layout.auditDir, olderCopy, { recursive: true, filter: (f) => path.basename(f) !== 'LOCK' });
  });

  after(async () => {
    for (const c of Object.values(admins ?? {})) c.close();
    reader?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("every replica's cosigned checkpoint is in etcd and published at the sink, verifying against DIR/audit-trust.json", async () => {
    for (let i = 0; i < 3; i++) await admins[ids[i % 2]!]!.createKey(`witnessed-${i}`);
    const size = (await reader.checkpoint()).tree_size;
    const records = await waitFor(`both witness records in etcd at size >= ${size}`, async () => {
      const r = await witnessRecords();
      return ids.every((id) => (r.get(id)?.checkpoint.tree_size ?? 0) >= size) ? r : undefined;
    });
    const trust = JSON.parse(readFileSync(cluster.trustFile, 'utf8')) as { sinkKeys: string[]; witnesses: string[]; witnessQuorum: number };
    assert.equal(trust.witnesses.length, 2);
    assert.equal(trust.witnessQuorum, 2, 'every replica: a split view shows as a witness whose fresh cosignature the log does not contain');
    const sinkKeys = new Map(trust.sinkKeys.map((pem) => [publicKeyFromPem(pem).id, publicKeyFromPem(pem).key]));
    const witnesses = trust.witnesses.map(parseVkey);
    for (const id of ids) {
      const v = verifyCosignedCheckpoint(records.get(id)!, sinkKeys, witnesses, 1);
      assert.equal(v.problem, undefined, `${id}'s etcd record verifies`);
      assert.deepEqual(v.witnesses.map((w) => w.name), [`keyshard.dev/witness/${id}`]);
    }
    const published = await waitFor('both witnesses published at the sink', async () => {
      const r = await keyshard(['audit', 'checkpoint', '--cosigned', '--json'], env);
      assert.equal(r.code, 0, r.stderr);
      const all = JSON.parse(r.stdout) as CosignedCheckpoint[];
      return all.length === 2 && all.every((c) => c.checkpoint.tree_size >= size) ? all : undefined;
    });
    const names = published.map((c) => {
      const v = verifyCosignedCheckpoint(c, sinkKeys, witnesses, 1);
      assert.equal(v.problem, undefined);
      return v.witnesses[0]!.name;
    });
    assert.deepEqual(names.sort(), ids.map((id) => `keyshard.dev/witness/${id}`));
    // The auditor's check with the dev trust file (quorum 2) and the witnesses' fresh cosignatures.
    const verified = await keyshard(['audit', 'verify', cluster.layout.auditDir, '--trust', cluster.trustFile, '--fetch', '--json'], env);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.equal((JSON.parse(verified.stdout) as { witnesses: unknown[] }).witnesses.length, 2);
    // A cosignature is refused by the verifier under a witness key it does not trust.
    assert.match(verifyCosignedCheckpoint(published[0]!, sinkKeys, [], 1).problem!, /0 trusted witness/);
    const s = await statusOf(ids[0]!);
    assert.equal(s.witness?.vkey, trust.witnesses[0]);
    assert.equal(s.witness?.alarm, '');
  });

  it('a sink restored from an older copy of its folder: every replica alarms and refuses, also after a restart; an admin reset resumes service', async () => {
    const before = (await reader.checkpoint()).tree_size;
    await cluster.process('audit-sink').stop();
    rmSync(cluster.layout.auditDir, { recursive: true, force: true });
    cpSync(olderCopy, cluster.layout.auditDir, { recursive: true });
    await cluster.start(['audit-sink']);
    assert.ok((await reader.checkpoint()).tree_size < before, 'the sink serves the older, shorter log (it verifies on its own)');

    for (const id of ids)
      await waitFor(`${id} alarms`, async () => {
        const a = (await statusOf(id)).witness?.alarm;
        return a && /rolled back|not an extension|forked/.test(a) ? a : undefined;
      });
    const shown = await keyshard(['status', '--addr', cluster.coordinatorAddressOf(ids[0]!)], env);
    assert.match(shown.stdout, /^witness +keyshard\.dev\/witness\/coordinator-1 +ALARM: /m);
    const refusal = await rejectsWith(admins[ids[0]!]!.createKey('after-rollback'), 'UNAVAILABLE', /audit sink not trusted/);
    assert.equal(refusal.reason, 'AUDIT_UNAVAILABLE');
    assert.match(readFileSync(cluster.process(ids[0]!).logFile, 'utf8'), /"alert":"audit_witness_alarm"/);

    // A restart does not make the replica forget: it anchors on its record in etcd.
    await cluster.process(ids[1]!).stop();
    await cluster.start([ids[1]!]);
    await waitFor(`${ids[1]} alarms again after its restart`, async () => ((await statusOf(ids[1]!).catch(() => undefined))?.witness?.alarm ? true : undefined));
    await rejectsWith(admins[ids[1]!]!.createKey('after-restart'), 'UNAVAILABLE', /audit sink not trusted/); // its intent cannot be recorded (and it stays sealed: its join ceremony cannot be audited)
    await rejectsWith(admins[ids[0]!]!.createKey('still-refused'), 'UNAVAILABLE', /not trusted/);

    // Only with --confirm, and only an admin.
    const noConfirm = await keyshard(['audit', 'witness', 'reset'], env);
    assert.equal(noConfirm.code, 2);
    assert.match(noConfirm.stderr, /--confirm/);
    const app = cluster.client('app');
    await rejectsWith(app.resetWitnesses(true), 'PERMISSION_DENIED');
    app.close();
    const reset = await keyshard(['audit', 'witness', 'reset', '--confirm', '--json'], env);
    assert.equal(reset.code, 0, reset.stderr);
    const r = JSON.parse(reset.stdout) as { previous: { tree_size: number } | null; anchor: { tree_size: number; root_hash: string } };
    assert.ok(r.anchor.tree_size < before);

    await waitFor('CreateKey served again', () => admins[ids[0]!]!.createKey('after-reset').then(() => true, () => undefined));
    // The custodians saw the rollback too (their own checkpoint trust) and, having no witness
    // record to follow, trust the sink again only once restarted by their operators; then the
    // restarted replica's join ceremony (audited at every step) goes through.
    for (const c of cluster.custodianIds) await cluster.process(c).stop();
    await cluster.start(cluster.custodianIds);
    await cluster.waitUnsealed([ids[1]!], 60_000);
    assert.equal((await statusOf(ids[1]!)).witness?.alarm, '');
    await admins[ids[1]!]!.createKey('after-reset-2');
    const audited = await waitFor('the reset in the audit log', async () => {
      for await (const e of reader.query({ operation: 'witness.reset' })) return e.event;
      return undefined;
    });
    assert.equal(audited.principal, ADMIN);
    assert.equal(audited.details.anchor_tree_size, String(r.anchor.tree_size));
    assert.equal(audited.details.anchor_root, r.anchor.root_hash);
    assert.ok(Number(audited.details.previous_tree_size) >= 0 && audited.details.previous_alarm !== '');
    // The other replica followed the reset and said so in the log, with the reset record's etcd revision.
    const followed = await waitFor('witness.reset.followed in the audit log', async () => {
      for await (const e of reader.query({ operation: 'witness.reset.followed' })) if (e.event.principal === `keyshard.dev/witness/${ids[1]}`) return e.event;
      return undefined;
    });
    assert.equal(followed.details.anchor_root, r.anchor.root_hash);
    assert.match(followed.details.revision ?? '', /^[1-9]\d*$/);
  });
});
