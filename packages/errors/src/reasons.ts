/**
 * The reasons keyshard gives for refusing a call: one UPPER_SNAKE word per refusal a caller may
 * act on, sent as `google.rpc.ErrorInfo.reason` (domain "keyshard.dev") beside the gRPC code.
 * The code says what kind of failure it is; the reason says which one, so clients branch on
 * the reason and never on message text. A reason, once published, keeps its meaning; new ones
 * may be added (clients treat an unknown reason as its code's default). The meanings below are
 * the documentation (the README's error table is made from them).
 */
export const REASONS = {
  // Defaults: a refusal that names no more specific reason gets its code's (DEFAULT_REASON).
  INVALID_ARGUMENT: 'a request field is missing, malformed or out of range',
  NOT_FOUND: 'the named thing (share export, trusted key, token object) does not exist',
  ALREADY_EXISTS: 'a key, alias or other named thing of that name exists already',
  FAILED_PRECONDITION: 'the system is not in a state that allows the call',
  NOT_AUTHORIZED: 'the caller is authenticated but may not make this call (role, key policy or custodian rule)',
  UNAUTHENTICATED: 'the caller presented no valid client certificate',
  RESOURCE_EXHAUSTED: 'a message or request is larger than the service accepts',
  UNAVAILABLE: 'the service or a component it needs cannot answer now; an idempotent call may be retried',
  DEADLINE_EXCEEDED: "the call's deadline passed before it finished",
  UNIMPLEMENTED: 'this version of the service does not implement the method',
  INTERNAL: 'the service failed unexpectedly; its log has the details (the caller gets none)',
  FIELD_TOO_LONG: "a string field of the request is longer than its documented maximum (the protos' (keyshard.v1.field) limits; metadata: field, max_length)",
  TOO_MANY_ENTRIES: "a repeated or map field of the request has more entries than its documented maximum (metadata: field, max_count)",

  // The cluster and its seal
  SEALED: 'this replica is sealed: a custodian quorum must unseal it (keyshard unseal) before keys can be used',
  UNINITIALIZED: 'the cluster has no state (never initialised, destroyed, or not yet restored): run keyshard init or restore a backup',
  ALREADY_INITIALIZED: 'the cluster is initialised already (init and restore need an empty cluster)',
  ALREADY_UNSEALED: 'this replica is unsealed already: there is nothing to unseal',
  NOT_LEADER: 'this replica lost the leadership while writing; the write was fenced off',
  INTEGRITY_FAILURE: 'a stored record failed its integrity check (altered outside keyshard?) and was not used',
  WRONG_CLUSTER: 'the ceremony, backup or share belongs to another cluster (or another root key of it)',

  // Keys
  KEY_NOT_FOUND: 'no key has that id, name or alias',
  KEY_VERSION_NOT_FOUND: 'the key has no such version',
  KEY_DISABLED: 'the key is disabled: enable it to use it',
  KEY_PENDING_DESTRUCTION: 'the key is scheduled for destruction: cancel the destruction to use it',
  KEY_DESTROYED: 'the key is destroyed; what it encrypted cannot be decrypted',
  KEY_VERSION_RETIRED: "the ciphertext's key version is below the key's minimum decryption version",
  WRONG_KEY_STATE: "the key's lifecycle state does not allow that change (e.g. cancelling a destruction that is not scheduled)",
  WAITING_PERIOD: "the key's destruction waiting period has not ended",
  WRONG_KEY_USAGE: 'the key is of a type that does not do this (e.g. encrypting with a signing key)',
  KEY_POLICY_DENIED: "the key's policy does not name the caller for that operation (cluster admins administer every key but use only those whose policy names them)",
  SEPARATION_OF_DUTIES: 'the change would let its caller use a key it could not use before (itself in a use grant, an alias onto a key it uses): another principal must make it',

  // Ciphertexts
  INVALID_CIPHERTEXT: 'the ciphertext is not one keyshard made (truncated, unknown format or key id)',
  WRONG_CONTEXT: 'the ciphertext does not authenticate under its key and the given encryption context (wrong context, or modified data)',
  WRONG_KEY: 'the ciphertext was made with another key than the one the request names',

  // Ceremonies, custodians, backups
  CEREMONY_NOT_FOUND: 'no ceremony has that id',
  CEREMONY_IN_PROGRESS: 'another ceremony (or restore) of that kind is running; only one runs at a time',
  CEREMONY_EXPIRED: 'the ceremony expired before a quorum approved it',
  CEREMONY_CLOSED: 'the ceremony has ended already (completed, denied, cancelled or failed)',
  CANCELLED: 'the operation was cancelled by the client or an operator',
  QUORUM_NOT_MET: 'fewer valid approvals or shares than the threshold',
  NOT_ENROLLED: "the coordinator's transport key or the recovery key is not enrolled in the custodian's token",
  INVALID_BACKUP: 'the file is not a valid keyshard backup, or it was modified',

  // Load and dependencies
  OVERLOADED: 'the service is at its concurrency limit; retry with backoff',
  CONTENDED: 'a concurrent change or rotation got in the way; the call may be tried again',
  OUTCOME_UNKNOWN: 'the change may or may not have been applied: read the state before trying again',
  REQUEST_TOKEN_REUSED: 'the request_token was already used by this caller for this method with other parameters (idempotency tokens: one token per logical change)',
  STORE_UNAVAILABLE: 'the state store (etcd) cannot be reached',
  AUDIT_UNAVAILABLE: 'the audit sink cannot record the call, so it is refused (fail closed)',

  // The audit sink's appenders
  AUDIT_SCOPE: "an audit event's operation is outside what its appender may record (a custodian recording a key operation), or a non-coordinator appender published a witness cosignature; the sink refused it",
  AUDIT_QUOTA: "the appender is over its audit event or byte rate, sent a batch over the sink's size limit, or published cosignatures faster than one per 10 s; the sink refused it (producers retry later, crypto events wait in their spool)",
  AUDIT_NOT_LEADER: 'this audit sink replica is not the leader of the replicated log; send the batch to the leader (ErrorInfo `leader_address` when known) — nothing of it was stored here',
  AUDIT_REPLICA_DIVERGED: "this audit sink replica's log differs from the leader's (tampering or a bug); it stopped taking part in replication until an operator looks at it",
} as const satisfies Record<string, string>;

export type Reason = keyof typeof REASONS;

export function isReason(s: unknown): s is Reason {
  return typeof s === 'string' && Object.hasOwn(REASONS, s);
}
