/**
 * Mutual TLS for every keyshard connection. Servers require and verify a client certificate
 * signed by the cluster CA; the peer certificate's common name is the caller's principal.
 * Clients verify the server's chain to the same CA and that it is the server they expect
 * (server-identity.ts): channelCredentials is the one place client credentials are built.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { pinnedServerCheck, type ExpectedServer } from './server-identity.ts';

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export function readTls(files: TlsFiles): TlsMaterial {
  return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) };
}

export function serverCredentials(tls: TlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(tls.ca, [{ cert_chain: tls.cert, private_key: tls.key }], true);
}

/**
 * Client credentials for `address`: our certificate, the cluster CA, and the server pinned to
 * `expected`; `onCheck` hears each identity check's refusal (or undefined when it passed).
 */
export function channelCredentials(tls: TlsMaterial, expected: ExpectedServer, address: string, onCheck?: (refusal: string | undefined) => void): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, { checkServerIdentity: pinnedServerCheck(expected, address, onCheck) });
}

/** Channel options shared by every client: bounded message size, keepalive for long streams, no channelz (see serverOptions). */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.enable_channelz': 0,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
};

/**
 * Server options shared by every keyshard server. Channelz (grpc-js's per-call debugging
 * registry, on by default) is off: it costs every call a few allocations and a socket lookup
 * and nothing in keyshard reads it; health and metrics cover what operators need.
 *
 * Keepalive policy: clients may PING every second, with or without calls in flight (the SDK
 * pings every 2 s during calls to notice a hung replica). A gRPC server that enforces a policy
 * answers faster pings with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (gRFC A8), which drops
 * every call on the connection; grpc-js 1.14 enforces none, and these options state the policy
 * so that it stays permitted (and in C-core terms) if that changes.
 */
export function serverOptions(maxReceiveBytes = 8 * 1024 * 1024): grpc.ServerOptions {
  return {
    'grpc.max_receive_message_length': maxReceiveBytes,
    'grpc.enable_channelz': 0,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 1_000,
    'grpc.http2.min_time_between_pings_ms': 1_000,
    'grpc.http2.max_ping_strikes': 0,
  };
}

/** The principal a certificate stands for: its subject common name (what peers see). */
export function principalOfCertificate(certPem: Buffer): string {
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(new X509Certificate(certPem).subject)?.[1];
  if (!cn) throw new Error('certificate has no common name');
  return cn;
}
