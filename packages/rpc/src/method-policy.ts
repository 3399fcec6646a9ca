/**
 * Per-method policy, read from the protos' method options (proto/keyshard/v1/options.proto) and
 * nowhere else: every service, the SDK and the tests ask here who may call a method, how its
 * outcome is audited, whether it is served sealed, whether it changes state, and whether a
 * client may send it again (protobuf's `idempotency_level`).
 *
 * @grpc/proto-loader hands method options over as they are written in the .proto
 * (MethodDefinition.options: `idempotency_level`, and ours under '(keyshard.v1.policy)'); they
 * are checked here against the enums of options.proto, once per service, and a method without a
 * complete policy is an error (method-policy.spec.ts loads every service's).
 */
import type { MethodDefinition } from '@grpc/proto-loader';
import { KeyshardError } from '@keyshard/errors';
import type { _google_protobuf_MethodOptions_IdempotencyLevel__Output as IdempotencyLevelName } from './generated/google/protobuf/MethodOptions.ts';
import type { MethodName } from './handlers.ts';
import { keyshardPackageDefinition, type ServiceName, type pb } from './proto.ts';
import type { CallContext } from './server.ts';

export type Role = Exclude<pb.Role__Output, 'ROLE_UNSPECIFIED'>;
export type AuditClass = Exclude<pb.AuditClass__Output, 'AUDIT_CLASS_UNSPECIFIED'>;
export type SealPolicy = Exclude<pb.SealPolicy__Output, 'SEAL_POLICY_UNSPECIFIED'>;
export type IdempotencyLevel = IdempotencyLevelName;

export interface MethodPolicy {
  readonly service: ServiceName;
  readonly method: string;
  /** A caller needs any one of these (each service maps them to identities of its configuration). */
  readonly roles: readonly Role[];
  readonly audit: AuditClass;
  readonly seal: SealPolicy;
  /** Its intent is recorded at the audit sink before it runs; its completion is logged at info. */
  readonly changesState: boolean;
  readonly idempotency: IdempotencyLevel;
  /** NO_SIDE_EFFECTS or IDEMPOTENT: a client may send it again after a failure (the SDK's retry rule). */
  readonly retryable: boolean;
  /**
   * Its request has a `request_token` (keys.proto, "Idempotent state changes"): a state change a
   * client may send again with the same token, which the server applies at most once.
   */
  readonly requestToken: boolean;
}

/** The option's key in MethodDefinition.options: its name as the protos write it. */
const POLICY_OPTION = '(keyshard.v1.policy)';
const IDEMPOTENCY_LEVELS: readonly IdempotencyLevel[] = ['IDEMPOTENCY_UNKNOWN', 'NO_SIDE_EFFECTS', 'IDEMPOTENT'];

/** The names an enum of options.proto declares, but its UNSPECIFIED one. */
function enumNames(name: string): ReadonlySet<string> {
  const e = keyshardPackageDefinition()[`keyshard.v1.${name}`] as { type?: { value?: { name: string }[] } } | undefined;
  const names = (e?.type?.value ?? []).map((v) => v.name).filter((n) => !n.endsWith('_UNSPECIFIED'));
  if (names.length === 0) throw new Error(`keyshard.v1.${name} is not an enum of options.proto`);
  return new Set(names);
}

