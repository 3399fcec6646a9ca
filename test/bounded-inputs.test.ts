/**
 * Bounded inputs (issue 17, item 6) against a real cluster.
 *
 * The finding: a 1 MB key id was echoed whole into the error, and that caller's connection
 * stalled ~10 s. Here, walking the loaded proto descriptors (proto-loader's, not the limit
 * checker's own reading, and no hand list): for every method of KeyService, CeremonyService,
 * CustodianService and AuditService whose request is not a stream, and every string leaf of its
 * request — nested messages, repeated elements, map keys and map values — a request with a
 * 1,000,000-character string there goes over ONE connection per server and identity (an identity
 * the method's policy allows) and is refused INVALID_ARGUMENT FIELD_TOO_LONG naming exactly that
 * field within 100 ms (a slower refusal is measured again, best of 3: a pause of the shared
 * machine is not a stall), its message short; afterwards the same connection serves a valid call.
 * (1,000,000 and not 2^20 characters: the custodians take messages of at most 1 MiB.)
 * The SDK cases of the finding are kept first.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { APP, AUDITOR, COORDINATOR, DevCluster, operatorOf } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { errorInfoOf, expectServer, keyshardPackageDefinition, keyshardProto, makeClient, methodPolicy, readTls, type ServiceName } from '@keyshard/rpc';
import { rejectsWith } from './support/grpc.ts';

interface Descriptor {
  name: string;
  field: { name: string; label: string; type: string; typeName: string }[];
  nestedType: Descriptor[];
  options: { mapEntry?: boolean } | null;
}

/** A message type's descriptor as proto-loader loaded it; `scope` resolves names of nested types. */
function descriptorOf(typeName: string, scope?: Descriptor): Descriptor {
  const nested = scope?.nestedType.find((t) => t.name === typeName);
  if (nested) return nested;
  const name = typeName.replace(/^\./, '');
  const def = keyshardPackageDefinition()[name.includes('.') ? name : `keyshard.v1.${name}`] as { type?: Descriptor } | undefined;
  if (!def?.type) throw new Error(`no message type ${typeName}`);
  return def.type;
}

/** One string leaf of a request: the refusal's expected `field` (and `part` for maps), and the request holding `big` there. */
interface Leaf {
  field: string;
  part?: 'key' | 'value';
  build: (big: string) => Record<string, unknown>;
}

/** Every string leaf under a message type (paths as field-limits.ts names them: `a[0].b`, map entries `m[#0]`). */
function leavesOf(typeName: string, scope?: Descriptor, seen: readonly string[] = []): Leaf[] {
  const type = descriptorOf(typeName, scope);
  if (seen.includes(type.name)) return [];
  const out: Leaf[] = [];
  for (const f of type.field) {
    const repeated = f.label === 'LABEL_REPEATED';
    const entry = f.type === 'TYPE_MESSAGE' ? descriptorOf(f.typeName, type) : undefined;
    if (entry?.options?.mapEntry) {
      const [k, v] = entry.field as [Descriptor['field'][0], Descriptor['field'][0]];
      const emptyValue = v.type === 'TYPE_MESSAGE' ? {} : v.type === 'TYPE_STRING' ? '' : 0;
      if (k.type === 'TYPE_STRING') out.push({ field: f.name, part: 'key', build: (big) => ({ [f.name]: { [big]: emptyValue } }) });
      if (v.type === 'TYPE_STRING') out.push({ field: f.name, part: 'value', build: (big) => ({ [f.name]: { k: big } }) });
      if (v.type === 'TYPE_MESSAGE')
        for (const inner of leavesOf(v.typeName, entry, [...seen, type.name]))
          out.push({ ...inner, field: `${f.name}[#0].${inner.field}`, build: (big) => ({ [f.name]: { k: inner.build(big) } }) });
    } else if (f.type === 'TYPE_STRING') {
      out.push(repeated ? { field: `${f.name}[0]`, build: (big) => ({ [f.name]: [big] }) } : { field: f.name, build: (big) => ({ [f.name]: big }) });
    } else if (entry) {
      for (const inner of leavesOf(f.typeName, type, [...seen, type.name]))
        out.push({ ...inner, field: `${f.name}${repeated ? '[0]' : ''}.${inner.field}`, build: (big) => ({ [f.name]: repeated ? [inner.build(big)] : inner.build(big) }) });
    }
  }
  return out;
}

