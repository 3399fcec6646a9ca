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

Where idempotency comes from: only the method option `idempotency_level` (protobuf's own,
google/protobuf/descriptor.proto) in the generated descriptors, which proto/keyshard/v1 sets on
every rpc: NO_SIDE_EFFECTS and IDEMPOTENT are idempotent; a method that declares anything else,
or nothing, is sent at most once. There is no second list to drift from the protos.
"""
from typing import Dict

from google.protobuf import descriptor_pb2

IDEMPOTENT = 'idempotent'
ONCE = 'once'

_REPEATABLE_LEVELS = (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)


def safety_table(service) -> Dict[str, str]:
    """method name -> IDEMPOTENT | ONCE for a generated ServiceDescriptor, from its idempotency_level."""
    return {m.name: IDEMPOTENT if m.GetOptions().idempotency_level in _REPEATABLE_LEVELS else ONCE for m in service.methods}
