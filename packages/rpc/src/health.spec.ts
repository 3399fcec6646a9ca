/** The health service, server reflection and the probe, on a real mutual-TLS server in process. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueCert } from '@keyshard/pki';
import { makeClient } from './client.ts';
import { checkHealth, healthDefinition, HealthService, type HealthStatus } from './health.ts';
import { parseProbeArgs } from './health-probe.ts';
import { addReflection, listServices } from './reflection.ts';
import { readTls, serverCredentials, serverOptions, type TlsMaterial } from './tls.ts';

type WatchClient = grpc.Client & { Watch(req: { service: string }): grpc.ClientReadableStream<{ status: HealthStatus }> };

describe('HealthService over mutual TLS', () => {
  let dir: string;
  let tls: TlsMaterial;
  let server: grpc.Server;
  let address: string;
  let health: HealthService;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-health-'));
    tls = readTls(await issueCert(dir, 'server'));
    server = new grpc.Server(serverOptions());
    health = new HealthService({ '': 'NOT_SERVING', 'keyshard.v1.KeyService': 'NOT_SERVING', 'keyshard.v1.CeremonyService': 'SERVING' }).addToServer(server);
    addReflection(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentials(tls), (e, p) => (e ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  after(() => {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('Check answers each service status, and NOT_FOUND for a service it does not know', async () => {
    assert.equal(await checkHealth(address, tls, ''), 'NOT_SERVING');
    assert.equal(await checkHealth(address, tls, 'keyshard.v1.CeremonyService'), 'SERVING');
    await assert.rejects(checkHealth(address, tls, 'no.such.Service'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
  });

  it('track follows a condition: set now, and again each time the returned update runs', async () => {
    let open = false;
    const update = health.track(['', 'keyshard.v1.KeyService'], () => open);
    assert.equal(health.status('keyshard.v1.KeyService'), 'NOT_SERVING');
    open = true;
    update();
    assert.equal(await checkHealth(address, tls, 'keyshard.v1.KeyService'), 'SERVING');
    assert.equal(await checkHealth(address, tls, ''), 'SERVING');
    open = false;
    update();
    assert.equal(await checkHealth(address, tls, ''), 'NOT_SERVING');
  });

  it('refuses a caller without a client certificate at the TLS handshake', async () => {
    const Ctor = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
    const client = new Ctor(address, grpc.credentials.createSsl(tls.ca), { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as grpc.Client & {
      Check(r: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void): void;
    };
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => client.Check({ service: '' }, { deadline: Date.now() + 5_000 }, resolve));
      assert.equal(err?.code, grpc.status.UNAVAILABLE);
    } finally {
      client.close();
    }
  });

  it('Watch sends the current status, then only changes; SERVICE_UNKNOWN keeps the stream open', async () => {
    const Ctor = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
    const client = makeClient<WatchClient>(Ctor, address, tls);
    const seen: HealthStatus[] = [];
    const unknown: HealthStatus[] = [];
    const call = client.Watch({ service: 'keyshard.v1.KeyService' });
    const later = client.Watch({ service: 'later' });
    call.on('data', (r) => seen.push(r.status));
    later.on('data', (r) => unknown.push(r.status));
    call.on('error', () => {});
    later.on('error', () => {});
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(cond(), `seen ${seen.join(',')} / ${unknown.join(',')}`);
    };
    await until(() => seen.length === 1 && unknown.length === 1);
    health.set('keyshard.v1.KeyService', 'NOT_SERVING'); // unchanged: not sent again
    health.set('keyshard.v1.KeyService', 'SERVING');
    health.set('later', 'SERVING');
    await until(() => seen.length === 2 && unknown.length === 2);
    assert.deepEqual(seen, ['NOT_SERVING', 'SERVING']);
    assert.deepEqual(unknown, ['SERVICE_UNKNOWN', 'SERVING']);
    call.cancel();
    later.cancel();
    client.close();
  });

  it('reflection lists keyshard.v1 and grpc.health.v1', async () => {
    const names = await listServices(address, tls);
    for (const s of ['keyshard.v1.KeyService', 'keyshard.v1.CeremonyService', 'grpc.health.v1.Health']) assert.ok(names.includes(s), `${s} in ${names.join(', ')}`);
  });

  it('shutdown tells watchers NOT_SERVING and ends their streams, so a graceful shutdown completes', async () => {
    const Ctor = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
    const client = makeClient<WatchClient>(Ctor, address, tls);
    const call = client.Watch({ service: 'keyshard.v1.CeremonyService' });
    const seen: HealthStatus[] = [];
    call.on('data', (r) => seen.push(r.status));
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('error', () => {});
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    health.shutdown();
    assert.equal((await ended).code, grpc.status.OK);
    assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
    assert.equal(await checkHealth(address, tls, 'keyshard.v1.CeremonyService'), 'NOT_SERVING');
    client.close();
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('tryShutdown waited on an open stream')), 5_000);
      server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  });
});

describe('health-probe arguments', () => {
  it('needs an address and the three TLS files, and knows its flags', () => {
    const ok = parseProbeArgs(['--address', '127.0.0.1:7100', '--ca', 'a', '--cert', 'b', '--key', 'c', '--service', 'keyshard.v1.KeyService']);
    assert.deepEqual(ok, { address: '127.0.0.1:7100', ca: 'a', cert: 'b', key: 'c', service: 'keyshard.v1.KeyService', timeoutMs: 3_000 });
    assert.throws(() => parseProbeArgs(['--address', '127.0.0.1:7100']), /--ca is required/);
    assert.throws(() => parseProbeArgs(['--address', 'nope', '--ca', 'a', '--cert', 'b', '--key', 'c']), /expected host:port/);
    assert.throws(() => parseProbeArgs(['--adress', 'x:1']), /unknown flag --adress/);
    assert.throws(() => parseProbeArgs(['--address']), /usage/);
  });
});
