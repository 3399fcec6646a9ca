/**
 * Crash consistency (issues 7 and 18): SIGKILL a coordinator at a random moment of CreateKey,
 * RotateKey, a scheduled-rotation sweep, or a reshare / rotate-root ceremony (at a random time, or
 * at one of the ceremony's named crash points: faultInjection.crashAt), restart it — it rejoins by
 * the join policy, so the custodians' shares are checked against the manifest every time — or
 * SIGKILL an audit sink replica during a burst of CreateKeys and restart it (audit replica
 * catch-up, below); and check after every iteration:
 *  - every acknowledged ciphertext (one per key version, at least) still decrypts;
 *  - key versions are contiguous 1..primary; a RotateKey made at most one version (exactly one
 *    if acknowledged); no scheduled rotation ran twice (versions of a key rotated every P
 *    seconds are at least P apart);
 *  - a CreateKey that was acknowledged exists, and any key that exists is usable;
 *  - request tokens: the killed CreateKey / RotateKey carried one; sent again with it after the
 *    restart (to either replica, as the SDK's retry would), it answers the outcome the killed
 *    call recorded if that applied (the same key id, the same version, nothing added), or applies
 *    now — never twice;
 *  - the cluster unseals: the killed replica rejoins; every 10th iteration and at the end the
 *    whole cluster is sealed and unsealed from the custodians' shares.
 * Audit replica catch-up ('audit-replica', every CRASH_AUDIT_EVERY-th iteration, default 5, so
 * that CI's 20 iterations run it 4 times): BURST_CALLERS callers run CreateKeys through the
 * client of both coordinators, each with its request token and, when it fails, sent again with
 * it as the SDK's retry would (CreateKey is audited fail-closed: answered only once the
 * replicated log acknowledged its event); at a random moment of the burst the audit leader or a
 * follower (the seed chooses) is SIGKILLed; the burst goes on until AFTER_KILL calls that
 * started after the kill were acknowledged (committed by the two replicas left, so the killed one
 * lacks them), then the replica restarts. Checks: every CreateKey acknowledged by a running
 * coordinator (set-up, warm-up and every burst; not those of 'create-key' iterations, whose
 * coordinator was killed mid-call and whose audit record comes from the retry's replay) has its
 * `keys.CreateKey` ok event in every replica's log (the restarted one included: it
 * caught up), the three logs agree byte for byte up to what the longest held, and the usual
 * invariants (the burst's keys exist and encrypt and decrypt).
 * At the very end (the last test) the coordinators and custodians stop, the replicas converge
 * and stop, their logs are byte-identical and `keyshard audit verify --trust` passes on each
 * replica's folder.
 * One cluster (1 etcd member, 2 coordinators, 3 custodians, t = 2, 3 audit sink replicas)
 * serves every iteration; only the killed process restarts.
 *
 * Run: `npm run test:crash`; CRASH_ITERATIONS (default 100; about 6 s each), CRASH_SEED (the
 * run prints the one it used, to replay it), CRASH_AUDIT_EVERY (default 5; 1 makes every
 * iteration an audit replica crash), KEEP_DIR=1 keeps the cluster's state and logs.
 * Named *.suite.ts so that `npm test` (test/run.sh runs test/*.test.ts) does not run it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { witnessName } from '@keyshard/audit-log';
import { ADMIN, APP, DevCluster, coordinatorId } from '@keyshard/devcluster';

/** The crash suite's keys: made by the admin, used by app. */
const FOR_APP = { encrypt: [APP], decrypt: [APP] };
import { KeyshardClient, waitForCeremony, type Key } from '@keyshard/client';
import { codeOf, sleep, verifyLedger, type Ledger } from './support/load.ts';
import { waitFor } from './support/grpc.ts';
import { cosignersOf, createEventsMissing, logBytes, recordCount, replicasAgree } from './support/audit-logs.ts';
import { keyshard, readEnvFile } from './support/cli.ts';

