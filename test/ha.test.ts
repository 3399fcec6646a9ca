/**
 * High availability of the seal (issue "Quorum governance", item 3) with three coordinator
 * replicas, three custodians (threshold 2) whose operators approve unseal ceremonies by hand
 * and whose join policy is the default `auto` (release only on an unsealed peer's vouch):
 *  - while the cluster is sealed, a join proposed with nothing but a coordinator's certificate
 *    (issue 14, attack 1) is refused by every custodian, with or without a forged vouch; no
 *    share leaves; each refusal is audited and raises an alert;
 *  - one unseal ceremony unseals every replica;
 *  - a replica SIGKILLed and restarted rejoins through a join ceremony an unsealed peer vouches
 *    for, with no operator;
 *  - custodians refuse a recipient that is not a registered coordinator, a join asked for
 *    another replica, and a caller whose certificate identity is not registered;
 *  - Seal on one replica seals them all, and none rejoins by itself afterwards.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, DevCluster, coordinatorId, transportPublicKeyPem } from '@keyshard/devcluster';
import { unsealAndWait, type Ceremony, type KeyshardClient } from '@keyshard/client';
import { newCeremony, sealNoticeSigner, signVouch, type Ceremony as CeremonyObject } from '@keyshard/crypto';
import { clusterPrefix, paths } from '@keyshard/store';
import { issueCert } from '@keyshard/pki';
import { keyshardProto, makeClient, readTls, unaryCall } from '@keyshard/rpc';
import { observeFor, rejectsWith, waitFor } from './support/grpc.ts';

describe('one ceremony unseals every replica', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  const clients: KeyshardClient[] = [];
  const users: KeyshardClient[] = [];
  const ids = [coordinatorId(0), coordinatorId(1), coordinatorId(2)];
  const auditOps = () => readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event as { operation: string; ceremony_id: string; principal: string; details: Record<string, string> });

  /** Starts an unseal on replica 1 and has two custodian operators approve it. */
  const unsealByOperators = async (): Promise<Ceremony> => {
    const admin = clients[0]!;
    const approving = unsealAndWait(admin, () => {}, 60_000);
    const pending = await waitFor('the ceremony at the custodians', async () => {
      const p = await cluster.operatorClient('custodian-1').pending();
      return p.ceremonies.find((c) => c.operation === 'unseal');
    });
    for (const id of ['custodian-1', 'custodian-3']) await cluster.operatorClient(id).approve(pending.id);
    return approving;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-ha-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, coordinators: 3, approvalPolicy: 'manual' });
    await cluster.start();
    for (const id of ids) clients.push(cluster.client(ADMIN, { coordinator: id }));
    // The key's user on each replica (the admin clients run the ceremonies; admins do not use keys).
    for (const id of ids) users.push(cluster.client(APP, { coordinator: id }));
    await clients[0]!.init(3, 2);
  });

  after(async () => {
    for (const c of [...clients, ...users]) c.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('while sealed, a join proposed with a coordinator certificate is refused by every custodian: no share leaves, audited, alerted', async () => {
    const { cluster_id: clusterId, sealed } = await clients[0]!.status();
    assert.equal(sealed, true);
    const attacker = ids[1]!; // its certificate and key are all the attacker has
    const forged = (c: CeremonyObject) => signVouch(Buffer.alloc(32, 7), c, ids[0]!, 1); // a root that is not the cluster's
    // The attacker holds that replica's host: its certificate and its enrolled transport key (whose
    // private half is on the host), and makes an ephemeral key of its own. Before issue 14 the
    // custodians released to such a join; without the vouch check they still would.
    const attackerKey = transportPublicKeyPem(cluster.layout, attacker);
    const attackerEphemeral = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const refusedIds: string[] = [];
    for (const custodian of cluster.custodianIds) {
      const link = makeClient(keyshardProto().CustodianService, cluster.custodianAddress(custodian), readTls(cluster.layout.certs[attacker]!));
      try {
        const ceremony = newCeremony({
          operation: 'join', clusterId, initiator: attacker, ttlSeconds: 60, threshold: 2, parameters: { generation: '1' },
          recipients: [{ coordinator_id: attacker, public_key_pem: attackerKey, ephemeral_public_key_pem: attackerEphemeral }],
        });
        refusedIds.push(ceremony.id);
        await rejectsWith(unaryCall(link, 'ProposeCeremony', { ceremony }), 'FAILED_PRECONDITION', /no replica unsealed in the current seal epoch vouched for it; an unseal ceremony is needed/);
        await rejectsWith(unaryCall(link, 'ProposeCeremony', { ceremony, vouch: forged(ceremony) }), 'PERMISSION_DENIED', /does not verify against share set 1's vouch key/);
        // Nothing was recorded, so nothing can be approved or released later either.
        await rejectsWith(unaryCall(link, 'GetRelease', { id: ceremony.id }), 'NOT_FOUND');
      } finally {
        link.close();
      }
      const pending = await cluster.operatorClient(custodian).pending();
      assert.equal(pending.ceremonies.filter((c) => c.operation === 'join').length, 0, `${custodian} shows its operator no join to approve`);
    }
    type Ev = { operation: string; ceremony_id: string; principal: string; code?: string; details: Record<string, string> };
    const events = () => readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event as Ev);
    const refusals = await waitFor('every refusal audited and alerted', async () => {
      const ev = events();
      const refused = ev.filter((e) => e.operation === 'custodian.ProposeCeremony' && refusedIds.includes(e.ceremony_id) && e.code !== '');
      const alerts = ev.filter((e) => e.operation === 'audit.alert' && e.details.rule === 'refusals' && refusedIds.includes(e.ceremony_id));
      return refused.length === 2 * refusedIds.length && alerts.length === refused.length ? { refused, alerts } : undefined;
    });
    assert.ok(refusals.refused.every((e) => e.principal === attacker && e.details.operation === 'join'));
    assert.deepEqual(new Set(refusals.refused.map((e) => e.code)), new Set(['FAILED_PRECONDITION', 'PERMISSION_DENIED']));
  });

  it('one unseal ceremony, approved by two operators, unseals all three replicas', async () => {
    const c = await unsealByOperators();
    assert.deepEqual(c.recipients.map((r) => r.coordinator_id).sort(), ids, 'every registered replica is a recipient');
    await cluster.waitUnsealed(ids, 20_000);
    const k = await users[0]!.createKey('ha');
    const cts = await Promise.all(users.map((cl, i) => cl.encrypt(k.id, Buffer.from(`from ${i}`))));
    for (const [i, ct] of cts.entries()) assert.equal((await users[(i + 1) % 3]!.decrypt(ct.ciphertext)).plaintext.toString(), `from ${i}`);
    assert.equal(auditOps().filter((e) => e.operation === 'ceremony.unseal.created').length, 1, 'one ceremony');
    const completing = auditOps().filter((e) => e.operation === 'ceremony.unseal.completing' && e.ceremony_id === c.id);
    assert.deepEqual(completing.map((e) => e.details.replica).sort(), ids, `each replica audits its own unseal: ${JSON.stringify(auditOps().filter((e) => e.operation.startsWith('ceremony.')).map((e) => [e.operation, e.principal, e.details.replica, e.ceremony_id.slice(0, 8)]))}`);
    const status = await clients[1]!.status();
    assert.deepEqual(status.replicas.map((r) => [r.id, r.sealed]), ids.map((id) => [id, false]));
    assert.equal(status.replicas.filter((r) => r.leader).length, 1, 'one leader');
  });

  it('a restarted replica rejoins through a join ceremony an unsealed peer vouches for', async () => {
    const victim = ids[2]!;
    await cluster.process(victim).kill();
    await cluster.start([victim]);
    // No operator approves anything here: an unsealed peer vouches and the custodians release on its vouch.
    await cluster.waitUnsealed([victim], 30_000);
    // Its record may reach the sink just after the seal opens: wait for it (a missing one still fails).
    const join = await waitFor('the join ceremony audited', async () => auditOps().find((e) => e.operation === 'ceremony.join.completed' && e.principal === victim), 10_000);
    assert.ok(join, 'the join ceremony is audited');
    const vouched = auditOps().filter((e) => e.operation === 'ceremony.join.vouched' && e.ceremony_id === join.ceremony_id);
    assert.ok(vouched.length >= 1 && vouched.every((e) => e.principal !== victim && e.details.joiner === victim), 'an unsealed peer vouched for it');
    const k = await users[0]!.getKey('ha');
    const ct = await users[2]!.encrypt(k.id, Buffer.from('after join'));
    assert.equal((await users[0]!.decrypt(ct.ciphertext)).plaintext.toString(), 'after join');
  });

  it('custodians refuse unregistered recipients, a join for another replica, and unregistered callers', async () => {
    const { cluster_id: clusterId } = await clients[0]!.status();
    const asReplica1 = makeClient(keyshardProto().CustodianService, cluster.custodianAddress('custodian-2'), readTls(cluster.layout.certs[ids[0]!]!));
    try {
      const rogue = newCeremony({
        operation: 'unseal', clusterId, initiator: ADMIN, ttlSeconds: 60, threshold: 2,
        recipients: [{ coordinator_id: ids[0]!, public_key_pem: 'k', ephemeral_public_key_pem: 'k' }, { coordinator_id: 'rogue', public_key_pem: 'k', ephemeral_public_key_pem: 'k' }],
      });
      await rejectsWith(unaryCall(asReplica1, 'ProposeCeremony', { ceremony: rogue }), 'PERMISSION_DENIED', /rogue is not a registered coordinator/);
      const forOther = newCeremony({ operation: 'join', clusterId, initiator: ids[0]!, ttlSeconds: 60, threshold: 2, recipients: [{ coordinator_id: ids[1]!, public_key_pem: 'k', ephemeral_public_key_pem: 'k' }] });
      await rejectsWith(unaryCall(asReplica1, 'ProposeCeremony', { ceremony: forOther }), 'PERMISSION_DENIED', /only ask for shares for the replica that proposes it/);
    } finally {
      asReplica1.close();
    }
    // A certificate from the cluster CA, but for an identity no custodian has registered.
    const rogueCert = await issueCert(path.join(dir, 'pki'), 'rogue-replica');
    const asRogue = makeClient(keyshardProto().CustodianService, cluster.custodianAddress('custodian-2'), readTls(rogueCert));
    try {
      const ceremony = newCeremony({ operation: 'join', clusterId, initiator: 'rogue-replica', ttlSeconds: 60, threshold: 2, recipients: [{ coordinator_id: 'rogue-replica', public_key_pem: 'k', ephemeral_public_key_pem: 'k' }] });
      await rejectsWith(unaryCall(asRogue, 'ProposeCeremony', { ceremony }), 'PERMISSION_DENIED');
    } finally {
      asRogue.close();
    }
  });

  it('a vouch obtained before a seal is refused after it: the sealing replica tells every custodian the new epoch', async () => {
    // The attacker holds coordinator-3's host (certificate, etcd access, transport key) while the
    // cluster is unsealed. It rewrites that replica's registration as sealed, with an ephemeral key
    // of its own (sealed registrations carry no MAC), and plants a join ceremony for it: an
    // unsealed peer vouches. It keeps the vouch, waits for the admins to seal, then uses it.
    const joiner = ids[2]!;
    const prefix = clusterPrefix(cluster.layout.plan.clusterName);
    const { cluster_id: clusterId } = await clients[0]!.status();
    const attackerEphemeral = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const regKey = `${prefix}${paths.coordinator(joiner)}`;
    const reg = JSON.parse((await cluster.etcdctl(['get', regKey, '--print-value-only'], joiner)).trim()) as Record<string, unknown>;
    delete reg.mac;
    await cluster.etcdctl(['put', regKey, JSON.stringify({ ...reg, sealed: true, ephemeralPublicKeyPem: attackerEphemeral })], joiner);
    const planted = newCeremony({
      operation: 'join', clusterId, initiator: joiner, ttlSeconds: 600, threshold: 2, parameters: { generation: '1' },
      recipients: [{ coordinator_id: joiner, public_key_pem: transportPublicKeyPem(cluster.layout, joiner), ephemeral_public_key_pem: attackerEphemeral }],
    });
    await cluster.etcdctl(['put', `${prefix}${paths.ceremony(planted.id)}`, JSON.stringify(planted)], joiner);
    const stored = await waitFor('an unsealed peer vouches for the planted join', async () => {
      const out = (await cluster.etcdctl(['get', `${prefix}${paths.joinVouchesPrefix(planted.id)}`, '--prefix', '--print-value-only'], joiner)).trim();
      return out ? (JSON.parse(out.split('\n')[0]!) as { voucher: string; seal_epoch: number; not_after: string; signature: string }) : undefined;
    });
    const vouch = { ...stored, signature: Buffer.from(stored.signature, 'base64') };

    await clients[0]!.seal();
    for (const c of clients) await waitFor('every replica sealed', async () => ((await c.status()).sealed ? true : undefined), 10_000);
    const notice = await waitFor('the seal notice audited', async () => auditOps().find((e) => e.operation === 'cluster.seal_notice.sent' && Number(e.details.seal_epoch) > stored.seal_epoch));
    assert.deepEqual((notice.details.told ?? '').split(',').sort(), cluster.custodianIds, 'every custodian was told');
    for (const custodian of cluster.custodianIds) {
      const link = makeClient(keyshardProto().CustodianService, cluster.custodianAddress(custodian), readTls(cluster.layout.certs[joiner]!));
      try {
        await rejectsWith(unaryCall(link, 'ProposeCeremony', { ceremony: planted, vouch }), 'PERMISSION_DENIED', new RegExp(`vouch is from seal epoch ${stored.seal_epoch}, older than epoch ${notice.details.seal_epoch}`));
        // A notice not signed by the root is refused: nobody can raise a custodian's epoch (and so block every join) without it.
        const forged = sealNoticeSigner(Buffer.alloc(32, 7), clusterId, 1)(Number(notice.details.seal_epoch) + 1000);
        await rejectsWith(unaryCall(link, 'NoteSeal', forged), 'PERMISSION_DENIED', /does not verify/);
      } finally {
        link.close();
      }
    }
    await unsealByOperators();
    await cluster.waitUnsealed(ids, 20_000);
  });

  it('Seal on one replica seals every replica; none rejoins by itself; one ceremony unseals them again', async () => {
    await clients[1]!.seal();
    for (const c of clients) await waitFor('every replica sealed', async () => ((await c.status()).sealed ? true : undefined), 10_000);
    await rejectsWith(users[0]!.encrypt('ha', Buffer.from('x')), 'FAILED_PRECONDITION', 'SEALED');
    // A sealed replica looks for unsealed peers to join every 2 s (joinCheckSeconds): watched for 5 s, over two checks each.
    await observeFor('every replica of the sealed cluster, over two join checks', 5_000, async () => {
      for (const c of clients) assert.equal((await c.status()).sealed, true, 'no replica rejoined a sealed cluster');
    });
    await unsealByOperators();
    await cluster.waitUnsealed(ids, 20_000);
  });
});
