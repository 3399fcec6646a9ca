/**
 * The keyshard.v1 messages as the SDK hands them out: the types generated from the protos
 * (`npm run gen:proto`, @keyshard/rpc `pb`), as grpc-js decodes them — field names as in the
 * protos (snake_case), every field present (defaults filled in, an absent message null), enums
 * as their names, 64-bit integers as numbers (every keyshard.v1 uint64 stays below 2^53).
 * Shared by the key and ceremony client (index.ts) and the backup client (backup.ts).
 * What the SDK's methods take is camelCase options; what they return is these messages.
 */
import type { pb } from '@keyshard/rpc';

export type Context = Record<string, string>;

/** keyshard.v1.Key. `versions[].encryptions` counts the encryptions reserved for a version; `last_used_at` is empty if never used. */
export type Key = pb.Key__Output;
/** KEY_STATE_ENABLED | KEY_STATE_DISABLED | KEY_STATE_PENDING_DESTRUCTION | KEY_STATE_DESTROYED (UNSPECIFIED: never sent). */
export type KeyState = pb.KeyState__Output;
export type KeyVersion = pb.KeyVersion__Output;

export type Ceremony = pb.Ceremony__Output;
/** CEREMONY_STATE_OPEN | COMPLETED | FAILED | EXPIRED | CANCELLED. */
export type CeremonyState = pb.CeremonyState__Output;

/** A custodian's share wrapped (RSA-OAEP) to an offline recovery key, by an approved export-share ceremony. */
export type ShareExport = pb.ShareExport__Output;

/**
 * keyshard.v1.StatusResponse: `leader_id` is empty if no replica is elected; `etcd` and
 * `audit_sink` are null from an older coordinator; `audit_sink.tree_size` is the records in its log.
 * `audit_replicas` lists every audit sink replica (one sink: that sink; empty from an older
 * coordinator), `audit_sink` being the one this coordinator sends to.
 */
export type Status = pb.StatusResponse__Output;

export type InitResult = pb.InitResponse__Output;

export type BatchError = pb.BatchItemError__Output;

export type DataKey = pb.GenerateDataKeyResponse__Output;

export type Alias = pb.Alias__Output;

/** What a custodian operator's calls return (CustodianOperatorClient). */
export type CustodianIdentity = pb.CustodianIdentity__Output;
export type Decision = pb.DecisionResponse__Output;
export type TrustedKey = pb.TrustedKey__Output;

/** BackupService (backup.ts). */
export type BackupSummary = pb.BackupSummary__Output;
/** `phase`: ceremony | send | writing | done. */
export type RestoreProgress = pb.RestoreProgress__Output;
export type BackupChunk = pb.BackupChunk__Output;
