/**
 * Every method the coordinator serves, declared once, with what is decided per method:
 *  - seal: 'open' — refused FAILED_PRECONDITION "sealed" before its handler runs (the
 *    interceptor below); 'any' — served sealed (the domain refuses what it cannot do sealed,
 *    e.g. a quorum ceremony's start);
 *  - audit: 'spool' — its outcome goes through the durable local spool (crypto calls and
 *    reads, and key-lifecycle outcomes, whose intent already reached the sink); 'sink' — its
 *    outcome must reach the audit sink before the reply (fail closed);
 *  - changesState: its intent (`<method>.requested`) is recorded at the sink before it runs, and
 *    its completion logged at info; other calls (reads, crypto) are logged at debug.
 * main.ts builds the audit routing and the intent/log sets from this table (SPOOLED_OPERATIONS,
 * STATE_CHANGING_METHODS); methods.spec.ts checks it names exactly the methods of the protos.
 */
import type { CallContext, UnaryHandler } from '@keyshard/rpc';

export interface MethodPolicy {
  seal: 'open' | 'any';
  audit: 'spool' | 'sink';
  changesState: boolean;
}

/** The `name` each service is registered under (unaryService): methods are `<service>.<Method>`. */
export type ServiceName = 'keys' | 'ceremony' | 'backup';

export const METHODS: Record<ServiceName, Record<string, MethodPolicy>> = {
  keys: {
    CreateKey:                       { seal: 'open', audit: 'spool', changesState: true },
    GetKey:                          { seal: 'open', audit: 'spool', changesState: false },
    ListKeys:                        { seal: 'open', audit: 'spool', changesState: false },
    UpdateKey:                       { seal: 'open', audit: 'spool', changesState: true },
    EnableKey:                       { seal: 'open', audit: 'spool', changesState: true },
    DisableKey:                      { seal: 'open', audit: 'spool', changesState: true },
    ScheduleKeyDestruction:          { seal: 'open', audit: 'spool', changesState: true },
    CancelKeyDestruction:            { seal: 'open', audit: 'spool', changesState: true },
    Encrypt:                         { seal: 'open', audit: 'spool', changesState: false },
    Decrypt:                         { seal: 'open', audit: 'spool', changesState: false },
    ReEncrypt:                       { seal: 'open', audit: 'spool', changesState: false },
    EncryptBatch:                    { seal: 'open', audit: 'spool', changesState: false },
    DecryptBatch:                    { seal: 'open', audit: 'spool', changesState: false },
    GenerateDataKey:                 { seal: 'open', audit: 'spool', changesState: false },
    GenerateDataKeyWithoutPlaintext: { seal: 'open', audit: 'spool', changesState: false },
    Sign:                            { seal: 'open', audit: 'spool', changesState: false },
    Verify:                          { seal: 'open', audit: 'spool', changesState: false },
    GetPublicKey:                    { seal: 'open', audit: 'spool', changesState: false },
    Mac:                             { seal: 'open', audit: 'spool', changesState: false },
    VerifyMac:                       { seal: 'open', audit: 'spool', changesState: false },
    RotateKey:                       { seal: 'open', audit: 'spool', changesState: true },
    SetRotationPolicy:               { seal: 'open', audit: 'spool', changesState: true },
    CreateAlias:                     { seal: 'open', audit: 'spool', changesState: true },
    UpdateAlias:                     { seal: 'open', audit: 'spool', changesState: true },
    DeleteAlias:                     { seal: 'open', audit: 'spool', changesState: true },
    ListAliases:                     { seal: 'open', audit: 'spool', changesState: false },
  },
  ceremony: {
    Status:                          { seal: 'any', audit: 'spool', changesState: false },
    Init:                            { seal: 'any', audit: 'sink', changesState: true },
    StartUnseal:                     { seal: 'any', audit: 'sink', changesState: true },
    Seal:                            { seal: 'any', audit: 'sink', changesState: true },
    GetCeremony:                     { seal: 'any', audit: 'spool', changesState: false },
    ListCeremonies:                  { seal: 'any', audit: 'sink', changesState: false },
    CancelCeremony:                  { seal: 'any', audit: 'sink', changesState: true },
    StartCeremony:                   { seal: 'any', audit: 'sink', changesState: true },
    GetShareExport:                  { seal: 'any', audit: 'sink', changesState: false },
  },
  backup: {
    CreateBackup:                    { seal: 'any', audit: 'sink', changesState: true },
    VerifyBackup:                    { seal: 'any', audit: 'sink', changesState: false },
    Restore:                         { seal: 'any', audit: 'sink', changesState: true },
  },
};

const entries = Object.entries(METHODS).flatMap(([service, methods]) => Object.entries(methods).map(([method, p]) => ({ service, method, ...p })));

/** Operations (`<service>.<Method>`) whose outcome goes through the local spool (RoutedAudit). */
export const SPOOLED_OPERATIONS: ReadonlySet<string> = new Set(entries.filter((m) => m.audit === 'spool').map((m) => `${m.service}.${m.method}`));

/** Methods whose intent is recorded before they run (auditIntent) and logged at info (auditObserver): bare names, unique across services. */
export const STATE_CHANGING_METHODS: ReadonlySet<string> = new Set(entries.filter((m) => m.changesState).map((m) => m.method));

/** Non-secret facts a handler learned, for its call's audit event: key id, ceremony id, details. */
export type AuditFacts = CallContext['facts'];

/**
 * What a handler answers: the audit facts of the call (none: nothing to add), and its reply —
 * possibly still being made: the facts hold even if making it fails (a key message's usage read
 * after a change that applied is audited with the key's id).
 */
export interface Answer<Res = unknown> {
  audit?: AuditFacts;
  reply: Res | Promise<Res>;
}

export type AnsweringHandler = (req: any, ctx: CallContext) => Promise<Answer>;

/**
 * The interceptor in front of a service's handlers, driven by METHODS: a method whose policy
 * says seal 'open' is refused while sealed before its handler runs (after authorisation and
 * audit intent, as the handler would have been), and each answer's audit facts go to the call's
 * audit event (the observer reads them from the call context, as it does for every service).
 */
export function intercepted(service: ServiceName, handlers: Record<string, AnsweringHandler>, seal: { requireOpen(): void }): Record<string, UnaryHandler<any, unknown>> {
  return Object.fromEntries(
    Object.entries(handlers).map(([method, handler]) => {
      const policy = METHODS[service][method];
      if (!policy) throw new Error(`${service}.${method} has a handler but no entry in METHODS`);
      const guarded: UnaryHandler<any, unknown> = async (req, ctx) => {
        if (policy.seal === 'open') seal.requireOpen();
        const { reply, audit } = await handler(req, ctx);
        if (audit) Object.assign(ctx.facts, audit);
        return await reply;
      };
      return [method, guarded];
    }),
  );
}
