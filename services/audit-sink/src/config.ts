/** The audit sink's configuration file (JSON, passed with --config). */
import { address, tlsFiles, z } from '@keyshard/config';

const principal = z.string().min(1).max(256);

export const auditSinkConfigSchema = z.strictObject({
  /** host:port to bind; port 0 picks a free port (the bound one is logged). */
  listen: address,
  /** Directory holding the log: segments/, audit.log (-> active segment), checkpoints.log, keys/ (created 0700 if missing). */
  dataDir: z.string().min(1),
  /** PEM files: cluster CA (verifies client certs), this sink's cert and key. */
  tls: tlsFiles,
  /** Certificate CNs allowed to Append (coordinators, custodians). */
  appenders: z.array(principal),
  /** Certificate CNs allowed to read: GetCheckpoint, proofs, Query, Tail, HashValue. */
  readers: z.array(principal),
  /** Ed25519 private key (PKCS#8 PEM) that signs checkpoints; generated if missing. Keep it outside dataDir. */
  checkpointKeyFile: z.string().min(1),
  /** 32-byte HMAC key (hex) for sensitive fields; generated if missing. Keep it outside dataDir. */
  hmacKeyFile: z.string().min(1),
  /** Values stored as HMAC-SHA256 besides every `sensitive.*` detail. */
  sensitive: z
    .strictObject({
      fields: z.array(z.enum(['principal', 'key_id', 'ceremony_id', 'code', 'request_id'])).optional(),
      details: z.array(z.string().min(1).max(256)).optional(),
    })
    .optional(),
  /** A new segment file is started once the active one reaches this size (default 64 MiB). */
  segmentBytes: z.number().int().min(4096).optional(),
  /** How often a checkpoint is written to checkpoints.log when the log grew (default 10 s). */
  checkpointIntervalMs: z.number().int().min(100).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export type AuditSinkConfig = z.infer<typeof auditSinkConfigSchema>;
