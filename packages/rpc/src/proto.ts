/**
 * Loads `proto/keyshard/v1` once; every service and client uses these definitions, and the
 * types generated from the same files (`npm run gen:proto`, scripts/gen-proto.mjs) describe
 * the objects they carry: `pb.X` is what a sender may pass (permissive), `pb.X__Output` what a
 * receiver gets (every field present, defaults filled in). Only types are imported from
 * generated/: nothing at run time needs the generated files.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type * as pb from './generated/index.ts';

export type * as pb from './generated/index.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/**
 * The .proto files: the repository's proto/ when this module runs inside the repository (from
 * src/ or dist/ alike: always the files the tree has now), else the copy beside the compiled
 * module (dist/proto: what the packed @keyshard/client carries, with no repository around it).
 */
export const PROTO_ROOT = [path.resolve(HERE, '../../../proto'), path.join(HERE, 'proto')].find((d) => existsSync(path.join(d, 'keyshard/v1/keys.proto'))) ?? path.resolve(HERE, '../../../proto');

/** The keyshard.v1 files every loader of the protos reads (proto-loader here, protobufjs in field-limits.ts). */
export const PROTO_FILES: readonly string[] = ['keys.proto', 'ceremony.proto', 'custodian.proto', 'audit.proto', 'backup.proto'].map((f) => `keyshard/v1/${f}`);

// keepCase: field names stay snake_case, exactly as in the .proto files and in every other
// language's stubs. Enums as their names. 64-bit integers as numbers: every uint64 of
// keyshard.v1 stays below 2^53 (the protos say so field by field, and a caller-set value above
// its bound is refused: a value beyond 2^53 reads as a number that is not a safe integer).
// scripts/gen-proto.mjs generates the types with these same options.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

/** A keyshard.v1 service's client constructor, its `service` definition typed by the generated types. */
export interface ServiceConstructor<Client extends grpc.Client, Definition extends grpc.ServiceDefinition> {
  new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ChannelOptions>): Client;
  service: Definition;
  serviceName: string;
}

/** Each keyshard.v1 service: its generated client, handler and definition types. */
export interface KeyshardServices {
  KeyService: { client: pb.KeyServiceClient; handlers: pb.KeyServiceHandlers; definition: pb.KeyServiceDefinition };
  CeremonyService: { client: pb.CeremonyServiceClient; handlers: pb.CeremonyServiceHandlers; definition: pb.CeremonyServiceDefinition };
  CustodianService: { client: pb.CustodianServiceClient; handlers: pb.CustodianServiceHandlers; definition: pb.CustodianServiceDefinition };
  AuditService: { client: pb.AuditServiceClient; handlers: pb.AuditServiceHandlers; definition: pb.AuditServiceDefinition };
  BackupService: { client: pb.BackupServiceClient; handlers: pb.BackupServiceHandlers; definition: pb.BackupServiceDefinition };
}

export type ServiceName = keyof KeyshardServices;

export const SERVICE_NAMES: readonly ServiceName[] = ['KeyService', 'CeremonyService', 'CustodianService', 'AuditService', 'BackupService'];

export type KeyshardProto = { [S in ServiceName]: ServiceConstructor<KeyshardServices[S]['client'], KeyshardServices[S]['definition']> };

let cached: KeyshardProto | undefined;
let cachedDefinition: protoLoader.PackageDefinition | undefined;

/** The loaded package definition of `keyshard.v1` (what server reflection describes, and method-policy.ts reads). */
export function keyshardPackageDefinition(): protoLoader.PackageDefinition {
  return (cachedDefinition ??= protoLoader.loadSync([...PROTO_FILES], LOADER_OPTIONS));
}

export function keyshardProto(): KeyshardProto {
  if (!cached) {
    const def = keyshardPackageDefinition();
    const root = grpc.loadPackageDefinition(def) as unknown as { keyshard: { v1: KeyshardProto } };
    cached = root.keyshard.v1;
  }
  return cached;
}
