/**
 * Micro-benchmarks of the per-call work the coordinator does on top of a bare gRPC echo, to
 * attribute the gap measured by test/bench/encrypt.ts. Single process, no cluster:
 *
 *   node --conditions=keyshard-source --import tsx test/bench/micro.ts
 *
 * Each line: mean µs per operation over a timed loop (after a warm-up loop).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { issueCert } from '@keyshard/pki';
import { encryptWithVersion, validateContext } from '@keyshard/crypto';
import { readTls } from '@keyshard/rpc';

function bench(name: string, fn: () => unknown, ms = 1000): number {
  const warm = performance.now() + 200;
  while (performance.now() < warm) fn();
  let n = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
  }
  const us = ((performance.now() - t0) * 1000) / n;
  console.log(`${name.padEnd(58)} ${us.toFixed(2).padStart(8)} µs/op`);
  return us;
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'keyshard-micro-'));
try {
  const pki = path.join(dir, 'pki');
  const server = readTls(await issueCert(pki, 'coordinator-1'));
  const client = readTls(await issueCert(pki, 'admin'));

  // A real mutually authenticated TLS connection, as grpc-js has under each HTTP/2 session.
  const peer = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const srv = tls.createServer({ ca: server.ca, cert: server.cert, key: server.key, requestCert: true, rejectUnauthorized: true }, (s) => resolve(s));
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      const c = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: client.ca, cert: client.cert, key: client.key });
      c.on('error', reject);
    });
    srv.unref();
  });

  console.log('per-call work in the coordinator (node', process.version, ')');
  bench("socket.getPeerCertificate() (grpc-js getAuthContext)", () => peer.getPeerCertificate());
  bench('socket.getPeerCertificate().subject.CN', () => peer.getPeerCertificate().subject.CN);
  bench('socket.getPeerX509Certificate().subject', () => peer.getPeerX509Certificate()?.subject);
  const cache = new WeakMap<tls.TLSSocket, string>();
  bench('WeakMap<TLSSocket, principal> lookup (cached CN)', () => {
    let cn = cache.get(peer);
    if (cn === undefined) cache.set(peer, (cn = String(peer.getPeerCertificate().subject.CN)));
    return cn;
  });
  bench('randomBytes(12) (GCM nonce)', () => randomBytes(12));
  bench('randomUUID() (audit event id)', () => randomUUID());
  bench('new Date().toISOString() (audit event time)', () => new Date().toISOString());
  const material = randomBytes(32);
  const plaintext = randomBytes(1024);
  bench('validateContext({}) + encryptWithVersion(1 KiB) (AES-256-GCM)', () => {
    validateContext({});
    return encryptWithVersion(material, { keyId: `k_${'A'.repeat(22)}`, keyVersion: 1 }, plaintext, {});
  });
  peer.destroy();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
