/**
 * Fault injection (issues 7 and 18) against real processes: 3 coordinators, 3 etcd members, 5
 * custodians (t = 3) and 3 audit sink replicas, under a steady Encrypt / Decrypt / CreateKey load
 * from the TypeScript SDK given all three coordinator addresses. One fault at a time:
 *   SIGKILL the leader coordinator, a follower coordinator, an etcd follower, the etcd leader,
 *   a custodian; SIGSTOP a follower coordinator for 10 s; partition the leader coordinator from
 *   etcd; SIGKILL the audit log's leader replica, a follower replica; SIGSTOP the audit leader
 *   for 10 s; partition the audit leader from the other replicas and the coordinators; and one
 *   double fault, two of the three audit replicas killed (no majority: state changes fail closed).
 * Each fault is held ~10 s, then undone (restart — a coordinator rejoins by the join policy —,
 * SIGCONT, heal). Measured per scenario: the load's success ratio during the fault, the time
 * until it was back at ~100 %, the time the component took to serve again, leader failover,
 * and acknowledged writes lost / ciphertexts that no longer decrypt (every acknowledged write
 * so far is checked after each scenario, and all of them at the end). Targets: no acknowledged
 * write lost and no ciphertext undecryptable, ever; Encrypt ≥ 99.9 % during a coordinator kill
 * (the SDK's retries counted); leader failover ≤ 2 × leaderTtlSeconds. Each scenario's test
 * asserts its own row (assertRow in test/support/fault-report.ts): nothing lost or
 * undecryptable, Encrypt ≥ 99.9 % and CreateKey 100 % during every single fault (each leaves a
 * majority of each component serving; the SDK retries a CreateKey whose answer was lost with its
 * request token), failover ≤ 2 × TTL where the leader is deposed. After each audit replica
 * fault: every CreateKey acknowledged since the fault has its event in every replica's log, and
 * the replicas' logs are byte-identical once the one that was down caught up. The double audit
 * fault asserts that CreateKey fails closed while no majority of replicas runs (refused, and no
 * key made) and that every crypto call answered meanwhile is in every replica's log once they
 * are back (spooled). The last test checks every acknowledged write of the whole run again, and
 * every acknowledged CreateKey's event in every replica's log.
 *
 * The partitions are TCP proxies (test/support/tcp-link.ts, run in a relay process of their own:
 * link-relay.ts, so the test's reading of logs never stalls the traffic) on each coordinator's path to each
 * etcd member, and on each audit replica's path to each other replica and each coordinator's to
 * each replica (DevCluster auditRoute), not network namespaces: every component serves on
 * 127.0.0.1, so a namespace would have to bridge the other traffic back anyway. The custodians
 * reach the replicas directly (they append only during ceremonies, which the load makes none of).
 *
 * Run: `npm run test:faults` (full: faults held 10 s; ~7–8.5 min on the 2-core machine), or
 * `FAULTS_SHORT=1 npm run test:faults` for CI (faults held 6 s, shorter settling; ~5.5 min).
 * FAULTS_RATE sets the load (calls/s, default 150); KEEP_DIR=1 keeps the cluster's state and
 * logs. Named *.suite.ts so that `npm test` (test/run.sh runs test/*.test.ts) does not run it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, DevCluster, coordinatorId } from '@keyshard/devcluster';
import { createEventsMissing, eventsOf, logBytes, recordCount, replicasAgree } from './support/audit-logs.ts';
import { KeyshardClient } from '@keyshard/client';
import { SteadyLoad, listKeys, sleep, verifyLedger, type OpRecord } from './support/load.ts';
import { LinkRelay, type RemoteLink } from './support/link-relay.ts';
import { waitFor } from './support/grpc.ts';
import { assertRow, measure, readLog, renderTable, waitForNewLeader, type ScenarioResult, type ScenarioTimes } from './support/fault-report.ts';

const SHORT = process.env.FAULTS_SHORT === '1';
const HOLD_MS = SHORT ? 6_000 : 10_000;
const SETTLE_MS = SHORT ? 3_000 : 5_000;
const RATE = Number(process.env.FAULTS_RATE ?? 150);
const ROTATION_PERIOD_S = 5;
const COORDINATORS = [coordinatorId(0), coordinatorId(1), coordinatorId(2)];
const AUDIT_REPLICAS = ['audit-sink', 'audit-sink-2', 'audit-sink-3'];

describe('fault injection under steady SDK load', { timeout: 25 * 60_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let load: SteadyLoad;
  let loadClient: KeyshardClient;
  let leaderTtl = 5;
  const admins = new Map<string, KeyshardClient>();
  /** links.get(coordinator)[member]: that replica's path to that etcd member. */
  const links = new Map<string, RemoteLink[]>();
  /** auditLinks.get(from).get(replica): a coordinator's or another replica's path to that audit replica. */
  const auditLinks = new Map<string, Map<string, RemoteLink>>();
  /** The process the links run in (test/support/link-relay.ts: the test's own event loop stalls while it reads logs). */
  let relay: LinkRelay;
  const results: ScenarioResult[] = [];
  const lostKeys = new Set<string>();
  const badCiphertexts = new Set<Buffer>();
  const loadKeys = Array.from({ length: 8 }, (_, i) => `faults-load-${i}`);

  const statusOf = (id: string) => admins.get(id)!.status({ timeoutMs: 2_000 });
  const leader = async () => {
    for (const id of COORDINATORS) {
      const s = await statusOf(id).catch(() => undefined);
      if (s?.leader_id) return s.leader_id;
    }
    throw new Error('no replica names a leader');
  };
  const follower = async () => {
    const l = await leader();
    return COORDINATORS.find((id) => id !== l)!;
  };
  /** Every replica answers unsealed, every one is registered (unsealed) and exactly one leads. */
  const clusterWhole = async (name: string) => {
    for (const deadline = Date.now() + 60_000; ; await sleep(500)) {
      const s = await Promise.all(COORDINATORS.map((id) => statusOf(id).catch(() => undefined)));
      const view = s.find((x) => x !== undefined);
      const whole =
        s.every((x) => x && !x.sealed) &&
        COORDINATORS.every((id) => view?.replicas.some((r) => r.id === id && !r.sealed)) &&
        view?.replicas.filter((r) => r.leader).length === 1;
      if (whole) return;
      if (Date.now() > deadline)
        assert.fail(`${name}: the cluster is not whole 60 s after the fault was undone: ${JSON.stringify(s.map((x) => x && { id: x.coordinator_id, sealed: x.sealed, leader: x.leader_id, registered: x.replicas.map((r) => `${r.id}${r.sealed ? ' (sealed)' : ''}`) }))}`);
    }
  };

  /** Restarts a replica and has it rejoin; says how long the process took to listen and the join to unseal it. */
  const restartCoordinator = async (id: string) => {
    const t0 = Date.now();
    await cluster.start([id]);
    const t1 = Date.now();
    await cluster.bootstrapReplica(id);
    return `${id} listening after ${((t1 - t0) / 1000).toFixed(1)} s, unsealed by its join ${((Date.now() - t1) / 1000).toFixed(1)} s later`;
  };

  /** Holds a fault, undoes it, settles, then checks every acknowledged write so far. */
  const scenario = async (
    name: string,
    fault: () => Promise<void>,
    restore: () => Promise<string | void>,
    opts: { hold?: (t0: number) => Promise<Partial<ScenarioResult>>; holdMs?: number; note?: string } = {},
  ): Promise<ScenarioResult> => {
    await sleep(1_000); // a quiet second of baseline between scenarios
    const t: ScenarioTimes = { fault: Date.now(), restore: 0, serving: 0, end: 0 };
    let extra: Partial<ScenarioResult> = {};
    let restored: string | void = undefined;
    try {
      await fault();
      const held = opts.hold ? opts.hold(t.fault) : Promise.resolve({});
      const [x] = await Promise.all([held, sleep(opts.holdMs ?? HOLD_MS)]);
      extra = x;
    } finally {
      t.restore = Date.now();
      restored = await restore();
      t.serving = Date.now();
    }
    await sleep(SETTLE_MS);
    t.end = Date.now();
    const check = await verifyLedger(loadClient, load.ledger);
    const newLost = check.keysLost.filter((k) => !lostKeys.has(k.id));
    const newBad = check.undecryptable.filter((c) => !badCiphertexts.has(c.ciphertext));
    for (const k of newLost) lostKeys.add(k.id);
    for (const c of newBad) badCiphertexts.add(c.ciphertext);
    const result: ScenarioResult = {
      name,
      ...measure(load, t),
      writesLost: newLost.length + newBad.length,
      undecryptable: newBad.length,
      stale: check.stale,
      staleSeconds: check.staleMs / 1000,
      note: [opts.note, extra.note, restored].filter(Boolean).join('; '),
      ...(extra.failoverSeconds !== undefined ? { failoverSeconds: extra.failoverSeconds } : {}),
    };
    results.push(result);
    await clusterWhole(name);
    assert.equal(newLost.length, 0, `${name}: acknowledged keys lost: ${newLost.map((k) => k.name).join(', ')}`);
    assert.equal(newBad.length, 0, `${name}: ciphertexts that no longer decrypt: ${newBad.slice(0, 5).map((c) => c.why).join('; ')}`);
    return result;
  };

  const failoverWithin = (victim: string) => async (t0: number) => {
    const survivors = COORDINATORS.filter((id) => id !== victim).map((id) => admins.get(id)!);
    const { at, leader: next } = await waitForNewLeader(survivors, victim, 60_000);
    return { failoverSeconds: (at - t0) / 1000, note: `${victim} → ${next}` };
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-faults-'));
    // Each replica reaches each etcd member through its own link, so one replica can be partitioned.
    relay = await LinkRelay.start();
    for (const id of COORDINATORS) links.set(id, await relay.open(3));
    const replicaOverrides = Object.fromEntries(
      COORDINATORS.map((id) => [id, { etcd: { endpoints: links.get(id)!.map((l) => `https://127.0.0.1:${l.port}`) } }]),
    );
    // Each coordinator and each audit replica reaches each (other) audit replica through its own link, so one replica can be partitioned.
    for (const from of [...COORDINATORS, ...AUDIT_REPLICAS]) {
      const to = AUDIT_REPLICAS.filter((r) => r !== from);
      const opened = await relay.open(to.length);
      auditLinks.set(from, new Map(to.map((r, i) => [r, opened[i]!])));
    }
    const auditRoute = (from: string, replica: string) => {
      const l = auditLinks.get(from)?.get(replica);
      return l ? `127.0.0.1:${l.port}` : undefined;
    };
    cluster = await DevCluster.create({ dir, custodians: 5, threshold: 3, coordinators: 3, etcdMembers: 3, auditReplicas: 3, replicaOverrides, auditRoute });
    const targets: Promise<void>[] = [];
    cluster.layout.etcdMembers.forEach((m, i) => {
      for (const id of COORDINATORS) targets.push(links.get(id)![i]!.setTarget(m.clientPort));
    });
    for (const byReplica of auditLinks.values()) for (const [r, l] of byReplica) targets.push(l.setTarget(Number(cluster.layout.auditSinkAddress(r).split(':').pop())));
    await Promise.all(targets);
    leaderTtl = JSON.parse(readFileSync(cluster.layout.configFile(COORDINATORS[0]!), 'utf8')).leaderTtlSeconds ?? 5;
    await cluster.start();
    await cluster.bootstrap();
    for (const id of COORDINATORS) admins.set(id, cluster.client(ADMIN, { coordinator: id }));
    const admin = admins.get(COORDINATORS[0]!)!;
    // Keys the load encrypts with; the leader rotates them every few seconds throughout.
    for (const name of loadKeys) await admin.createKey(name, { rotationPeriodSeconds: ROTATION_PERIOD_S, policy: { encrypt: [APP], decrypt: [APP] } });
    loadClient = new KeyshardClient({ address: COORDINATORS.map((id) => cluster.coordinatorAddressOf(id)), tls: cluster.layout.certs[APP]! });
    load = new SteadyLoad({ client: loadClient, rate: RATE, mix: { Encrypt: 0.6, Decrypt: 0.35, CreateKey: 0.05 }, keys: loadKeys, namePrefix: 'faults-new' });
    load.start();
    await sleep(5_000); // warm: every replica has loaded the keys and reserved usage
  });

  after(async () => {
    await load?.stop().catch(() => {});
    loadClient?.close();
    for (const c of admins.values()) c.close();
    // Nothing may stay paused or partitioned, whatever failed.
    const allLinks = [...[...links.values()].flat(), ...[...auditLinks.values()].flatMap((m) => [...m.values()])];
    for (const id of [...COORDINATORS, ...AUDIT_REPLICAS]) cluster?.processes.get(id)?.resume();
    await relay?.heal(allLinks).catch(() => {});
    await cluster?.stop();
    await relay?.close();
    if (results.length) process.stdout.write(`\nfault-injection results (load ${RATE} calls/s, faults held ${HOLD_MS / 1000} s)\n${renderTable(results)}\n\n`);
    if (process.env.KEEP_DIR === '1') process.stdout.write(`cluster state and logs kept in ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  });

  it('no fault: the baseline the scenarios compare against; Encrypt ≥ 99.9 %, nothing lost', async () => {
    assertRow(await scenario('no fault (baseline)', async () => {}, async () => {}));
  });

  it('SIGKILL of the leader coordinator: another leads within 2 × leader TTL; Encrypt ≥ 99.9 %', async () => {
    const victim = await leader();
    const r = await scenario(
      'kill leader coordinator',
      () => cluster.process(victim).kill(),
      () => restartCoordinator(victim),
      { hold: failoverWithin(victim) },
    );
    assertRow(r, { leaderTtlSeconds: leaderTtl });
  });

  it('SIGKILL of a follower coordinator: Encrypt ≥ 99.9 %', async () => {
    const victim = await follower();
    assertRow(await scenario('kill follower coordinator', () => cluster.process(victim).kill(), () => restartCoordinator(victim)));
  });

  it('SIGSTOP of a follower coordinator for 10 s, then SIGCONT: Encrypt ≥ 99.9 %', async () => {
    const victim = await follower();
    const p = cluster.process(victim);
    const r = await scenario(
      `SIGSTOP follower coordinator ${HOLD_MS / 1000} s`,
      async () => p.pause(),
      async () => {
        p.resume();
        await cluster.waitUnsealed([victim], 60_000);
      },
      { note: victim },
    );
    assertRow(r);
  });

  it('SIGKILL of an etcd follower member: Encrypt ≥ 99.9 %', async () => {
    const etcdLeader = await cluster.etcdLeader();
    const victim = cluster.etcdNames.find((n) => n !== etcdLeader)!;
    assertRow(await scenario('kill etcd follower', () => cluster.process(victim).kill(), () => cluster.start([victim]), { note: victim }));
  });

  it('SIGKILL of the etcd leader: Encrypt ≥ 99.9 %', async () => {
    const victim = await cluster.etcdLeader();
    const r = await scenario('kill etcd leader', () => cluster.process(victim).kill(), () => cluster.start([victim]), {
      hold: async (t0) => {
        for (;;) {
          const next = await cluster.etcdLeader().catch(() => undefined);
          if (next && next !== victim) return { note: `${victim} → ${next} after ${((Date.now() - t0) / 1000).toFixed(1)} s` };
          if (Date.now() - t0 > 60_000) return { note: `${victim}: no new etcd leader within 60 s` };
          await sleep(100);
        }
      },
    });
    assertRow(r);
  });

  it('SIGKILL of a custodian: Encrypt ≥ 99.9 %', async () => {
    const victim = cluster.custodianIds.at(-1)!;
    assertRow(await scenario('kill custodian', () => cluster.process(victim).kill(), () => cluster.start([victim]), { note: victim }));
  });

  /** The replica that leads the audit log now, and one that follows it. */
  const auditLeader = () => cluster.waitForAuditLeader();
  const auditFollower = async () => {
    const l = await auditLeader();
    return AUDIT_REPLICAS.find((id) => id !== l)!;
  };

  /**
   * After an audit replica fault: every CreateKey acknowledged since `since` has its event in
   * every replica's log, and the logs are byte-identical once the replica that was down caught
   * up (replicasAgree waits for it). Adds what it found to the row's note.
   */
  const auditIntact = async (r: ScenarioResult, since: number) => {
    const agreed = await replicasAgree(cluster).catch((e: Error) => assert.fail(`${r.name}: ${e.message}`));
    const acked = load.ledger.keys.filter((k) => k.ackAt >= since).map((k) => k.id);
    const missing = await createEventsMissing(cluster, acked);
    assert.deepEqual(missing, [], `${r.name}: acknowledged CreateKeys whose audit event a replica lacks`);
    r.note = [r.note, `${acked.length} CreateKeys acknowledged since the fault, each in all 3 logs; logs identical (${recordCount(agreed)} records)`].filter(Boolean).join('; ');
  };

  /** Holds until a replica other than `victim` leads the audit log; says which and when. */
  const auditFailover = (victim: string) => async (t0: number) => {
    const next = await waitFor('another audit leader', async () => {
      const l = cluster.auditLeader();
      return l && l !== victim ? l : undefined;
    }, 30_000);
    return { note: `${victim} → ${next} after ${((Date.now() - t0) / 1000).toFixed(1)} s` };
  };

  /** Restarts audit replicas; says how long each took to listen. */
  const restartAudit = async (ids: string[]) => {
    const t0 = Date.now();
    await cluster.start(ids);
    return `${ids.join(', ')} listening after ${((Date.now() - t0) / 1000).toFixed(1)} s`;
  };

  it('SIGKILL of the audit leader replica: another leads; CreateKey 100 %, nothing acknowledged missing from any log', async () => {
    const victim = await auditLeader();
    const r = await scenario('kill audit leader', () => cluster.process(victim).kill(), () => restartAudit([victim]), { hold: auditFailover(victim) });
    assertRow(r);
    await auditIntact(r, r.times.fault);
  });

  it('SIGKILL of an audit follower replica: CreateKey 100 %; it catches up', async () => {
    const victim = await auditFollower();
    const r = await scenario('kill audit follower', () => cluster.process(victim).kill(), () => restartAudit([victim]), { note: victim });
    assertRow(r);
    await auditIntact(r, r.times.fault);
  });

  it('SIGSTOP of the audit leader replica for 10 s, then SIGCONT: CreateKey 100 %; it steps down and catches up', async () => {
    const victim = await auditLeader();
    const p = cluster.process(victim);
    const r = await scenario(`SIGSTOP audit leader ${HOLD_MS / 1000} s`, async () => p.pause(), async () => p.resume(), { hold: auditFailover(victim) });
    assertRow(r);
    await auditIntact(r, r.times.fault);
  });

  it('partition of the audit leader from the other replicas and the coordinators: CreateKey 100 %; healed, it follows and catches up', async () => {
    const victim = await auditLeader();
    const cut = [...auditLinks.entries()].flatMap(([from, m]) => (from === victim ? [...m.values()] : m.has(victim) ? [m.get(victim)!] : []));
    const r = await scenario('partition audit leader', () => relay.cut(cut), () => relay.heal(cut), { hold: auditFailover(victim) });
    assertRow(r);
    await auditIntact(r, r.times.fault);
  });

  it('SIGKILL of two of the three audit replicas (no majority): crypto calls spool (as many crypto events in every log as calls answered meanwhile, once they are back); CreateKey fails closed', async () => {
    let downAt = Infinity;
    const l = await auditLeader();
    const victims = [l, AUDIT_REPLICAS.find((id) => id !== l)!];
    const r = await scenario(
      'kill 2 of 3 audit replicas',
      async () => {
        await Promise.all(victims.map((v) => cluster.process(v).kill()));
        downAt = Date.now(); // no majority from here until the restart
      },
      () => restartAudit(victims),
      { note: `${victims.join(', ')} killed` },
    );
    assertRow(r, { createKeyAvailable: false });
    const upAt = r.times.restore; // the restart began
    const whileDown = (o: OpRecord) => o.start >= downAt && o.end < upAt;

    // Fail closed: a CreateKey's intent must be durable on a majority of replicas before anything is
    // written. The SDK retries a refused CreateKey with its request token until its deadline (10 s),
    // so one started while down may succeed — once the majority is back: its key must be younger
    // than the restart. None may succeed, or make its key, before.
    const creates = load.ops.filter((o) => o.kind === 'CreateKey' && o.start >= downAt && o.start < upAt);
    assert.ok(creates.length > 0, 'no CreateKey was started while the audit log had no majority: nothing shows it fails closed');
    const codes = byCode(creates);
    assert.deepEqual(creates.filter((o) => o.ok && o.end < upAt).map((o) => o.name), [], `CreateKeys answered ok while the audit log had no majority (it must fail closed; outcomes: ${codes})`);
    const admin = admins.get(COORDINATORS[0]!)!;
    const names = new Set([...(await listKeys(admin)).values()].map((k) => k.name));
    const made = await Promise.all(creates.filter((o) => names.has(o.name!)).map((o) => admin.getKey(o.name!)));
    const early = made.filter((k) => Date.parse(k.created_at) < upAt);
    assert.deepEqual(early.map((k) => `${k.name} created ${k.created_at}`), [], `CreateKeys started while the audit log had no majority that made their key before it was back (restart at ${new Date(upAt).toISOString()})`);

    // Crypto calls spool: each one answered meanwhile has its event in every replica's log once they are back.
    const answered = load.ops.filter((o) => o.ok && o.kind !== 'CreateKey' && whileDown(o)).length;
    assert.ok(answered > 0, 'no crypto call was both started and answered while the audit log had no majority');
    const logged = (id: string) =>
      eventsOf(logBytes(cluster.layout.auditDirOf(id)), (l) => l.includes('"operation":"keys.Encrypt"') || l.includes('"operation":"keys.Decrypt"')).filter((e) => (e.operation === 'keys.Encrypt' || e.operation === 'keys.Decrypt') && e.result === 'ok' && Date.parse(e.time) >= downAt && Date.parse(e.time) < upAt).length;
    for (const id of AUDIT_REPLICAS) {
      let n = 0;
      await waitFor(`the ${answered} crypto calls answered without an audit majority, in ${id}'s log`, async () => ((n = logged(id)) >= answered ? true : undefined), 60_000).catch(() =>
        assert.fail(`only ${n} events in ${id}'s log for the ${answered} crypto calls answered while the audit log had no majority, 60 s after the restart (spooled events lost)`),
      );
    }
    await auditIntact(r, upAt);
    r.note = [r.note, `${creates.length} CreateKeys started without a majority: none made while it lasted, ${made.length} made after the restart by the SDK's retries (outcomes: ${codes}); ${answered} crypto calls answered, as many crypto events in each of the 3 logs`].filter(Boolean).join('; ');
  });

  it('partition of the leader coordinator from etcd: another replica leads, the old leader is fenced', async () => {
    const victim = await leader();
    const cut = links.get(victim)!;
    const r = await scenario(
      'partition leader from etcd',
      () => relay.cut(cut),
      async () => {
        await relay.heal(cut);
        // Serving again: it answers, unsealed, and knows it no longer leads.
        for (const deadline = Date.now() + 60_000; ; await sleep(200)) {
          const s = await statusOf(victim).catch(() => undefined);
          if (s && !s.sealed && s.leader_id && s.leader_id !== victim) break;
          if (Date.now() > deadline) throw new Error(`${victim} did not serve again after the partition healed`);
        }
      },
      // Healed as soon as another replica leads, so the old leader's held writes arrive after it was
      // deposed, and perhaps before it noticed (etcd3 notices a lost lease late): its fence must hold.
      { hold: failoverWithin(victim), holdMs: 0 },
    );
    assertRow(r, { leaderTtlSeconds: leaderTtl });
    const fenced = await fencingEvidence(cluster.process(victim).logFile, r.times.fault, admins.get(COORDINATORS.find((id) => id !== victim)!)!);
    r.note = `${r.note}; ${fenced.summary}`;
    assert.equal(fenced.lateWrites.length, 0, `the deposed leader committed rotations it prepared while partitioned: ${JSON.stringify(fenced.lateWrites)}`);
  });

  it('at the end: every acknowledged write of the suite is intact; no scheduled rotation ran twice', async () => {
    await load.stop();
    const check = await verifyLedger(loadClient, load.ledger, 60_000);
    assert.deepEqual(check.keysLost.map((k) => k.name), [], 'acknowledged keys lost');
    assert.deepEqual(check.undecryptable.map((c) => c.why), [], 'ciphertexts that no longer decrypt');
    const admin = admins.get(COORDINATORS[0]!)!;
    for (const name of loadKeys) {
      const k = await admin.getKey(name);
      const versions = k.versions.map((v) => v.version);
      assert.deepEqual(versions, Array.from({ length: versions.length }, (_, i) => i + 1), `${name}: versions are contiguous`);
      assert.equal(k.primary_version, versions.length);
      for (let i = 1; i < k.versions.length; i++) {
        const gap = Date.parse(k.versions[i]!.created_at) - Date.parse(k.versions[i - 1]!.created_at);
        assert.ok(gap >= ROTATION_PERIOD_S * 1000 - 50, `${name}: versions ${i} and ${i + 1} only ${gap} ms apart: a scheduled rotation ran twice`);
      }
    }
    // Every acknowledged CreateKey of the whole run has its event in every audit replica's log, and the logs agree.
    await replicasAgree(cluster);
    assert.deepEqual(await createEventsMissing(cluster, load.ledger.keys.map((k) => k.id)), [], 'acknowledged CreateKeys whose audit event a replica lacks');
    const names = new Set([...(await listKeys(admin)).values()].map((k) => k.name));
    const createdAnyway = load.failedCreates.filter((f) => names.has(f.name));
    process.stdout.write(
      `final check: ${check.keysChecked} acknowledged keys, ${check.ciphertextsChecked} acknowledged ciphertexts; ${load.ops.length} calls, ${load.shed} shed\n` +
        `failed CreateKeys: ${load.failedCreates.length} (${byCode(load.failedCreates)}); of them, the key exists anyway: ${createdAnyway.length} (${byCode(createdAnyway)})\n`,
    );
    for (const r of results) {
      assert.equal(r.writesLost, 0, `${r.name}: writes lost`);
      assert.equal(r.undecryptable, 0, `${r.name}: undecryptable`);
    }
  });
});

