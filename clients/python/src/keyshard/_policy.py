"""Which calls the SDK may send again: the same rule as the TypeScript SDK
(packages/client/src/call-policy.ts).

- An idempotent call (reads, and the pure crypto calls: a repeat changes no key state) is
  retried on another replica after UNAVAILABLE, and, for key operations, after a replica
  answered SEALED while another is not known to be sealed.
- A state change whose request has a `request_token` field (every KeyService state change:
  CreateKey, RotateKey, UpdateKey, ...; CeremonyService's Init, StartUnseal and StartCeremony)
  is idempotent too: the client fills one random 128-bit
  token per logical call (client.py), every attempt carries it, and the coordinator applies the
  change once and answers a repeat with the original outcome (keys.proto, "Idempotent state
  changes"; AWS idempotency tokens, Google AIP-155).
- Any other call changes state without a token (CancelCeremony; Seal is declared IDEMPOTENT)
  and is sent at most once: it
  moves to another replica only when it provably was not sent (the connection never became
  ready, or the server failed its identity check).
- DEADLINE_EXCEEDED is never retried; every attempt carries what is left of the caller's one
  deadline.

Where idempotency comes from: only the generated descriptors: the method option
`idempotency_level` (protobuf's own, google/protobuf/descriptor.proto), which proto/keyshard/v1
sets on every rpc — NO_SIDE_EFFECTS and IDEMPOTENT are idempotent — and a `request_token` field
in the method's request. A method with neither is sent at most once. There is no second list to
drift from the protos.
"""
from typing import Dict, FrozenSet

from google.protobuf import descriptor_pb2

IDEMPOTENT = 'idempotent'
ONCE = 'once'

_REPEATABLE_LEVELS = (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)


REQUEST_TOKEN_FIELD = 'request_token'


def tokened_methods(service) -> FrozenSet[str]:
    """The methods of a generated ServiceDescriptor whose request has a `request_token` field."""
    return frozenset(m.name for m in service.methods if REQUEST_TOKEN_FIELD in m.input_type.fields_by_name)


def safety_table(service) -> Dict[str, str]:
    """method name -> IDEMPOTENT | ONCE for a generated ServiceDescriptor, from its idempotency_level and request_token field."""
    tokened = tokened_methods(service)
    return {m.name: IDEMPOTENT if m.GetOptions().idempotency_level in _REPEATABLE_LEVELS or m.name in tokened else ONCE for m in service.methods}
