/**
 * The sink replicas' peer protocol (replica.ts), over the same mutual-TLS gRPC server as
 * AuditService: service `keyshard.internal.AuditReplica`, three unary methods. Internal to the
 * sink (replicas of one release talk to each other), so it is not in proto/keyshard/v1 and no
 * client outside services/audit-sink speaks it.
 *
 * A message is one frame: a 4-byte big-endian length, that many bytes of JSON (the header,
 * checked with zod on receipt), then the raw record lines it carries (record-format.ts lines,
 * byte for byte what the log stores), if any. The peer is authenticated by its certificate CN
 * (a configured replica id); its messages are still validated like any other input.
 *
 *   Vote       candidate -> all     Raft RequestVote (§5.2, §5.4.1), and its Pre-Vote (thesis §9.6)
 *   Replicate  leader -> follower   Raft AppendEntries: the leader's uncommitted batch (or none) + its commit
 *   CatchUp    leader -> follower   committed records a follower lacks, with the leader's signed checkpoint
 */
import * as grpc from '@grpc/grpc-js';
import { z } from '@keyshard/config';

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const term = count;
const id = z.string().min(1).max(256);
const hex32 = z.string().regex(/^[0-9a-f]{64}$/);
const checkpoint = z.strictObject({ tree_size: count, root_hash: hex32, time: z.string().max(64), key_id: z.string().max(64), signature: z.string().max(256) });

/** `preVote`: would you vote for me in `term`? Changes nothing at the voter (Ongaro's thesis §9.6). */
export const voteRequest = z.strictObject({ term, candidate: id, lastTerm: term, size: count, preVote: z.boolean().optional() });
export const voteResponse = z.strictObject({ term, granted: z.boolean() });
/** Records [start, end) are the leader's uncommitted batch (none when end = start); `start` is its commit (log size). */
export const replicateRequest = z.strictObject({ term, leader: id, start: count, prevRoot: hex32, checkpoint, end: count });
export const replicateResponse = z.strictObject({ term, ok: z.boolean(), size: count, end: count });
/** Committed records [start, end); `checkpoint` and `appliedTerm` only when `end` is the leader's commit. */
export const catchUpRequest = z.strictObject({ term, leader: id, start: count, prevRoot: hex32, end: count, endRoot: hex32, appliedTerm: term.optional(), checkpoint: checkpoint.optional() });
export const catchUpResponse = z.strictObject({ term, ok: z.boolean(), size: count });

export type VoteRequest = z.infer<typeof voteRequest>;
export type VoteResponse = z.infer<typeof voteResponse>;
export type ReplicateRequest = z.infer<typeof replicateRequest>;
export type ReplicateResponse = z.infer<typeof replicateResponse>;
export type CatchUpRequest = z.infer<typeof catchUpRequest>;
export type CatchUpResponse = z.infer<typeof catchUpResponse>;

/** A decoded frame: the header and the record bytes after it. */
export interface Frame<H> {
  header: H;
  records: Buffer;
}

const EMPTY = Buffer.alloc(0);

export function encodeFrame<H>(f: Frame<H> | H): Buffer {
  const { header, records } = isFrame(f) ? f : { header: f, records: EMPTY };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([len, json, records]);
}

function isFrame<H>(f: Frame<H> | H): f is Frame<H> {
  return typeof f === 'object' && f !== null && 'header' in f && 'records' in f && Buffer.isBuffer((f as Frame<H>).records);
}

/** Throws (a plain Error: the caller maps it to INVALID_ARGUMENT) on a frame that is not well formed. */
export function decodeFrame<H>(schema: z.ZodType<H>, buf: Buffer): Frame<H> {
  if (buf.length < 4) throw new Error('frame too short');
  const n = buf.readUInt32BE(0);
  if (n > 64 * 1024 || 4 + n > buf.length) throw new Error('frame header length out of range');
  const header = schema.parse(JSON.parse(buf.subarray(4, 4 + n).toString('utf8')));
  return { header, records: buf.subarray(4 + n) };
}

const SERVICE = 'keyshard.internal.AuditReplica';

function method(name: string): grpc.MethodDefinition<Buffer, Buffer> {
  const same = (b: Buffer) => b;
  return {
    path: `/${SERVICE}/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: same,
    requestDeserialize: same,
    responseSerialize: same,
    responseDeserialize: same,
    originalName: name,
  };
}

export const replicaServiceDefinition = {
  Vote: method('Vote'),
  Replicate: method('Replicate'),
  CatchUp: method('CatchUp'),
} satisfies grpc.ServiceDefinition;

export type ReplicaMethod = keyof typeof replicaServiceDefinition;

export const ReplicaClient = grpc.makeGenericClientConstructor(replicaServiceDefinition, 'AuditReplica');
