/**
 * Three replicas in this process, each with its own data dir, checkpoint key and gRPC server
 * over mutual TLS on a real socket: election, majority commit, byte-identical logs, followers
 * refusing appends, the leader killed, a replica catching up and proving consistency, a
 * divergent uncommitted tail replaced, no acknowledgement without a majority.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '@keyshard/config';
import { KeyshardError } from '@keyshard/errors';
import { checkpointProblem, encodeEntry, encodeRecords, keyIdOf, verifyLogDir } from '@keyshard/audit-log';
import { makeTestPki, type TestPki } from '@keyshard/pki/testing';
import { serverCredentials } from '@keyshard/rpc';
import { AuditLog } from '../audit-log.ts';
import { signerFromKey } from '../checkpoint-store.ts';
import { Replica, type ReplicaPeer } from './replica.ts';
import { ReplicaStore } from './store.ts';

const IDS = ['audit-sink-1', 'audit-sink-2', 'audit-sink-3'];
const logger = createLogger('replica-spec', (process.env.REPLICA_SPEC_LOG as 'debug' | undefined) ?? 'silent');

/** A TCP relay from one replica to another, that a test can cut (a network partition on loopback). */
class Link {
  blocked = false;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    readonly server: net.Server,
    readonly target: () => number,
  ) {}

  static async open(target: () => number): Promise<Link> {
    const server = net.createServer();
    const link = new Link(server, target);
    server.on('connection', (c) => {
      if (link.blocked) return void c.destroy();
      const u = net.connect(link.target(), '127.0.0.1');
      for (const [a, b] of [[c, u], [u, c]] as const) {
        link.sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => (link.sockets.delete(a), b.destroy()));
        a.pipe(b);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return link;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  cut(): void {
    this.blocked = true;
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

interface Node {
  id: string;
  replica: Replica;
  log: AuditLog;
  server: grpc.Server;
}

describe('replicated audit log (3 replicas, real sockets)', () => {
  let dir: string;
  let pki: TestPki;
  const ports = new Map<string, number>();
  const keys = new Map<string, ReturnType<typeof generateKeyPairSync>>();
  const nodes = new Map<string, Node>();
  let seq = 0;

  /** links.get(`${from}>${to}`): how `from` reaches `to`. */
  const links = new Map<string, Link>();
  const peerAddress = (from: string, to: string) => `127.0.0.1:${from === to ? ports.get(to) : links.get(`${from}>${to}`)!.port}`;
  const peers = (self: string): ReplicaPeer[] => IDS.map((id) => ({ id, address: peerAddress(self, id), publicKey: keys.get(id)!.publicKey }));
  /** Cuts (or heals) every link to and from `id`. */
  const partition = (id: string, cut: boolean) => {
    for (const [k, l] of links) if (k.startsWith(`${id}>`) || k.endsWith(`>${id}`)) (cut ? l.cut() : (l.blocked = false));
  };
  const dataDir = (id: string) => path.join(dir, id);
  /** What an auditor of one replica's folder trusts: that replica's checkpoint key (no witnesses here). */
  const trusting = (id: string) => {
    const pub = keys.get(id)!.publicKey;
    return { trust: { sinkKeys: new Map([[keyIdOf(pub), pub]]), witnesses: [], witnessQuorum: 0 } };
  };

  async function wire(id: string, log: AuditLog, server: grpc.Server, store: ReplicaStore): Promise<Node> {
    const replica = new Replica({ self: id, replicas: peers(id), log, store, tls: pki.material(id), logger, electionMs: 1000, heartbeatMs: 100 });
    server.addService(replica.service.definition, replica.service.implementation);
    replica.start();
    const node = { id, replica, log, server };
    nodes.set(id, node);
    return node;
  }

  async function restart(id: string): Promise<Node> {
    const log = await AuditLog.open(dataDir(id), { signer: signerFromKey(keys.get(id)!.privateKey), checkpointIntervalMs: 60_000 });
    const store = await ReplicaStore.open(dataDir(id));
    const server = new grpc.Server();
    await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${ports.get(id)}`, serverCredentials(pki.material(id)), (e, p) => (e ? rej(e) : res(p))));
    return wire(id, log, server, store);
  }

  async function kill(id: string): Promise<void> {
    const n = nodes.get(id)!;
    nodes.delete(id);
    n.server.forceShutdown();
    await n.replica.close();
    await n.log.close();
  }

  const event = (tag: string) => ({ id: `ev-${tag}-${++seq}`, time: new Date().toISOString(), source: 'coordinator', principal: 'app', operation: 'keys.Encrypt', key_id: 'k', ceremony_id: '', result: 'ok', code: '', request_id: '', details: { tag } });

  async function waitFor<T>(what: string, fn: () => T | undefined, ms = 20_000): Promise<T> {
    const until = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v !== undefined && v !== false) return v as T;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const leader = () => waitFor('a leader', () => {
    const ls = [...nodes.values()].filter((n) => n.replica.role === 'leader');
    return ls.length === 1 ? ls[0] : undefined;
  });

  /**
   * Appends through the leader as a producer does: on AUDIT_NOT_LEADER (the machine is shared and
   * loaded: a leader may lose its term to a slow heartbeat) find the leader again and resend.
   */
  async function appendViaLeader(events: ReturnType<typeof event>[]): Promise<{ node: Node; receipt: Awaited<ReturnType<Replica['append']>> }> {
    for (let attempt = 0; ; attempt++) {
      const node = await leader();
      try {
        return { node, receipt: await node.replica.append(events) };
      } catch (e) {
        if (!(e instanceof KeyshardError && e.reason === 'AUDIT_NOT_LEADER') || attempt >= 10) throw e;
      }
    }
  }

  /** Every running replica holds `ref`'s log size (followers learn a commit with the leader's next message: a round or a heartbeat). */
  const allHold = (ref: Node) => waitFor(`every replica at ${ref.id}'s size`, () => [...nodes.values()].every((n) => n.log.size === ref.log.size));

  const segmentBytes = (id: string) =>
    fs
      .readdirSync(path.join(dataDir(id), 'segments'))
      .sort()
      .map((f) => fs.readFileSync(path.join(dataDir(id), 'segments', f)))
      .reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0));

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replica-spec-'));
    pki = await makeTestPki(dir, IDS[0]!, IDS.slice(1));
    for (const id of IDS) keys.set(id, generateKeyPairSync('ed25519'));
    // Bind every server first (port 0), then give each replica the full list.
    const bound: { id: string; server: grpc.Server }[] = [];
    for (const id of IDS) {
      const server = new grpc.Server();
      ports.set(id, await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', serverCredentials(pki.material(id)), (e, p) => (e ? rej(e) : res(p)))));
      bound.push({ id, server });
    }
    for (const from of IDS) for (const to of IDS) if (from !== to) links.set(`${from}>${to}`, await Link.open(() => ports.get(to)!));
    for (const b of bound) {
      const log = await AuditLog.open(dataDir(b.id), { signer: signerFromKey(keys.get(b.id)!.privateKey), checkpointIntervalMs: 60_000 });
      await wire(b.id, log, b.server, await ReplicaStore.open(dataDir(b.id)));
    }
  });

  after(async () => {
    for (const id of [...nodes.keys()]) await kill(id);
    for (const l of links.values()) await l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('elects one leader; an append is acknowledged with the leader-signed checkpoint and lands byte for byte on every replica', async () => {
    const { node: l, receipt: r } = await appendViaLeader([event('a'), event('a'), event('a')]);
    assert.deepEqual([r.firstIndex, r.count, r.checkpoint.tree_size], [0, 3, 3]);
    assert.equal(checkpointProblem(r.checkpoint, new Map([[r.checkpoint.key_id, keys.get(l.id)!.publicKey]])), undefined);
    // Followers append once they learn the commit (next Replicate).
    await waitFor('followers at size 3', () => [...nodes.values()].every((n) => n.log.size === 3));
    await allHold(l);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(l.id));
    // Every replica signs its own checkpoint over the same root: verifiable by any other with that replica's key.
    for (const n of nodes.values()) {
      const c = await n.log.freshCheckpoint();
      assert.equal(c.root_hash, r.checkpoint.root_hash);
      assert.equal(checkpointProblem(c, new Map([[c.key_id, keys.get(n.id)!.publicKey]])), undefined);
    }
  });

  it('a follower refuses appends UNAVAILABLE / AUDIT_NOT_LEADER naming the leader and its address', async () => {
    const l = await leader();
    const f = [...nodes.values()].find((n) => n !== l)!;
    await waitFor('follower knows the leader', () => f.replica.leaderId === l.id);
    await assert.rejects(f.replica.append([event('x')]), (e: unknown) => {
      assert.ok(e instanceof KeyshardError);
      assert.equal(e.code, 'UNAVAILABLE');
      assert.equal(e.reason, 'AUDIT_NOT_LEADER');
      assert.deepEqual(e.metadata, { leader: l.id, leader_address: peerAddress(f.id, l.id) });
      return true;
    });
  });

  it('concurrent appends share rounds; duplicates by id are stored once', async () => {
    const before = (await leader()).log.size;
    const evs = Array.from({ length: 200 }, (_, i) => event(`c${i}`));
    const rs = await Promise.all(evs.map(async (e) => (await appendViaLeader([e])).receipt));
    const { node: l, receipt: again } = await appendViaLeader([evs[0]!, evs[1]!]);
    assert.equal(again.count, 0);
    assert.equal(l.log.size, before + 200);
    // Each stored once: 200 distinct indexes (a resend after a leader change is acknowledged with count 0).
    assert.equal(new Set(rs.filter((r) => r.count === 1).map((r) => r.firstIndex)).size, rs.filter((r) => r.count === 1).length);
    await waitFor('followers caught up', () => [...nodes.values()].every((n) => n.log.size === l.log.size));
    await allHold(l);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(l.id));
  });

  it('kill the leader: a new one is elected, acknowledged events are all there, and the returning replica catches up, proves consistency and matches byte for byte', async () => {
    const { node: killed, receipt: acked } = await appendViaLeader([event('before-kill')]);
    await kill(killed.id);
    const { node: l, receipt: r } = await appendViaLeader([event('after-kill'), event('after-kill')]);
    assert.notEqual(l.id, killed.id);
    assert.equal(r.count, 2);
    assert.ok(r.firstIndex >= acked.firstIndex + 1, 'the acknowledged event survives the leader');
    const tags: string[] = [];
    for await (const rec of l.log.records(acked.firstIndex, acked.firstIndex + 1)) tags.push((rec.event as unknown as { details: { tag: string } }).details.tag);
    assert.deepEqual(tags, ['before-kill']);
    const back = await restart(killed.id);
    assert.equal(back.replica.inSync, false, 'a returning replica serves only once it proved its log against the leader');
    await waitFor('returning replica caught up and in sync', () => back.replica.inSync && back.log.size === l.log.size);
    await allHold(l);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(l.id));
    for (const n of nodes.values()) {
      await n.log.freshCheckpoint();
      const v = verifyLogDir(dataDir(n.id), trusting(n.id));
      assert.equal(v.ok, true, v.reason);
      assert.equal(v.records, l.log.size);
    }
  });

  it('an uncommitted divergent tail on a replica that was down is replaced, never applied', async () => {
    const l = await leader();
    const victim = [...nodes.values()].find((n) => n !== l)!;
    await kill(victim.id);
    // While it is down, plant a pending batch of an earlier term that no leader ever committed
    // (a leader of that term wrote it and died before any follower had it).
    const s = await ReplicaStore.open(dataDir(victim.id));
    const size = fs.readdirSync(path.join(dataDir(victim.id), 'segments')).length > 0 ? (await logSize(victim.id)) : 0;
    const planted = encodeRecords(size, [encodeEntry(event('planted'))]);
    await s.savePending({ term: s.state.currentTerm - 1, start: size, lines: planted });
    await s.close();
    await appendViaLeader([event('while-down'), event('while-down')]);
    const back = await restart(victim.id);
    const { node: now } = await appendViaLeader([event('after-return')]);
    await waitFor('victim caught up', () => back.replica.inSync && back.log.size === now.log.size);
    await allHold(now);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(now.id));
    assert.ok(!segmentBytes(back.id).includes('planted'), 'the planted uncommitted record is in no log');
  });

  it('a partitioned follower neither stops the log nor, healed, deposes the leader (Pre-Vote); it catches up', async () => {
    const { node: l } = await appendViaLeader([event('pre-partition')]);
    const f = [...nodes.values()].find((n) => n !== l)!;
    await waitFor('follower in sync', () => f.replica.inSync && f.log.size === l.log.size);
    const term = l.replica.currentTerm;
    const fTerm = f.replica.currentTerm;
    partition(f.id, true);
    try {
      for (let i = 0; i < 5; i++) await appendViaLeader([event('partitioned')]);
      await new Promise((r) => setTimeout(r, 3500)); // several election timeouts of the cut-off follower
      assert.equal(f.replica.currentTerm, fTerm, 'a cut-off replica does not raise its term: its Pre-Votes fail');
    } finally {
      partition(f.id, false);
    }
    await waitFor('the healed follower caught up', () => f.log.size === l.log.size);
    assert.deepEqual([l.replica.role, l.replica.currentTerm], ['leader', term], 'the leader kept its term through the heal');
    await allHold(l);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(l.id));
  });

  it('a partitioned leader steps down; the majority elects another and goes on; healed, the old leader follows and catches up', async () => {
    const { node: l } = await appendViaLeader([event('pre-leader-partition')]);
    partition(l.id, true);
    try {
      await waitFor('the cut-off leader steps down', () => l.replica.role !== 'leader');
      const { node: next } = await appendViaLeader([event('new-majority'), event('new-majority')]);
      assert.notEqual(next.id, l.id);
      await assert.rejects(l.replica.append([event('minority')]), (e: KeyshardError) => e.reason === 'AUDIT_NOT_LEADER');
    } finally {
      partition(l.id, false);
    }
    const { node: now } = await appendViaLeader([event('healed')]);
    await waitFor('all equal', () => [...nodes.values()].every((n) => n.log.size === now.log.size));
    await allHold(now);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(now.id));
  });

  it('with two of three replicas down nothing is acknowledged, and the lone leader steps down', async () => {
    const l = await leader();
    const others = [...nodes.values()].filter((n) => n !== l);
    for (const o of others) await kill(o.id);
    const before = l.log.size;
    const outcome = await Promise.race([
      l.replica.append([event('no-majority')]).then(() => 'acknowledged', (e: KeyshardError) => e.reason),
      new Promise((r) => setTimeout(() => r('timeout'), 2000)),
    ]);
    assert.notEqual(outcome, 'acknowledged');
    assert.equal(l.log.size, before, 'nothing reaches the audit log without a majority');
    await waitFor('lone leader steps down', () => l.replica.role !== 'leader');
    for (const o of others) await restart(o.id);
    const { node: again } = await appendViaLeader([event('majority-back')]);
    await waitFor('all equal', () => [...nodes.values()].every((n) => n.log.size === again.log.size));
    await allHold(again);
    for (const n of nodes.values()) assert.deepEqual(segmentBytes(n.id), segmentBytes(again.id));
  });

  async function logSize(id: string): Promise<number> {
    return verifyLogDir(dataDir(id), trusting(id)).records ?? 0;
  }
});
