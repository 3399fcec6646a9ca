/**
 * Method policy as the protos declare it: every method of every keyshard.v1 service has a
 * complete `(keyshard.v1.policy)` option, and what the services read from it is exactly the
 * per-method string sets they kept before the options existed (frozen here), so moving the
 * policy into the protos changed no behaviour.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isKeyshardError, KeyshardError } from '@keyshard/errors';
import { methodPolicies, methodPolicy, methodsWhere, policyOf, roleAuthorizer, type MethodPolicy } from './method-policy.ts';
import { keyshardProto, SERVICE_NAMES, type ServiceName } from './proto.ts';
import type { CallContext } from './server.ts';

const set = (...names: string[]) => new Set(names);
const ctx = (method: string, principal: string): CallContext => ({ principal, requestId: 'r', method, deadline: Infinity, facts: {} });

describe('method policy', () => {
  it('every method of every service has a complete policy option, and nothing else does', () => {
    const proto = keyshardProto();
    for (const service of SERVICE_NAMES) {
      const policies = methodPolicies(service);
      assert.deepEqual([...policies.keys()].sort(), Object.keys(proto[service].service).sort(), service);
      for (const p of policies.values()) {
        assert.ok(p.roles.length > 0, `${service}.${p.method} names a role`);
        assert.ok(p.audit && p.seal && p.idempotency, `${service}.${p.method}`);
      }
    }
  });

  it('coordinator: the audit routing, intent set and seal rule of the former METHODS table (server/methods.ts)', () => {
    const keys = ['Encrypt', 'Decrypt', 'ReEncrypt', 'EncryptBatch', 'DecryptBatch', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'Sign', 'Verify', 'Mac', 'VerifyMac', 'GetPublicKey', 'GetKey', 'ListKeys', 'ListAliases'];
    const lifecycle = ['CreateKey', 'UpdateKey', 'EnableKey', 'DisableKey', 'RotateKey', 'SetRotationPolicy', 'ScheduleKeyDestruction', 'CancelKeyDestruction', 'CreateAlias', 'UpdateAlias', 'DeleteAlias'];
    const spool = (p: MethodPolicy) => p.audit === 'AUDIT_CLASS_SPOOL';
    assert.deepEqual(methodsWhere('KeyService', spool), set(...keys, ...lifecycle));
    assert.deepEqual(methodsWhere('CeremonyService', spool), set('Status', 'GetCeremony'));
    assert.deepEqual(methodsWhere('BackupService', spool), set());
    const changes = (p: MethodPolicy) => p.changesState;
    assert.deepEqual(methodsWhere('KeyService', changes), set(...lifecycle));
    assert.deepEqual(methodsWhere('CeremonyService', changes), set('Init', 'StartUnseal', 'Seal', 'StartCeremony', 'CancelCeremony'));
    assert.deepEqual(methodsWhere('BackupService', changes), set('CreateBackup', 'Restore'));
    const open = (p: MethodPolicy) => p.seal === 'SEAL_POLICY_OPEN';
    assert.deepEqual(methodsWhere('KeyService', open), set(...keys, ...lifecycle));
    for (const s of ['CeremonyService', 'BackupService', 'CustodianService', 'AuditService'] as const) assert.deepEqual(methodsWhere(s, open), set(), s);
  });

  it('coordinator: the roles of the former ADMIN_METHODS, key-service and backup authorizers', () => {
    const adminOnly = (p: MethodPolicy) => p.roles.join() === 'ROLE_ADMIN';
    const keyUsers = (p: MethodPolicy) => p.roles.join() === 'ROLE_ADMIN,ROLE_KEY_USER';
    assert.deepEqual(methodsWhere('CeremonyService', adminOnly), set('Init', 'StartUnseal', 'Seal', 'CancelCeremony', 'StartCeremony', 'GetShareExport', 'ResetWitnesses'));
    assert.deepEqual(methodsWhere('CeremonyService', keyUsers), set('Status', 'GetCeremony', 'ListCeremonies'));
    assert.equal(methodsWhere('KeyService', keyUsers).size, methodPolicies('KeyService').size);
    assert.equal(methodsWhere('BackupService', adminOnly).size, 3);
  });

  it('custodian: the former COORDINATOR_METHODS, OPERATOR_METHODS and stateChanging sets', () => {
    const holds = (role: string) => (p: MethodPolicy) => (p.roles as readonly string[]).includes(role);
    assert.deepEqual(methodsWhere('CustodianService', holds('ROLE_COORDINATOR')), set('GetIdentity', 'DeliverShare', 'ProposeCeremony', 'GetRelease', 'DestroyShare', 'ExportShare', 'NoteSeal'));
    assert.deepEqual(
      methodsWhere('CustodianService', holds('ROLE_CUSTODIAN_OPERATOR')),
      set('GetIdentity', 'ListPending', 'ShowCeremony', 'Approve', 'Deny', 'ImportShare', 'EnrollTransportKey', 'RevokeTransportKey', 'ListTrustedKeys'),
    );
    assert.deepEqual(
      methodsWhere('CustodianService', (p) => p.changesState),
      set('DeliverShare', 'ProposeCeremony', 'Approve', 'Deny', 'DestroyShare', 'ExportShare', 'ImportShare', 'EnrollTransportKey', 'RevokeTransportKey'),
    );
    // The custodian has no spool: every outcome reaches the sink before the reply.
    assert.equal(methodsWhere('CustodianService', (p) => p.audit === 'AUDIT_CLASS_SINK').size, methodPolicies('CustodianService').size);
  });

  it('audit sink: appenders may Append, GetCheckpoint and publish cosignatures, readers every method but Append and AddCosignature; nothing is audited', () => {
    const holds = (role: string) => (p: MethodPolicy) => (p.roles as readonly string[]).includes(role);
    assert.deepEqual(methodsWhere('AuditService', holds('ROLE_AUDIT_APPENDER')), set('Append', 'GetCheckpoint', 'AddCosignature', 'GetCosignedCheckpoints'));
    assert.deepEqual(methodsWhere('AuditService', holds('ROLE_AUDITOR')), set('GetCheckpoint', 'GetInclusionProof', 'GetConsistencyProof', 'Query', 'Tail', 'HashValue', 'GetCosignedCheckpoints'));
    assert.equal(methodsWhere('AuditService', (p) => p.audit === 'AUDIT_CLASS_LOG_ONLY').size, methodPolicies('AuditService').size);
  });

  it('SDK: the former METHOD_SAFETY table (packages/client/src/call-policy.ts): reads and pure crypto may be sent again', () => {
    const retryable = (s: ServiceName) => methodsWhere(s, (p) => p.retryable);
    assert.deepEqual(
      retryable('KeyService'),
      set('GetKey', 'ListKeys', 'GetPublicKey', 'ListAliases', 'Encrypt', 'Decrypt', 'ReEncrypt', 'EncryptBatch', 'DecryptBatch', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'Sign', 'Verify', 'Mac', 'VerifyMac'),
    );
    // Seal is idempotent (sealed stays sealed; ceremony.proto): the SDK may resend it.
    assert.deepEqual(retryable('CeremonyService'), set('Status', 'GetCeremony', 'ListCeremonies', 'GetShareExport', 'Seal'));
    assert.equal(methodPolicy('CeremonyService', 'Seal').idempotency, 'IDEMPOTENT');
    assert.equal(methodPolicy('CeremonyService', 'CancelCeremony').idempotency, 'IDEMPOTENCY_UNKNOWN');
    assert.equal(methodPolicy('KeyService', 'GetKey').idempotency, 'NO_SIDE_EFFECTS');
    assert.equal(methodPolicy('KeyService', 'Encrypt').idempotency, 'IDEMPOTENT');
  });

  it('request tokens: every KeyService state change takes one, and the ceremony starts and Init (so the SDK may resend them); nothing else does', () => {
    assert.deepEqual(methodsWhere('KeyService', (p) => p.requestToken), methodsWhere('KeyService', (p) => p.changesState));
    assert.deepEqual(methodsWhere('CeremonyService', (p) => p.requestToken), set('Init', 'StartUnseal', 'StartCeremony'));
    // Every coordinator state change is resendable but CancelCeremony (a repeat answers CEREMONY_CLOSED) and the streams of BackupService.
    assert.deepEqual(methodsWhere('CeremonyService', (p) => p.changesState && !p.requestToken && !p.retryable), set('CancelCeremony'));
    assert.equal(methodsWhere('BackupService', (p) => p.requestToken).size, 0);
    assert.throws(() => policyOf('KeyService', 'GetKey', { '(keyshard.v1.policy)': { audit: 'AUDIT_CLASS_SPOOL', roles: ['ROLE_ADMIN'], seal: 'SEAL_POLICY_OPEN' } }, ['key', 'request_token']), /request_token is for state changes/);
  });

  it('refuses a method without a policy, with an unknown name in it, or with no role', () => {
    const policy = { audit: 'AUDIT_CLASS_SINK', roles: ['ROLE_ADMIN'], seal: 'SEAL_POLICY_ANY' };
    assert.throws(() => policyOf('KeyService', 'X', { idempotency_level: 'IDEMPOTENT' }), /KeyService\.X has no \(keyshard\.v1\.policy\) option/);
    assert.throws(() => policyOf('KeyService', 'X', { '(keyshard.v1.policy)': { ...policy, audit: 'AUDIT_CLASS_LOUD' } }), /audit is "AUDIT_CLASS_LOUD"/);
    assert.throws(() => policyOf('KeyService', 'X', { '(keyshard.v1.policy)': { ...policy, roles: [] } }), /names no role/);
    assert.throws(() => policyOf('KeyService', 'X', { '(keyshard.v1.policy)': { ...policy, seal: 'SEAL_POLICY_UNSPECIFIED' } }), /seal is "SEAL_POLICY_UNSPECIFIED"/);
    assert.throws(() => policyOf('KeyService', 'X', { '(keyshard.v1.policy)': policy, idempotency_level: 'MAYBE' }), /idempotency_level/);
    // A repeated enum written once is a bare name (protobufjs); an absent changes_state is false.
    const p = policyOf('KeyService', 'X', { '(keyshard.v1.policy)': { ...policy, roles: 'ROLE_KEY_USER' } });
    assert.deepEqual([p.roles, p.changesState, p.idempotency, p.retryable], [['ROLE_KEY_USER'], false, 'IDEMPOTENCY_UNKNOWN', false]);
  });

  it('roleAuthorizer lets a caller holding one of the method\'s roles through, and refuses anyone else in the service\'s words', () => {
    const authorize = roleAuthorizer('CustodianService', { ROLE_COORDINATOR: set('coordinator-1'), ROLE_CUSTODIAN_OPERATOR: set('custodian-1-operator') }, (c) =>
      new KeyshardError('PERMISSION_DENIED', `${c.principal} may not call ${c.method}`),
    );
    authorize(ctx('custodian.GetIdentity', 'coordinator-1'));
    authorize(ctx('custodian.GetIdentity', 'custodian-1-operator'));
    authorize(ctx('custodian.DeliverShare', 'coordinator-1'));
    assert.throws(() => authorize(ctx('custodian.DeliverShare', 'custodian-1-operator')), /custodian-1-operator may not call custodian.DeliverShare/);
    assert.throws(() => authorize(ctx('custodian.Approve', 'coordinator-1')), /may not call/);
    assert.throws(() => authorize(ctx('custodian.Nope', 'coordinator-1')), (e) => isKeyshardError(e) && e.code === 'PERMISSION_DENIED');
  });
});
