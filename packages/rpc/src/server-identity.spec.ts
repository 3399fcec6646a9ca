/**
 * Pinned peers on real mutual-TLS connections in process, one CA, certificates of every profile
 * (@keyshard/pki): a client reaches the server it expects, and refuses, UNAVAILABLE with a
 * message naming the expected and the presented identity, any other certificate of the CA —
 * another component's, or a principal's client-only one. Before pinning, every one of these
 * connections succeeded (the CA and the DNS:localhost name were all that was checked).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { issueCert } from '@keyshard/pki';
import { isServiceError } from './client.ts';
import { checkHealth, HealthService } from './health.ts';
import { ANY_CLUSTER_SERVER, COORDINATOR_ID_PATTERN, expectCoordinator, expectServer, serverIdentityProblem, type ExpectedServer } from './server-identity.ts';
import { readTls, serverCredentials, type TlsMaterial } from './tls.ts';

describe('pinned server identity (real TLS)', () => {
  let dir: string;
  const tls: Record<string, TlsMaterial> = {};
  const servers: grpc.Server[] = [];

  const serve = async (cn: string): Promise<string> => {
    const server = new grpc.Server();
    new HealthService({ '': 'SERVING' }).addToServer(server);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', serverCredentials(tls[cn]!), (e, p) => (e ? rej(e) : res(p))));
    servers.push(server);
    return `127.0.0.1:${port}`;
  };
  const check = (address: string, as: string, expected: ExpectedServer) => checkHealth(address, tls[as]!, '', 3_000, expected);
  const refusal = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
    } catch (e) {
      assert.ok(isServiceError(e), `a gRPC error, got ${String(e)}`);
      assert.equal(e.code, grpc.status.UNAVAILABLE);
      return e.details;
    }
    assert.fail('the connection was not refused');
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-pins-'));
    const profiles = { 'audit-sink': 'component', 'custodian-1': 'component', 'coordinator-1': 'component', etcd: 'server', app: 'client', admin: 'client' } as const;
    for (const [cn, profile] of Object.entries(profiles)) tls[cn] = readTls(await issueCert(dir, cn, cn, profile));
  });

  after(() => {
    for (const s of servers) s.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reaches the server it expects', async () => {
    assert.equal(await check(await serve('audit-sink'), 'coordinator-1', expectServer('the audit sink', 'audit-sink')), 'SERVING');
    assert.equal(await check(await serve('coordinator-1'), 'app', expectCoordinator()), 'SERVING');
    assert.equal(await check(await serve('coordinator-1'), 'app', expectCoordinator(['coordinator-2', 'coordinator-1'])), 'SERVING');
  });

  it('refuses another component certificate of the same CA, naming expected and presented CN', async () => {
    const custodian = await serve('custodian-1');
    const details = await refusal(check(custodian, 'coordinator-1', expectServer('the audit sink', 'audit-sink')));
    assert.match(details, /server identity check failed at 127\.0\.0\.1:\d+: expected the audit sink \(CN "audit-sink", extendedKeyUsage serverAuth\); the server presented CN "custodian-1"/);
    // A coordinator posing as a custodian, a custodian as a coordinator.
    assert.match(await refusal(check(await serve('coordinator-1'), 'coordinator-1', expectServer('custodian custodian-2', 'custodian-2'))), /presented CN "coordinator-1"/);
    assert.match(await refusal(check(custodian, 'app', expectCoordinator())), /expected a coordinator replica \(CN matching .*\); the server presented CN "custodian-1"/);
  });

  it('refuses a client-only certificate as a server, for every expectation (EKU, then identity)', async () => {
    // OpenSSL refuses a server certificate whose EKU lacks serverAuth during chain verification
    // ("unsuitable certificate purpose"), before node runs checkServerIdentity; ours refuses it
    // too (and one without any EKU extension) and names the CN (serverIdentityProblem below).
    const fake = await serve('app');
    for (const expected of [expectServer('the audit sink', 'audit-sink'), expectServer('the app?', 'app'), expectCoordinator(), ANY_CLUSTER_SERVER]) {
      const details = await refusal(check(fake, 'coordinator-1', expected));
      assert.match(details, /unsuitable certificate purpose|not for serverAuth/, details);
    }
  });

  it('a server refuses a client whose certificate is not for clientAuth', async () => {
    const sink = await serve('audit-sink');
    // etcd's certificate is server-only: it cannot be used to call anyone.
    const e = await check(sink, 'etcd', ANY_CLUSTER_SERVER).then(
      () => undefined,
      (err: grpc.ServiceError) => err,
    );
    assert.ok(e && isServiceError(e), 'the call was refused');
    assert.equal(e.code, grpc.status.UNAVAILABLE);
  });
});

describe('serverIdentityProblem', () => {
  const cert = (cn: unknown, eku?: string[]) => ({ subject: { CN: cn }, ext_key_usage: eku }) as never;
  const SERVER = ['1.3.6.1.5.5.7.3.1'];

  it('needs serverAuth in the extendedKeyUsage, even with no EKU extension at all', () => {
    assert.match(serverIdentityProblem(cert('audit-sink'), expectServer('the audit sink', 'audit-sink'))!, /not for serverAuth/);
    assert.match(serverIdentityProblem(cert('audit-sink', ['1.3.6.1.5.5.7.3.2']), ANY_CLUSTER_SERVER)!, /not for serverAuth/);
    assert.equal(serverIdentityProblem(cert('audit-sink', SERVER), expectServer('the audit sink', 'audit-sink')), undefined);
  });

  it('needs exactly one CN that is expected', () => {
    assert.match(serverIdentityProblem(cert(['audit-sink', 'x'], SERVER), expectServer('the audit sink', 'audit-sink'))!, /presented CN \(none\)/);
    assert.match(serverIdentityProblem(cert(undefined, SERVER), ANY_CLUSTER_SERVER)!, /presented CN \(none\)/);
    assert.match(serverIdentityProblem(cert('x'.repeat(500), SERVER), expectServer('s', 'y'))!, /…"$/, 'a long CN is cut');
  });

  it('the coordinator pattern takes dev and k8s replica names and no principal or other component', () => {
    for (const ok of ['coordinator-1', 'coordinator-12', 'keyshard-coordinator-0']) assert.ok(COORDINATOR_ID_PATTERN.test(ok), ok);
    for (const no of ['admin', 'app', 'auditor', 'audit-sink', 'custodian-1', 'custodian-1-operator', 'coordinator-1-operator', 'coordinator', 'etcd', 'coordinator-1.evil'])
      assert.ok(!COORDINATOR_ID_PATTERN.test(no), no);
  });

  it('expectServer refuses an empty expectation', () => {
    assert.throws(() => expectServer('nobody'), /at least one/);
    assert.throws(() => expectServer('nobody', ''), /at least one/);
  });
});

describe('every link in services and packages names the server it expects', () => {
  // makeClient's default (ANY_CLUSTER_SERVER) is for probes and tests only: a production
  // makeClient call must pass the expected server as its fifth argument.
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
  const sources = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) => {
      const p = path.join(d, e.name);
      if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'dist' ? [] : sources(p); // dist: compiled output
      return /\.ts$/.test(e.name) && !/\.spec\.ts$/.test(e.name) ? [p] : [];
    });

  it('no makeClient call without an expected server', () => {
    const offenders: string[] = [];
    for (const top of ['packages', 'services']) {
      for (const file of sources(path.join(root, top))) {
        const text = readFileSync(file, 'utf8');
        for (const m of text.matchAll(/makeClient(?:<[^>]*>)?\(/g)) {
          if (text.slice(m.index - 16, m.index).includes('function ')) continue; // the definition
          // Arguments up to the matching parenthesis, counted at the top level.
          let depth = 1;
          let args = 1;
          let i = m.index + m[0].length;
          for (; i < text.length && depth > 0; i++) {
            const c = text[i];
            if ('([{'.includes(c!)) depth++;
            else if (')]}'.includes(c!)) depth--;
            else if (c === ',' && depth === 1) args++;
          }
          if (args < 5) offenders.push(`${path.relative(root, file)}:${text.slice(0, m.index).split('\n').length}`);
        }
      }
    }
    assert.deepEqual(offenders, []);
  });
});