/** Failures counted by status code, e.g. "UNAVAILABLE×3, DEADLINE_EXCEEDED×1" ("none" for none). */
function byCode(xs: { code?: string }[]): string {
  const n = new Map<string, number>();
  for (const x of xs) n.set(x.code ?? 'OK', (n.get(x.code ?? 'OK') ?? 0) + 1);
  return [...n].map(([c, k]) => `${c}×${k}`).join(', ') || 'none';
}

/**
 * What the partitioned replica's log shows from the fault on: rotations it committed for
 * versions it created after the fault while not re-elected (a deposed leader's write that got
 * through: must be none), writes its fence stopped, and whether it noticed losing the lease.
 */
async function fencingEvidence(logFile: string, faultAt: number, admin: KeyshardClient) {
  const lines = readLog(logFile).filter((l) => l.time >= faultAt);
  const reelected = lines.find((l) => l.msg === 'elected leader')?.time ?? Infinity;
  const rotations = lines.filter((l) => l.msg === 'scheduled rotation' && l.time < reelected);
  const lateWrites: { keyId: string; version: number; createdAt: string }[] = [];
  for (const l of rotations) {
    const v = (await admin.getKey(l.keyId!)).versions.find((x) => x.version === l.version);
    if (v && Date.parse(v.created_at) >= faultAt) lateWrites.push({ keyId: l.keyId!, version: l.version!, createdAt: v.created_at });
  }
  const fencedOff = lines.filter((l) => /fenced off/.test(l.err ?? '')).length;
  const lost = lines.filter((l) => l.msg === 'leadership lost; campaigning again').length;
  return {
    lateWrites,
    summary: `old leader after the cut: ${rotations.length} rotation(s) committed (all prepared before it), ${fencedOff} write(s) fenced off, lease loss noticed ${lost}×`,
  };
}