describe('bounded inputs', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let app: KeyshardClient;
  const msg = Buffer.from('pay 100 to alice');
  const huge = 'k'.repeat(1024 * 1024);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-bounds-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    app = cluster.client(APP); // a key user: it makes and uses its key
    await app.createKey('bounded');
    await app.encrypt('bounded', msg); // warm: the connection is up before timing
  });

  after(async () => {
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: [string, () => Promise<unknown>][] = [
    ['Encrypt key', () => app.encrypt(huge, msg)],
    ['GetKey key', () => app.getKey(huge)],
    ['CreateKey name', () => app.createKey(huge)],
    ['Encrypt context value', () => app.encrypt('bounded', msg, { tenant: huge })],
  ];
  for (const [what, call] of cases) {
    it(`${what}: 1 MB refused INVALID_ARGUMENT, short message; the client then serves an Encrypt within 1 s`, async () => {
      const t0 = performance.now();
      const r = await rejectsWith(call(), 'INVALID_ARGUMENT', 'FIELD_TOO_LONG');
      const refusedMs = performance.now() - t0;
      assert.ok(r.message.length < 300, `message of ${r.message.length} characters: ${r.message.slice(0, 300)}`);
      const t1 = performance.now();
      const ok = await app.encrypt('bounded', msg);
      const nextMs = performance.now() - t1;
      assert.ok(ok.ciphertext.length > 0);
      assert.ok(nextMs < 1000, `the next Encrypt took ${Math.round(nextMs)} ms (refusal took ${Math.round(refusedMs)} ms)`);
    });
  }

  it('every string field of every request of KeyService, CeremonyService, CustodianService and AuditService: 1 MB refused FIELD_TOO_LONG within 100 ms, naming the field; the same connection then serves', async () => {
    const big = 'x'.repeat(1_000_000);
    const proto = keyshardProto();
    // One connection per server and identity, each allowed by the methods it is used for.
    const servers: Record<ServiceName, { address: string; cn: string; identityFor: (roles: readonly string[]) => string }> = {
      KeyService: { address: cluster.coordinatorAddress, cn: COORDINATOR, identityFor: () => APP }, // the key's user (the admin may not use keys)
      CeremonyService: { address: cluster.coordinatorAddress, cn: COORDINATOR, identityFor: () => 'admin' },
      BackupService: { address: cluster.coordinatorAddress, cn: COORDINATOR, identityFor: () => 'admin' },
      CustodianService: { address: cluster.custodianAddress('custodian-1'), cn: 'custodian-1', identityFor: (roles) => (roles.includes('ROLE_COORDINATOR') ? COORDINATOR : operatorOf('custodian-1')) },
      AuditService: { address: `127.0.0.1:${cluster.layout.plan.ports.audit}`, cn: 'audit-sink', identityFor: (roles) => (roles.includes('ROLE_AUDITOR') ? AUDITOR : COORDINATOR) }, // AddCosignature: a coordinator's witness
    };
    const connections = new Map<string, grpc.Client>();
    const connection = (address: string, cn: string, principal: string) => {
      const id = `${address} ${principal}`;
      let c = connections.get(id);
      if (!c) {
        c = makeClient(grpc.Client, address, readTls(cluster.layout.certs[principal]!), {}, expectServer(cn, cn));
        connections.set(id, c);
      }
      return c;
    };
    const unary = (client: grpc.Client, def: grpc.MethodDefinition<unknown, unknown>, request: unknown) =>
      new Promise<{ err: grpc.ServiceError | null; ms: number }>((resolve) => {
        const t0 = performance.now();
        client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err) => resolve({ err, ms: performance.now() - t0 }));
      });
    const used = new Set<grpc.Client>();
    const slow: string[] = [];
    let sent = 0;
    try {
      for (const service of ['KeyService', 'CeremonyService', 'CustodianService', 'AuditService'] as const) {
        const definition = proto[service].service as unknown as Record<string, grpc.MethodDefinition<unknown, unknown> & { requestType: { type: Descriptor } }>;
        for (const [method, def] of Object.entries(definition)) {
          const leaves = leavesOf(def.requestType.type.name);
          if (def.requestStream) {
            // Append: checked by the sink against AuditEvent's bounds itself; the others carry no string.
            assert.ok(leaves.length === 0 || (service === 'AuditService' && method === 'Append'), `${service}.${method} streams strings unchecked`);
            continue;
          }
          assert.ok(!def.responseStream || leaves.length === 0, `${service}.${method}: a server stream with strings in its request: add it here`);
          const s = servers[service];
          const client = connection(s.address, s.cn, s.identityFor(methodPolicy(service, method).roles));
          used.add(client);
          for (const leaf of leaves) {
            const where = `${service}.${method} ${leaf.field}${leaf.part ? ` (${leaf.part})` : ''}`;
            const request = leaf.build(big);
            let { err, ms } = await unary(client, def, request);
            // A pause of the shared 2-core machine (GC, other processes) is not the finding's stall,
            // which hit every time: a refusal over 100 ms is measured again, up to 3 times in all,
            // and fails only if every one is slow.
            for (let tries = 1; ms >= 100 && tries < 3; tries++) ({ err, ms } = await unary(client, def, request));
            sent++;
            assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, `${where}: ${err ? `${grpc.status[err.code]} ${String(err.details).slice(0, 200)}` : 'accepted'}`);
            const info = errorInfoOf(err!);
            assert.equal(info?.reason, 'FIELD_TOO_LONG', where);
            assert.equal(info?.metadata.field, leaf.field, where);
            assert.equal(info?.metadata.part, leaf.part, where);
            assert.ok(err!.details.length < 200 && !err!.details.includes('xxxxxxxx'), `${where}: ${err!.details.slice(0, 200)}`);
            if (ms >= 100) slow.push(`${where}: ${Math.round(ms)} ms`);
          }
        }
      }
      assert.ok(sent > 100, `only ${sent} string leaves: the descriptor walk is broken`);
      assert.deepEqual(slow, [], `refusals slower than 100 ms (of ${sent})`);
      // Each connection still serves a valid call, promptly.
      const valid: [ServiceName, string, unknown][] = [
        ['KeyService', 'Encrypt', { key: 'bounded', plaintext: msg, context: {} }],
        ['CeremonyService', 'Status', {}],
        ['CustodianService', 'GetIdentity', {}],
        ['CustodianService', 'ListPending', {}],
        ['AuditService', 'GetCheckpoint', {}],
      ];
      for (const [service, method, request] of valid) {
        const s = servers[service];
        const client = connection(s.address, s.cn, s.identityFor(methodPolicy(service, method).roles));
        assert.ok(used.has(client), `${service}.${method} goes over a connection the refusals used`);
        const def = (proto[service].service as unknown as Record<string, grpc.MethodDefinition<unknown, unknown>>)[method]!;
        const { err, ms } = await unary(client, def, request);
        assert.equal(err, null, `${service}.${method}: ${err?.details}`);
        assert.ok(ms < 1000, `${service}.${method} after the refusals took ${Math.round(ms)} ms`);
      }
    } finally {
      for (const c of connections.values()) c.close();
    }
  });
});
