/**
 * The rich error model on the wire (https://google.aip.dev/193): a status carries, in its
 * `grpc-status-details-bin` trailer, a serialized `google.rpc.Status` (same code and message)
 * whose details hold one `google.rpc.ErrorInfo` {reason, domain "keyshard.dev", metadata}.
 * Encoded and decoded here only, with the protos of `proto/google/rpc` (googleapis' field
 * numbers), so every gRPC library's status-details helper reads it. A client that finds no
 * trailer (an older server, or a status grpc-js made itself) takes the code's default reason.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DEFAULT_REASON, REASONS, isReason, type ErrorCode, type Reason } from '@keyshard/errors';
import { LOADER_OPTIONS } from './proto.ts';

export { DEFAULT_REASON, REASONS, isReason, type ErrorCode, type Reason };

/** ErrorInfo.domain of every keyshard error. */
export const ERROR_DOMAIN = 'keyshard.dev';
export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
export const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

interface Codec {
  serialize(value: object): Buffer;
  deserialize(bytes: Buffer): unknown;
}

let codecs: { status: Codec; errorInfo: Codec } | undefined;

function load(): { status: Codec; errorInfo: Codec } {
  if (!codecs) {
    const def = protoLoader.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], LOADER_OPTIONS);
    codecs = { status: def['google.rpc.Status'] as unknown as Codec, errorInfo: def['google.rpc.ErrorInfo'] as unknown as Codec };
  }
  return codecs;
}

/** The serialized google.rpc.Status for a status `code` with `message`, holding one ErrorInfo of `reason`. */
export function encodeStatusDetails(code: grpc.status, message: string, reason: string, metadata: Record<string, string> = {}): Buffer {
  const { status, errorInfo } = load();
  const info = errorInfo.serialize({ reason, domain: ERROR_DOMAIN, metadata });
  return status.serialize({ code, message, details: [{ type_url: ERROR_INFO_TYPE_URL, value: info }] });
}

/** The keyshard ErrorInfo in a serialized google.rpc.Status, if it holds one (other domains' are ignored). */
export function decodeStatusDetails(bytes: Buffer): { code: number; message: string; errorInfo?: ErrorInfo } | undefined {
  try {
    const { status, errorInfo } = load();
    const s = status.deserialize(bytes) as { code: number; message: string; details: { type_url: string; value: Buffer }[] };
    for (const d of s.details) {
      if (d.type_url !== ERROR_INFO_TYPE_URL) continue;
      const info = errorInfo.deserialize(d.value) as ErrorInfo;
      if (info.domain === ERROR_DOMAIN) return { code: s.code, message: s.message, errorInfo: { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } } };
    }
    return { code: s.code, message: s.message };
  } catch {
    return undefined; // not a google.rpc.Status: as if the server had sent none
  }
}

/** The keyshard ErrorInfo of a failed call, from its trailers; undefined when the server sent none. */
export function errorInfoOf(err: { metadata?: grpc.Metadata }): ErrorInfo | undefined {
  const raw = err.metadata?.get?.(STATUS_DETAILS_KEY)[0];
  if (!Buffer.isBuffer(raw)) return undefined;
  return decodeStatusDetails(raw)?.errorInfo;
}

/** The status name of a numeric gRPC code ('FAILED_PRECONDITION'); 'UNKNOWN' for codes grpc-js does not know. */
export function codeName(code: number): string {
  return grpc.status[code] ?? 'UNKNOWN';
}

/**
 * The reason of a failed call: the server's ErrorInfo reason, else its code's default (a status
 * grpc-js or an older server made, with no details; codes keyshard never sends are their own name).
 */
export function reasonOfStatus(err: { code: number; metadata?: grpc.Metadata }): string {
  const info = errorInfoOf(err);
  if (info?.reason) return info.reason;
  const name = codeName(err.code);
  return Object.hasOwn(DEFAULT_REASON, name) ? DEFAULT_REASON[name as ErrorCode] : name;
}
