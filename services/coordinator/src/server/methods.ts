/**
 * The coordinator's services and what is decided per method, as the protos declare it
 * (`option (keyshard.v1.policy)`, read by @keyshard/rpc method-policy.ts):
 *  - seal: SEAL_POLICY_OPEN — refused FAILED_PRECONDITION "sealed" before its handler runs (the
 *    interceptor below); SEAL_POLICY_ANY — served sealed (the domain refuses what it cannot do
 *    sealed, e.g. a quorum ceremony's start);
 *  - audit: AUDIT_CLASS_SPOOL — its outcome goes through the durable local spool (crypto calls and
 *    reads, and key-lifecycle outcomes, whose intent already reached the sink); AUDIT_CLASS_SINK —
 *    its outcome must reach the audit sink before the reply (fail closed);
 *  - changes_state: its intent (`<method>.requested`) is recorded at the sink before it runs, and
 *    its completion logged at info; other calls (reads, crypto) are logged at debug;
 *  - roles: who may call it (the authorizers of key-service.ts and ceremony-service.ts).
 * main.ts builds the audit routing and the intent/log sets from them (SPOOLED_OPERATIONS,
 * STATE_CHANGING_METHODS).
 */
import { methodPolicies, methodsWhere, type CallContext, type MethodName, type RequestOf, type ResponseOf, type ServiceHandlers, type UnaryHandler } from '@keyshard/rpc';

/** The `name` each service is registered under (unaryService): methods are `<label>.<Method>`. */
export const SERVICES = { keys: 'KeyService', ceremony: 'CeremonyService', backup: 'BackupService' } as const;
export type ServiceLabel = keyof typeof SERVICES;
type Served = (typeof SERVICES)[ServiceLabel];

const labelled = Object.entries(SERVICES) as [ServiceLabel, Served][];

/** Operations (`<label>.<Method>`) whose outcome goes through the local spool (RoutedAudit). */
export const SPOOLED_OPERATIONS: ReadonlySet<string> = new Set(
  labelled.flatMap(([label, service]) => [...methodsWhere(service, (p) => p.audit === 'AUDIT_CLASS_SPOOL')].map((m) => `${label}.${m}`)),
);

/** Methods whose intent is recorded before they run (auditIntent) and logged at info (auditObserver): bare names, unique across services. */
export const STATE_CHANGING_METHODS: ReadonlySet<string> = new Set(labelled.flatMap(([, service]) => [...methodsWhere(service, (p) => p.changesState)]));

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

/** A unary method's handler behind the interceptor: its typed request, its answer. */
export type AnsweringHandler<S extends Served, M extends MethodName<S>> = (req: RequestOf<S, M>, ctx: CallContext) => Promise<Answer<ResponseOf<S, M>>>;

/** The answering handlers of a service's unary methods (KeyService, CeremonyService). */
export type AnsweringHandlers<S extends Served> = { [M in MethodName<S>]: AnsweringHandler<S, M> };

/**
 * The interceptor in front of a service's handlers, driven by the method policy: a method whose
 * policy says SEAL_POLICY_OPEN is refused while sealed before its handler runs (after
 * authorisation and audit intent, as the handler would have been), and each answer's audit facts
 * go to the call's audit event (the observer reads them from the call context, as it does for
 * every service).
 */
export function intercepted<L extends 'keys' | 'ceremony'>(
  label: L,
  handlers: Partial<AnsweringHandlers<(typeof SERVICES)[L]>>,
  seal: { requireOpen(): void },
): Partial<ServiceHandlers<(typeof SERVICES)[L]>> {
  const service = SERVICES[label];
  const policies: ReadonlyMap<string, { seal: string }> = methodPolicies(service);
  return Object.fromEntries(
    Object.entries(handlers as Record<string, (req: never, ctx: CallContext) => Promise<Answer>>).map(([method, handler]) => {
      const policy = policies.get(method);
      if (!policy) throw new Error(`${label}.${method} has a handler but is not a method of ${service}`);
      const guarded: UnaryHandler<never, unknown> = async (req, ctx) => {
        if (policy.seal === 'SEAL_POLICY_OPEN') seal.requireOpen();
        const { reply, audit } = await handler(req, ctx);
        if (audit) Object.assign(ctx.facts, audit);
        return await reply;
      };
      return [method, guarded];
    }),
  ) as Partial<ServiceHandlers<(typeof SERVICES)[L]>>;
}
