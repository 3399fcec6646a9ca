/** Coordinator configuration, validated once at start-up. */
import { z, address, tlsFiles } from '@keyshard/config';
import { metricsConfig } from '@keyshard/metrics';
import { auditSinkPinFields } from '@keyshard/audit-client';

export const coordinatorConfig = z.object({
  /** Names the etcd namespace `/keyshard/<clusterName>/`. */
  clusterName: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and dashes'),
  coordinatorId: z.string().regex(/^[\w.-]{1,64}$/),
  listen: address,
  /**
   * The address clients reach this replica at, as registered in etcd and shown by `keyshard
   * status` (default: `listen`). Set it when `listen` is a wildcard (0.0.0.0:7000) or behind NAT.
   */
  advertiseAddress: address.optional(),
  tls: tlsFiles,
  /**
   * This coordinator's long-term transport private key (PKCS#8 PEM, mode 0600), created (RSA-3072)
   * on first start if absent. Its public key must be enrolled by each custodian token's security
   * officer (`keyshard custodian enroll`) before the custodians release shares to this coordinator.
   */
  transportKeyFile: z.string().min(1),
  /**
   * This replica's witness key (Ed25519, PKCS#8 PEM, mode 0600, outside any data dir), created on
   * first start if absent: it cosigns the audit sink's checkpoints as the witness
   * `keyshard.dev/witness/<certificate CN>` (services/coordinator/src/audit-witness/). Its public
   * half (a vkey, shown by `keyshard status`) goes into auditors' trust files.
   */
  witnessKeyFile: z.string().min(1),
  /** How often the witness asks the sink for a proven checkpoint and cosigns it if it grew. */
  witnessIntervalMs: z.number().int().min(100).default(2_000),
  /**
   * Seconds after which the witness cosigns the same tree again with a fresh time when the log
   * did not grow (C2SP witnesses refresh their timestamps): auditors' `--max-age` (default 1h) is
   * measured on cosignature times, so this must stay well below it.
   */
  witnessRefreshSeconds: z.number().int().min(1).max(1_800).default(60),
  etcd: z
    .object({
      endpoints: z.array(z.string().url()).min(1),
      tls: tlsFiles.optional(),
      /**
       * The name etcd's certificate must carry (subjectAltName), checked instead of the endpoint's
       * host: set it when the endpoints are IP addresses (dev: `etcd`). Without it a loopback IP
       * endpoint is checked against `localhost`, which every dev certificate carries.
       */
      serverName: z.string().regex(/^[a-z0-9.-]{1,253}$/).optional(),
      callTimeoutMs: z.number().int().positive().default(5_000),
      /**
       * Health (etcd-reachability.ts): a read of etcd this often; once none has succeeded for
       * `unreachableAfterMs`, "" and KeyService are NOT_SERVING until one does.
       */
      probeIntervalMs: z.number().int().positive().default(1_000),
      unreachableAfterMs: z.number().int().positive().default(4_000),
    })
    .refine((e) => e.unreachableAfterMs >= e.probeIntervalMs, 'etcd.unreachableAfterMs must be at least etcd.probeIntervalMs'),
  audit: z.object({
    address,
    ...auditSinkPinFields,
    timeoutMs: z.number().int().positive().default(2_000),
    /**
     * Local durable spool for crypto-operation events: they are answered once fsync'ed here
     * and shipped to the sink in order. Without it, every call waits for the sink itself.
     */
    spoolDir: z.string().min(1).optional(),
    spoolMaxEvents: z.number().int().positive().default(100_000),
  }),
  custodians: z
    .array(z.object({ id: z.string().regex(/^[\w.-]{1,64}$/), address }))
    .min(2)
    .refine((cs) => new Set(cs.map((c) => c.id)).size === cs.length, 'custodian ids must be unique'),
  /** Principals (certificate common names) with the admin role: init, unseal, seal. */
  admins: z.array(z.string().min(1)).min(1),
  /**
   * Principals allowed to call KeyService at all (admins always are). Per-key policy narrows
   * this further in the key-lifecycle issue. Component identities should never be listed.
   */
  keyUsers: z.array(z.string().min(1)).default([]),
  /** RSA-OAEP hash for share delivery: SoftHSM supports only sha1. */
  oaepHash: z.enum(['sha1', 'sha256']).default('sha1'),
  keys: z
    .object({
      /** Production floor 1 hour (brief); tests may configure seconds. */
      minRotationPeriodSeconds: z.number().int().positive().default(3600),
      /** Production floor 7 days; tests may configure seconds. */
      minDestructionWaitSeconds: z.number().int().positive().default(7 * 24 * 3600),
      defaultDestructionWaitSeconds: z.number().int().positive().default(30 * 24 * 3600),
      /** Per-version encryption bound (services/coordinator/src/keys/version-usage.ts). */
      usage: z
        .object({
          /** NIST SP 800-38D §8.3: at most 2^32 messages per key with random 96-bit nonces. */
          limit: z.number().int().positive().max(2 ** 32).default(2 ** 32),
          /** A version is rotated automatically at this count: well before the limit. */
          rotateAt: z.number().int().positive().default(2 ** 30),
          reserveBlock: z.number().int().positive().default(2 ** 16),
          lastUseFlushSeconds: z.number().positive().default(5),
        })
        .refine((u) => u.rotateAt < u.limit, 'usage.rotateAt must be below usage.limit')
        .prefault({}), // zod 4: an absent object is parsed as {}, so the field defaults apply
    })
    .prefault({}),
  maxPlaintextBytes: z.number().int().positive().max(4 * 1024 * 1024).default(64 * 1024),
  /**
   * KeyService calls this replica runs at once; more are refused at once with
   * RESOURCE_EXHAUSTED (shed, not queued), so admitted calls keep their latency under overload.
   * Ceremony, backup and health calls are not counted: an admin can still seal an overloaded replica.
   */
  maxConcurrentCalls: z.number().int().positive().default(1024),
  /**
   * Largest gRPC message this replica accepts, each message of a stream included; a larger
   * one is refused with RESOURCE_EXHAUSTED. Keep it above maxPlaintextBytes plus the request's
   * framing (ciphertext overhead, encryption context).
   */
  maxMessageBytes: z.number().int().min(64 * 1024).max(64 * 1024 * 1024).default(8 * 1024 * 1024),
  /** Prometheus endpoint (GET /metrics, loopback only); off when absent. The bound port is logged ("metrics listening"). */
  metrics: metricsConfig.optional(),
  /**
   * Scheduled backups, run by the leader (services/coordinator/src/backup/backup.ts): every
   * `intervalSeconds` a backup file is written to `dir` on the leader's host and all but the
   * newest `retain` are deleted. Off when `dir` is absent.
   */
  backups: z
    .object({
      dir: z.string().min(1).optional(),
      intervalSeconds: z.number().positive().default(24 * 3600),
      retain: z.number().int().min(1).default(7),
    })
    .prefault({}),
  ceremonyTtlSeconds: z.number().int().min(10).max(7 * 24 * 3600).default(900),
  /** How often a ceremony asks custodians for their releases while it is open. */
  custodianPollMs: z.number().int().min(10).default(50),
  registrationTtlSeconds: z.number().int().min(2).default(10),
  /** How often a sealed replica checks whether peers are unsealed, to ask to join them. */
  joinCheckSeconds: z.number().positive().default(2),
  /** etcd election TTL of the leader that runs background jobs. */
  leaderTtlSeconds: z.number().int().min(1).default(5),
  /** How often the leader looks for keys due for scheduled rotation. */
  rotationSweepSeconds: z.number().positive().default(30),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  /** Crash tests only: SIGKILL the process at a named step of a ceremony (e.g. reshare:delivered). */
  faultInjection: z.object({ crashAt: z.string().min(1).optional() }).default({}),
});

export type CoordinatorConfig = z.infer<typeof coordinatorConfig>;
