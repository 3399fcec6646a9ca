/** Loads `proto/keyshard/v1` once; every service and client uses these definitions. */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/**
 * The .proto files: a copy beside the compiled module when there is one (dist/proto, what the
 * packed @keyshard/client carries, with no repository around it), else the repository's proto/.
 */
export const PROTO_ROOT = [path.join(HERE, 'proto'), path.resolve(HERE, '../../../proto')].find((d) => existsSync(path.join(d, 'keyshard/v1/keys.proto'))) ?? path.resolve(HERE, '../../../proto');

const FILES = ['keys.proto', 'ceremony.proto', 'custodian.proto', 'audit.proto', 'backup.proto'].map((f) => `keyshard/v1/${f}`);

// keepCase: field names stay snake_case, exactly as in the .proto files and in every other
// language's stubs. Enums as strings, 64-bit integers as strings (no precision loss).
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

type ServiceCtor = grpc.ServiceClientConstructor;
export interface KeyshardProto {
  KeyService: ServiceCtor;
  CeremonyService: ServiceCtor;
  CustodianService: ServiceCtor;
  AuditService: ServiceCtor;
  BackupService: ServiceCtor;
}

let cached: KeyshardProto | undefined;
let cachedDefinition: protoLoader.PackageDefinition | undefined;

/** The loaded package definition of `keyshard.v1` (what server reflection describes). */
export function keyshardPackageDefinition(): protoLoader.PackageDefinition {
  return (cachedDefinition ??= protoLoader.loadSync(FILES, LOADER_OPTIONS));
}

export function keyshardProto(): KeyshardProto {
  if (!cached) {
    const def = keyshardPackageDefinition();
    const root = grpc.loadPackageDefinition(def) as unknown as { keyshard: { v1: KeyshardProto } };
    cached = root.keyshard.v1;
  }
  return cached;
}