const ITERATIONS = Number(process.env.CRASH_ITERATIONS ?? 100);
const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const COORDINATORS = [coordinatorId(0), coordinatorId(1)];
/** Ceremonies are driven by this replica only: see the last test for why. */
const CEREMONY_DRIVER = COORDINATORS[0]!;
const SWEEP_PERIOD_S = 2;
const SWEEP_KEYS = ['sweep-0', 'sweep-1', 'sweep-2', 'sweep-3'];
const CRASH_POINTS = ['reserved', 'delivered', 'switched', 'retired'];
const KINDS = ['create-key', 'rotate-key', 'sweep', 'ceremony', 'audit-replica'] as const;
type Kind = (typeof KINDS)[number];
const AUDIT_EVERY = Number(process.env.CRASH_AUDIT_EVERY ?? 5);
if (!Number.isInteger(AUDIT_EVERY) || AUDIT_EVERY < 1) throw new Error(`CRASH_AUDIT_EVERY must be a whole number from 1 (got ${process.env.CRASH_AUDIT_EVERY})`);
/** Concurrent CreateKey callers of an audit replica crash's burst. */
const BURST_CALLERS = 4;
/** CreateKeys started after the kill that the burst waits to see acknowledged before the replica restarts. */
const AFTER_KILL = 8;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with CRASH_SEED. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function settled<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: string }> {
  try {
    return { ok: true, value: await p };
  } catch (e) {
    return { ok: false, code: codeOf(e) };
  }
}

/** `p`, or a failure with `message` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** An acknowledged CreateKey of a burst: when its first attempt started and when it was answered. */
interface BurstKey {
  name: string;
  id: string;
  startedAt: number;
  ackAt: number;
}

