/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), so that grpcurl, Postman or any
 * reflection client can list and call keyshard's services without a copy of `proto/`.
 * It describes only the public API schema (the same `.proto` files clients are given), so,
 * like health, it needs a cluster-CA certificate (the TLS handshake) but no particular role.
 * Spec: https://github.com/grpc/grpc/blob/master/doc/server-reflection.md
 */
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { makeClient } from './client.ts';
import { ANY_CLUSTER_SERVER, type ExpectedServer } from './server-identity.ts';
import { healthProtoPath } from './health.ts';
import { keyshardPackageDefinition } from './proto.ts';
import type { TlsMaterial } from './tls.ts';

/** Adds reflection over `keyshard.v1` and grpc.health.v1 (both are served next to it). */
export function addReflection(server: grpc.Server): void {
  const health = protoLoader.loadSync(healthProtoPath);
  new ReflectionService({ ...keyshardPackageDefinition(), ...health }).addToServer(server);
}

const REFLECTION_PROTO = createRequire(import.meta.url).resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');

type ReflectionResponse = {
  list_services_response?: { service: { name: string }[] };
  error_response?: { error_code: number; error_message: string };
};

/** Asks a server, over grpc.reflection.v1, for the fully qualified names of the services it describes. */
export async function listServices(address: string, tls: TlsMaterial, timeoutMs = 5_000, server: ExpectedServer = ANY_CLUSTER_SERVER): Promise<string[]> {
  const def = protoLoader.loadSync(REFLECTION_PROTO, { keepCase: true, defaults: true, oneofs: true });
  const Ctor = grpc.makeGenericClientConstructor(def['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition, 'ServerReflection');
  const client = makeClient<grpc.Client & { ServerReflectionInfo(opts: grpc.CallOptions): grpc.ClientDuplexStream<unknown, ReflectionResponse> }>(Ctor, address, tls, {}, server);
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo({ deadline: Date.now() + timeoutMs });
      call.on('data', (res: ReflectionResponse) => {
        if (res.error_response) reject(new Error(`reflection error ${res.error_response.error_code}: ${res.error_response.error_message}`));
        else resolve((res.list_services_response?.service ?? []).map((s) => s.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
  } finally {
    client.close();
  }
}
