/** The audit sink's configuration file (JSON, passed with --config). */
import { address, tlsFiles, z } from '@keyshard/config';

const principal = z.string().min(1).max(256);

export const auditSinkConfigSchema = z.strictObject({
  /** host:port to bind; port 0 picks a free port (the bound one is logged). */
  listen: address,
  /** Directory holding audit.log (created 0700 if missing). */
  dataDir: z.string().min(1),
  /** PEM files: cluster CA (verifies client certs), this sink's cert and key. */
  tls: tlsFiles,
  /** Certificate CNs allowed to Append (coordinators, custodians). */
  appenders: z.array(principal),
  /** Certificate CNs allowed to read: GetCheckpoint, Query, Tail. */
  readers: z.array(principal),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export type AuditSinkConfig = z.infer<typeof auditSinkConfigSchema>;
