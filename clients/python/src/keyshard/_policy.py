"""Which calls the SDK may send again: the same rule as the TypeScript SDK
(packages/client/src/call-policy.ts).

- An idempotent call (reads, and the pure crypto calls: a repeat changes no key state) is
  retried on another replica after UNAVAILABLE, and, for key operations, after a replica
  answered SEALED while another is not known to be sealed.
- Any other call changes state (a second CreateKey or RotateKey would act twice) and is sent
  at most once: it moves to another replica only when it provably was not sent (the connection
  never became ready, or the server failed its identity check).
- DEADLINE_EXCEEDED is never retried; every attempt carries what is left of the caller's one
  deadline.

Where idempotency comes from: the method option `idempotency_level` (protobuf's own,
google/protobuf/descriptor.proto) in the generated descriptors, which proto/keyshard/v1 sets on
every rpc (NO_SIDE_EFFECTS and IDEMPOTENT are idempotent, anything else is not); for protos
that set it on no method of a service, the table below (the TypeScript SDK's former
METHOD_SAFETY; tests/test_policy.py checks it agrees with the protos).
"""
from typing import Dict

from google.protobuf import descriptor_pb2

IDEMPOTENT = 'idempotent'
ONCE = 'once'

#: Used for a service whose protos set no idempotency_level (what call-policy.ts METHOD_SAFETY said).
FALLBACK_TABLE: Dict[str, str] = {
    # KeyService, reads
    'GetKey': IDEMPOTENT, 'ListKeys': IDEMPOTENT, 'GetPublicKey': IDEMPOTENT, 'ListAliases': IDEMPOTENT,
    # KeyService, pure crypto: no key state changes
    'Encrypt': IDEMPOTENT, 'Decrypt': IDEMPOTENT, 'ReEncrypt': IDEMPOTENT, 'EncryptBatch': IDEMPOTENT,
    'DecryptBatch': IDEMPOTENT, 'GenerateDataKey': IDEMPOTENT, 'GenerateDataKeyWithoutPlaintext': IDEMPOTENT,
    'Sign': IDEMPOTENT, 'Verify': IDEMPOTENT, 'Mac': IDEMPOTENT, 'VerifyMac': IDEMPOTENT,
    # KeyService, state changes
    'CreateKey': ONCE, 'UpdateKey': ONCE, 'EnableKey': ONCE, 'DisableKey': ONCE,
    'ScheduleKeyDestruction': ONCE, 'CancelKeyDestruction': ONCE, 'RotateKey': ONCE,
    'SetRotationPolicy': ONCE, 'CreateAlias': ONCE, 'UpdateAlias': ONCE, 'DeleteAlias': ONCE,
    # CeremonyService
    'Status': IDEMPOTENT, 'GetCeremony': IDEMPOTENT, 'ListCeremonies': IDEMPOTENT, 'GetShareExport': IDEMPOTENT,
    'Init': ONCE, 'StartUnseal': ONCE, 'StartCeremony': ONCE,
    'Seal': ONCE,  # seals the replica that answers: a retry elsewhere would seal a second one
    'CancelCeremony': ONCE,
}

_REPEATABLE_LEVELS = (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)


def safety_table(service) -> Dict[str, str]:
    """method name -> IDEMPOTENT | ONCE for a generated ServiceDescriptor, and where it came
    from: ('descriptor' | 'table')."""
    methods = list(service.methods)
    declared = [m for m in methods if m.GetOptions().HasField('idempotency_level')]
    if declared:
        return {m.name: IDEMPOTENT if m.GetOptions().idempotency_level in _REPEATABLE_LEVELS else ONCE for m in methods}
    return {m.name: FALLBACK_TABLE.get(m.name, ONCE) for m in methods}


def source_of(service) -> str:
    """'descriptor' when the service's protos declare idempotency_level, else 'table'."""
    return 'descriptor' if any(m.GetOptions().HasField('idempotency_level') for m in service.methods) else 'table'