describe(`crash consistency: ${ITERATIONS} SIGKILLs at random moments (seed ${SEED})`, { timeout: (ITERATIONS * 90 + 600) * 1000 }, () => {
  const rand = prng(SEED);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const plan: Kind[] = Array.from({ length: ITERATIONS }, (_, i) => {
    const r = rand(); // drawn for every iteration: the other iterations' kinds do not depend on AUDIT_EVERY
    if (i % AUDIT_EVERY === AUDIT_EVERY - 1) return 'audit-replica';
    return r < 0.25 ? 'create-key' : r < 0.5 ? 'rotate-key' : r < 0.7 ? 'sweep' : 'ceremony';
  });
  let dir: string;
  let cluster: DevCluster;
  /** One client per replica, to send a call to the replica about to be killed. */
  const direct = new Map<string, KeyshardClient>();
  /** A client of both replicas (retries idempotent calls), for checks. */
  let admin: KeyshardClient;
  /** The keys' user, over every replica: the admin makes the keys for it (admins do not use keys). */
  let app: KeyshardClient;
  const ledger: Ledger = { ciphertexts: [], keys: [] };
  const window = { createKey: 20, rotateKey: 20, ceremony: 2_000, auditBurst: 500 };
  let manualVersions = 1;
  const timings: { kind: Kind; ms: number }[] = [];
  const created: { name: string; acked: boolean }[] = [];
  /** The ids of every acknowledged CreateKey: each must have its `keys.CreateKey` ok event in every audit replica's log. */
  const audited: string[] = [];

  const encrypt = async (key: string) => {
    const plaintext = Buffer.from(`crash ${key} ${ledger.ciphertexts.length}`);
    const context = { n: String(ledger.ciphertexts.length) };
    const r = await app.encrypt(key, plaintext, context);
    ledger.ciphertexts.push({ ciphertext: r.ciphertext, plaintext, context, keyId: r.key_id, ackAt: Date.now() });
  };
  const leader = async () => (await waitFor('a leader', async () => (await admin.status()).leader_id || undefined, 30_000));
  const setCrashAt = (id: string, crashAt?: string) => {
    const file = cluster.layout.configFile(id);
    const cfg = JSON.parse(readFileSync(file, 'utf8'));
    cfg.faultInjection = crashAt ? { crashAt } : {};
    writeFileSync(file, JSON.stringify(cfg, null, 2));
  };
  const restart = async (id: string) => {
    await cluster.start([id]);
    await cluster.bootstrapReplica(id);
  };
  const keyOf = (name: string) => waitFor(`key ${name}`, () => admin.getKey(name), 10_000);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-crash-'));
    cluster = await DevCluster.create({
      dir,
      custodians: 3,
      threshold: 2,
      coordinators: 2,
      auditReplicas: 3,
      // Short TTLs: a killed replica's registration, leadership and open ceremony lapse quickly.
      coordinatorOverrides: { registrationTtlSeconds: 2, leaderTtlSeconds: 2, custodianPollMs: 100, joinCheckSeconds: 1, rotationSweepSeconds: 1, ceremonyTtlSeconds: 60 },
    });
    await cluster.start();
    await cluster.bootstrap();
    for (const id of COORDINATORS) direct.set(id, cluster.client(ADMIN, { coordinator: id }));
    admin = new KeyshardClient({ address: COORDINATORS.map((id) => cluster.coordinatorAddressOf(id)), tls: cluster.layout.certs[ADMIN]!, timeoutMs: 20_000 });
    app = new KeyshardClient({ address: COORDINATORS.map((id) => cluster.coordinatorAddressOf(id)), tls: cluster.layout.certs[APP]!, timeoutMs: 20_000 });
    audited.push((await admin.createKey('enc', { policy: FOR_APP })).id);
    audited.push((await admin.createKey('manual-rot', { policy: FOR_APP })).id);
    for (const name of SWEEP_KEYS) audited.push((await admin.createKey(name, { rotationPeriodSeconds: SWEEP_PERIOD_S, policy: FOR_APP })).id);
    for (const k of ['enc', 'manual-rot', ...SWEEP_KEYS]) await encrypt(k);
    // How long the calls take, so a random kill lands inside them.
    const c1 = direct.get(COORDINATORS[0]!)!;
    const creates: number[] = [];
    const rotates: number[] = [];
    for (let i = 0; i < 5; i++) {
      let t = Date.now();
      audited.push((await c1.createKey(`crash-warm-${i}`)).id);
      creates.push(Date.now() - t);
      t = Date.now();
      await c1.rotateKey('manual-rot');
      rotates.push(Date.now() - t);
      manualVersions++;
    }
    window.createKey = 2 * median(creates) + 5;
    window.rotateKey = 2 * median(rotates) + 5;
    let t = Date.now();
    const warm = await createBurst('crash-warm-burst', (acked) => acked.length >= 3 * BURST_CALLERS);
    window.auditBurst = Date.now() - t;
    for (const k of warm.acked) {
      audited.push(k.id);
      ledger.keys.push({ id: k.id, name: k.name, ackAt: k.ackAt });
    }
    t = Date.now();
    await waitForCeremony(direct.get(CEREMONY_DRIVER)!, await direct.get(CEREMONY_DRIVER)!.startCeremony('reshare', { threshold: '2' }), () => {}, 60_000);
    window.ceremony = Math.round(1.5 * (Date.now() - t));
    process.stdout.write(
      `crash suite: seed ${SEED}; kill windows: CreateKey ${window.createKey} ms, RotateKey ${window.rotateKey} ms, ceremony ${window.ceremony} ms, sweep ${SWEEP_PERIOD_S * 1000} ms, CreateKey burst (audit replica) ${window.auditBurst} ms\n`,
    );
  });

  after(async () => {
    for (const c of direct.values()) c.close();
    admin?.close();
    app?.close();
    await cluster?.stop();
    if (timings.length) {
      const by = (k: Kind) => timings.filter((t) => t.kind === k).map((t) => t.ms);
      const line = KINDS.map((k) => `${k} ×${by(k).length} median ${(median(by(k).length ? by(k) : [0]) / 1000).toFixed(1)} s`).join(', ');
      const total = timings.reduce((s, t) => s + t.ms, 0);
      process.stdout.write(`crash suite: ${timings.length} iterations, ${(total / timings.length / 1000).toFixed(1)} s each on average (${line})\n`);
    }
    if (process.env.KEEP_DIR === '1') process.stdout.write(`cluster state and logs kept in ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  });

  /**
   * CreateKeys (made for app) by BURST_CALLERS concurrent callers through `admin` (both
   * coordinators) until `done(acknowledged so far)` holds when a caller is about to start one.
   * Each carries its request token and, when it fails, is sent again with it until `timeoutMs`
   * (the SDK already retried what it may; this is the caller's own retry, the same request).
   * Resolves with the acknowledged keys and the codes of the attempts that failed.
   */
  const createBurst = async (prefix: string, done: (acked: BurstKey[]) => boolean, timeoutMs = 60_000) => {
    const acked: BurstKey[] = [];
    const failures: string[] = [];
    const deadline = Date.now() + timeoutMs;
    let n = 0;
    let aborted = false;
    const caller = async () => {
      while (!done(acked) && !aborted) {
        const name = `${prefix}-${n++}`;
        const requestToken = `${name}-${SEED}`;
        const startedAt = Date.now();
        for (;;) {
          try {
            const k = await admin.createKey(name, { policy: FOR_APP }, { requestToken });
            acked.push({ name, id: k.id, startedAt, ackAt: Date.now() });
            break;
          } catch (e) {
            failures.push(codeOf(e));
            if (Date.now() > deadline || aborted) {
              aborted = true;
              throw new Error(`CreateKey ${name} not acknowledged within ${timeoutMs / 1000} s (${acked.length} others were; failed attempts: ${failures.join(', ')})`);
            }
            await sleep(200);
          }
        }
        if (Date.now() > deadline) {
          aborted = true;
          throw new Error(`a burst of CreateKeys did not reach its end within ${timeoutMs / 1000} s (${acked.length} acknowledged)`);
        }
      }
    };
    await Promise.all(Array.from({ length: BURST_CALLERS }, caller));
    return { acked, failures };
  };

  /** Kills `victim` once `call` is under way (after a random delay below `windowMs`); returns the call's outcome. */
  const killDuring = async <T>(victim: string, call: () => Promise<T>, windowMs: number) => {
    const outcome = settled(call());
    await sleep(rand() * windowMs);
    await cluster.process(victim).kill();
    return outcome;
  };

  const checkInvariants = async (i: number, what: string) => {
    // Versions contiguous; at most one new manual version per iteration.
    const manual = await keyOf('manual-rot');
    assertContiguous(manual);
    assert.ok(manual.primary_version - manualVersions <= 1, `${what}: RotateKey made ${manual.primary_version - manualVersions} versions`);
    manualVersions = manual.primary_version;
    for (const name of SWEEP_KEYS) assertScheduledOnce(await keyOf(name));
    // One new ciphertext per key (its current version), then every ciphertext so far.
    for (const k of ['enc', 'manual-rot', ...SWEEP_KEYS]) await encrypt(k);
    const check = await verifyLedger(app, ledger, 20_000);
    assert.deepEqual(check.keysLost.map((k) => k.name), [], `${what}: acknowledged keys lost`);
    assert.deepEqual(check.undecryptable.map((c) => c.why), [], `${what}: ciphertexts that no longer decrypt`);
    if (i % 10 === 9) await sealAndUnseal();
  };

  /** The whole cluster sealed, then unsealed from the custodians' shares alone. */
  const sealAndUnseal = async () => {
    await direct.get(COORDINATORS[0]!)!.seal();
    for (const id of COORDINATORS) await waitFor(`${id} sealed`, async () => ((await direct.get(id)!.status()).sealed ? true : undefined), 20_000);
    await cluster.bootstrap();
  };

  plan.forEach((kind, i) =>
    it(`#${i + 1} ${kind}`, async (t) => {
      const t0 = Date.now();
      let victim: string;
      let what: string;
      if (kind === 'create-key') {
        victim = pick(COORDINATORS);
        const name = `crash-key-${i}`;
        const requestToken = `crash-${SEED}-${i}`;
        const r = await killDuring(victim, () => direct.get(victim)!.createKey(name, { policy: FOR_APP }, { requestToken }), window.createKey);
        await restart(victim);
        what = `CreateKey ${name} on ${victim}: ${r.ok ? 'acknowledged' : r.code}`;
        // The caller's retry with the same token: the key the killed call made, or a new one; one key either way.
        const existed = await admin.getKey(name).catch(() => undefined);
        const retried = await admin.createKey(name, { policy: FOR_APP }, { requestToken }); // the same request, as a caller's retry sends it
        if (existed) assert.equal(retried.id, existed.id, `${what}: the retry answered the key the killed call made`);
        if (r.ok) assert.equal(retried.id, r.value.id, `${what}: the retry answered the acknowledged key`);
        what += `; retried with its token: ${existed ? 'replayed' : 'applied now'}`;
        created.push({ name, acked: true });
        const k = await keyOf(name);
        assert.equal(k.id, retried.id);
        if (k) {
          assertContiguous(k);
          await encrypt(k.id); // it exists, so it must be usable
          ledger.keys.push({ id: k.id, name, ackAt: Date.now() });
        }
      } else if (kind === 'rotate-key') {
        victim = pick(COORDINATORS);
        const requestToken = `crash-rot-${SEED}-${i}`;
        const r = await killDuring(victim, () => direct.get(victim)!.rotateKey('manual-rot', { requestToken }), window.rotateKey);
        await restart(victim);
        what = `RotateKey on ${victim}: ${r.ok ? `acknowledged v${r.value.primary_version}` : r.code}`;
        const k = await keyOf('manual-rot');
        if (r.ok) {
          assert.equal(r.value.primary_version, manualVersions + 1, `${what}: the acknowledged version follows the last one`);
          assert.ok(k.primary_version >= r.value.primary_version, `${what}: the acknowledged version is gone (primary ${k.primary_version})`);
        }
        // The caller's retry with the same token: the killed call's version if it applied, else one new version.
        const retried = await admin.rotateKey('manual-rot', { requestToken });
        assert.equal(retried.primary_version, manualVersions + 1, `${what}: the retry answered v${retried.primary_version}`);
        assert.equal((await keyOf('manual-rot')).primary_version, manualVersions + 1, `${what}: one rotation in all`);
        what += `; retried with its token: ${k.primary_version > manualVersions ? 'replayed' : 'applied now'}`;
      } else if (kind === 'sweep') {
        victim = await leader();
        const delay = rand() * SWEEP_PERIOD_S * 1000;
        await sleep(delay);
        await cluster.process(victim).kill();
        await restart(victim);
        what = `sweep: leader ${victim} killed ${Math.round(delay)} ms in`;
      } else if (kind === 'audit-replica') {
        // Drawn up front, so the seed decides them whatever the timing.
        const role = rand() < 0.5 ? 'leader' : 'follower';
        const followerPick = rand();
        const delay = Math.round(rand() * window.auditBurst);
        let killedAt: number | undefined;
        const afterKill = (acked: BurstKey[]) => (killedAt === undefined ? 0 : acked.filter((k) => k.startedAt > killedAt!).length);
        const burst = createBurst(`crash-audit-${i}`, (acked) => afterKill(acked) >= AFTER_KILL);
        burst.catch(() => {}); // awaited below; a failure before the kill is reported there
        await sleep(delay);
        const leaderNow = await cluster.waitForAuditLeader();
        const followers = cluster.auditSinkIds.filter((id) => id !== leaderNow);
        victim = role === 'leader' ? leaderNow : followers[Math.floor(followerPick * followers.length)]!;
        await cluster.process(victim).kill();
        killedAt = Date.now();
        const b = await burst;
        const victimDir = cluster.layout.auditDirOf(victim);
        const heldAtRestart = recordCount(logBytes(victimDir));
        await cluster.start([victim]);
        const slowest = Math.max(...b.acked.map((k) => k.ackAt - k.startedAt));
        what =
          `audit replica ${victim} (${role}) SIGKILLed ${delay} ms into a burst of CreateKeys: ${b.acked.length} acknowledged ` +
          `(${afterKill(b.acked)} started after the kill; slowest ${slowest} ms), ${b.failures.length} failed attempts sent again${b.failures.length ? ` (${[...new Set(b.failures)].join(', ')})` : ''}`;
        for (const k of b.acked) {
          audited.push(k.id);
          ledger.keys.push({ id: k.id, name: k.name, ackAt: k.ackAt });
        }
        // The restarted replica catches up from the leader; every acknowledged CreateKey of the run is in every log.
        const missing = await createEventsMissing(cluster, audited);
        assert.deepEqual(missing, [], `${what}: acknowledged CreateKeys without their audit event`);
        const agreed = recordCount(await replicasAgree(cluster)); // the restarted replica included: it caught up
        what += `; restarted holding ${heldAtRestart} records, caught up to ${agreed}: the 3 logs agree`;
      } else {
        victim = CEREMONY_DRIVER;
        const op = rand() < 0.5 ? 'reshare' : 'rotate-root';
        const params: Record<string, string> = op === 'reshare' ? { threshold: '2' } : {};
        const driver = direct.get(victim)!;
        if (rand() < 0.3) {
          const step = pick(CRASH_POINTS);
          setCrashAt(victim, `${op}:${step}`);
          try {
            await cluster.process(victim).stop();
            await restart(victim);
            const exited = cluster.process(victim).exited();
            const started = await settled(driver.startCeremony(op, params));
            assert.ok(started.ok, `${op}: the ceremony did not start: ${started.ok ? '' : started.code}`);
            await within(exited, 60_000, `${op} never reached ${step}`);
          } finally {
            setCrashAt(victim);
          }
          await cluster.process(victim).kill(); // if it is still running, the crash point was missed: the assertion above failed
          what = `${op} on ${victim}: crash point ${op}:${step}`;
        } else {
          const started = await settled(driver.startCeremony(op, params));
          assert.ok(started.ok, `${op}: the ceremony did not start: ${started.ok ? '' : started.code}`);
          const delay = rand() * window.ceremony;
          await sleep(delay);
          await cluster.process(victim).kill();
          what = `${op} on ${victim}: killed ${Math.round(delay)} ms after it started`;
        }
        await restart(victim);
        const s = await admin.status();
        assert.ok(s.initialized && !s.sealed, `${what}: the cluster is initialized and unsealed`);
        assert.deepEqual([s.threshold, s.shares], [2, 3], `${what}: the share set is 2 of 3`);
      }
      await checkInvariants(i, what);
      timings.push({ kind, ms: Date.now() - t0 });
      t.diagnostic(`${what}; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }),
  );

  it('at the end: the whole cluster seals and unseals; every acknowledged write is there', async () => {
    await sealAndUnseal();
    const check = await verifyLedger(app, ledger, 30_000);
    assert.deepEqual(check.keysLost.map((k) => k.name), []);
    assert.deepEqual(check.undecryptable.map((c) => c.why), []);
    for (const c of created.filter((x) => x.acked)) await keyOf(c.name);
    const acked = created.filter((c) => c.acked).length;
    process.stdout.write(`crash suite: ${ledger.ciphertexts.length} ciphertexts and ${ledger.keys.length} keys checked; CreateKey acknowledged ${acked} of ${created.length} interrupted\n`);
  });

  it('a reshare driven by a replica other than the one that rotated the root keeps the cluster unsealable', async () => {
    const [a, b] = COORDINATORS.map((id) => direct.get(id)!);
    await waitForCeremony(a!, await a!.startCeremony('rotate-root'), () => {}, 60_000);
    await b!.status(); // b reads the new manifest
    // b still holds the old root: its reshare is refused before anything is split, and b seals itself to rejoin.
    await assert.rejects(waitForCeremony(b!, await b!.startCeremony('reshare', { threshold: '2' }), () => {}, 60_000), /stale root key/);
    await cluster.waitUnsealed([COORDINATORS[1]!], 60_000);
    await waitForCeremony(b!, await b!.startCeremony('reshare', { threshold: '2' }), () => {}, 60_000);
    await sealAndUnseal();
    await verifyLedger(app, ledger, 10_000).then((c) => assert.equal(c.undecryptable.length, 0));
  });

  // Stops the cluster's processes: keep it the last test.
  it('at the very end: the producers stopped, the audit replicas hold the same log and each folder verifies offline', async () => {
    // The trust file's witness quorum is every witness (both coordinators, layout.ts
    // writeTrustFile): each publishes its cosignatures on every replica, at most every 10 s.
    const witnesses = COORDINATORS.map(witnessName);
    await waitFor(
      'a cosignature of each witness on every audit replica',
      async () => (cluster.auditSinkIds.every((id) => witnesses.every((w) => cosignersOf(cluster.layout.auditDirOf(id)).includes(w))) ? true : undefined),
      60_000,
    );
    assert.deepEqual(await createEventsMissing(cluster, audited), [], 'acknowledged CreateKeys without their audit event');
    // Offline verification reads a folder's segments, then its checkpoints and cosignatures: on a
    // live folder a checkpoint written between the two reads names records it did not read. So
    // first nothing may append: the producers stop; then the followers learn the last commit
    // (next heartbeat) and every log is the same, and stays so for a second (ten heartbeats: no
    // round of the producers' last events was still under way); then the replicas stop (each
    // writes a last checkpoint) and the folders are still.
    for (const id of [...COORDINATORS, ...cluster.custodianIds]) await cluster.process(id).stop();
    await replicasAgree(cluster);
    const logs = () => cluster.auditSinkIds.map((id) => logBytes(cluster.layout.auditDirOf(id)));
    let same: { bytes: Buffer; since: number } | undefined;
    await waitFor(
      'the audit replicas holding the same log for a second',
      async () => {
        const now = logs();
        if (!now.every((b) => b.equals(now[0]!))) same = undefined;
        else if (!same?.bytes.equals(now[0]!)) same = { bytes: now[0]!, since: Date.now() };
        return same && Date.now() - same.since >= 1_000 ? true : undefined;
      },
      30_000,
    );
    await Promise.all(cluster.auditSinkIds.map((id) => cluster.process(id).stop()));
    const final = logs();
    for (const [j, id] of cluster.auditSinkIds.entries())
      assert.ok(final[j]!.equals(final[0]!), `${id}'s log (${recordCount(final[j]!)} records) differs from ${cluster.auditSinkIds[0]}'s (${recordCount(final[0]!)} records)`);
    assert.deepEqual(await createEventsMissing(cluster, audited, cluster.auditSinkIds, 0), [], 'acknowledged CreateKeys without their audit event (stopped)');
    const env = readEnvFile(cluster.envFile);
    const verified: string[] = [];
    for (const id of cluster.auditSinkIds) {
      const v = await keyshard(['audit', 'verify', cluster.layout.auditDirOf(id), '--trust', cluster.layout.trustFile, '--json'], env);
      assert.equal(v.code, 0, `keyshard audit verify ${id}'s folder: ${v.stdout}${v.stderr}`);
      const r = JSON.parse(v.stdout) as { ok: boolean; records: number; rootHash: string };
      assert.ok(r.ok, `${id}: ${v.stdout}`);
      verified.push(`${id} ${r.records} records, root ${r.rootHash.slice(0, 12)}`);
    }
    process.stdout.write(`crash suite: ${audited.length} acknowledged CreateKeys in every audit replica's log; logs byte-identical (${recordCount(final[0]!)} records); audit verify ok: ${verified.join('; ')}\n`);
  });
});

function assertContiguous(k: Key): void {
  const versions = k.versions.map((v) => v.version);
  assert.deepEqual(versions, Array.from({ length: versions.length }, (_, i) => i + 1), `${k.name}: versions are contiguous`);
  assert.equal(k.primary_version, versions.length, `${k.name}: the primary version is the newest`);
}

/** A key rotated only by its schedule: consecutive versions at least one period apart. */
function assertScheduledOnce(k: Key): void {
  assertContiguous(k);
  const period = (k.rotation?.period_seconds ?? 0) * 1000;
  for (let i = 1; i < k.versions.length; i++) {
    const gap = Date.parse(k.versions[i]!.created_at) - Date.parse(k.versions[i - 1]!.created_at);
    assert.ok(gap >= period - 50, `${k.name}: versions ${i} and ${i + 1} are ${gap} ms apart (period ${period} ms): a scheduled rotation ran twice`);
  }
}