/** A method's policy from its MethodDefinition.options; throws unless it is complete and valid. Exported for the spec. */
export function policyOf(service: ServiceName, method: string, options: Record<string, unknown>, requestFields: readonly string[] = []): MethodPolicy {
  const where = `keyshard.v1.${service}.${method}`;
  const raw = options[POLICY_OPTION] as { audit?: unknown; roles?: unknown; seal?: unknown; changes_state?: unknown } | undefined;
  if (!raw || typeof raw !== 'object') throw new Error(`${where} has no ${POLICY_OPTION} option (proto/keyshard/v1/options.proto)`);
  const one = <T extends string>(field: string, value: unknown, names: ReadonlySet<string>): T => {
    if (typeof value !== 'string' || !names.has(value)) throw new Error(`${where}: ${POLICY_OPTION}.${field} is ${JSON.stringify(value)}, not one of ${[...names].join(', ')}`);
    return value as T;
  };
  // protobufjs gives a repeated enum written once as a bare name, several as an array.
  const rolesRaw = raw.roles === undefined ? [] : Array.isArray(raw.roles) ? raw.roles : [raw.roles];
  const roleNames = enumNames('Role');
  const roles = rolesRaw.map((r) => one<Role>('roles', r, roleNames));
  if (roles.length === 0) throw new Error(`${where}: ${POLICY_OPTION}.roles names no role`);
  const changesState = raw.changes_state ?? false;
  if (typeof changesState !== 'boolean') throw new Error(`${where}: ${POLICY_OPTION}.changes_state is not a boolean`);
  const idempotency = one<IdempotencyLevel>('idempotency_level', options.idempotency_level ?? 'IDEMPOTENCY_UNKNOWN', new Set(IDEMPOTENCY_LEVELS));
  const requestToken = requestFields.includes('request_token');
  if (requestToken && !changesState) throw new Error(`${where}: a request_token is for state changes, but ${POLICY_OPTION}.changes_state is false`);
  return Object.freeze({
    service,
    method,
    roles: Object.freeze([...new Set(roles)]),
    audit: one<AuditClass>('audit', raw.audit, enumNames('AuditClass')),
    seal: one<SealPolicy>('seal', raw.seal, enumNames('SealPolicy')),
    changesState,
    idempotency,
    retryable: idempotency !== 'IDEMPOTENCY_UNKNOWN',
    requestToken,
  });
}

const cache = new Map<ServiceName, ReadonlyMap<string, MethodPolicy>>();

/** The policy of every method of `service`, in the order the proto declares them; throws if one lacks a complete policy. */
export function methodPolicies<S extends ServiceName>(service: S): ReadonlyMap<MethodName<S>, MethodPolicy> {
  let policies = cache.get(service);
  if (!policies) {
    const definition = keyshardPackageDefinition()[`keyshard.v1.${service}`] as Record<string, MethodDefinition<unknown, unknown>> | undefined;
    if (!definition) throw new Error(`keyshard.v1.${service} is not a service of the protos`);
    const fieldsOf = (m: MethodDefinition<unknown, unknown>) => ((m.requestType as { type?: { field?: { name: string }[] } }).type?.field ?? []).map((f) => f.name);
    policies = new Map(Object.entries(definition).map(([method, m]) => [method, policyOf(service, method, m.options as Record<string, unknown>, fieldsOf(m))]));
    cache.set(service, policies);
  }
  return policies as ReadonlyMap<MethodName<S>, MethodPolicy>;
}

/** The policy of one method; throws for a method the service does not declare. */
export function methodPolicy<S extends ServiceName>(service: S, method: string): MethodPolicy {
  const p = methodPolicies(service).get(method as MethodName<S>);
  if (!p) throw new Error(`keyshard.v1.${service} has no method ${method}`);
  return p;
}

/** The methods of `service` whose policy passes `test`. */
export function methodsWhere<S extends ServiceName>(service: S, test: (p: MethodPolicy) => boolean): ReadonlySet<MethodName<S>> {
  return new Set([...methodPolicies(service)].filter(([, p]) => test(p)).map(([m]) => m));
}

/** The identities holding each role, from a service's configuration. */
export type RoleMembers = Partial<Record<Role, ReadonlySet<string>>>;

/** Whether `principal` holds one of the roles `policy` allows. */
export const holdsRole = (policy: MethodPolicy, principal: string, members: RoleMembers): boolean => policy.roles.some((r) => members[r]?.has(principal) === true);

/** The method of a call context's `<service label>.<Method>`. */
export const methodOf = (ctx: Pick<CallContext, 'method'>): string => ctx.method.slice(ctx.method.indexOf('.') + 1);

/**
 * unaryService's `authorize` for a keyshard.v1 service: a caller holding one of the method's
 * roles may call it; anyone else gets `refuse`'s error (PERMISSION_DENIED, in the service's words).
 */
export function roleAuthorizer(service: ServiceName, members: RoleMembers, refuse: (ctx: CallContext, policy: MethodPolicy) => KeyshardError): (ctx: CallContext) => void {
  const policies: ReadonlyMap<string, MethodPolicy> = methodPolicies(service);
  return (ctx) => {
    const policy = policies.get(methodOf(ctx));
    if (!policy) throw new KeyshardError('PERMISSION_DENIED', `${ctx.method} is not a method of ${service}`);
    if (!holdsRole(policy, ctx.principal, members)) throw refuse(ctx, policy);
  };
}
