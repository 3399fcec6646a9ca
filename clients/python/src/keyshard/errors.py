"""Typed errors: every failed call raises a KeyshardError (or a subclass) with the gRPC status
code, keyshard's machine-readable reason and its metadata.

keyshard puts a serialized google.rpc.Status holding one google.rpc.ErrorInfo (domain
"keyshard.dev") in the `grpc-status-details-bin` trailer of every refusal; its `reason` is an
UPPER_SNAKE word from one list (packages/errors/src/reasons.ts: SEALED, UNINITIALIZED,
KEY_NOT_FOUND, KEY_DISABLED, WRONG_CONTEXT, NOT_AUTHORIZED, ...). The subclass is chosen by
that reason when it has one (SealedError, WrongContextError, ...), else by the status code
(one class per code: FailedPreconditionError, NotFoundError, UnavailableError, ...); each reason
class is a subclass of its code's, as in the TypeScript SDK (packages/client/src/errors.ts). A
status without an ErrorInfo (an older server, a proxy, or a failure the SDK or grpc detected)
gets its code's default reason. Nothing here looks at message text.

    try:
        client.decrypt(ciphertext, context={'tenant': 'a'})
    except keyshard.WrongContextError:
        ...
    except keyshard.KeyshardError as e:
        print(e.code_name, e.reason, e.metadata)
"""
from typing import Dict, Mapping, Optional

import grpc

DOMAIN = 'keyshard.dev'
STATUS_DETAILS_KEY = 'grpc-status-details-bin'


class KeyshardError(Exception):
    """A call keyshard refused, or that failed on the way.

    code        grpc.StatusCode (code_name: its name, e.g. "FAILED_PRECONDITION"; grpc_code: the number)
    reason      keyshard's reason (UPPER_SNAKE, e.g. "SEALED"); from a status without details
                (an older server, or a failure the SDK or grpc detected), the code's default
    metadata    dict of non-secret facts the server attached (e.g. {"key": "k_..."})
    details     the status message
    request_id  the x-request-id of the call (the audit log's record of it)
    domain      the ErrorInfo domain ("keyshard.dev"), or None when the status had no details
    """

    def __init__(self, code: grpc.StatusCode, details: str, reason: Optional[str] = None,
                 metadata: Optional[Mapping[str, str]] = None, domain: Optional[str] = None,
                 request_id: Optional[str] = None):
        self.code = code
        self.details = details or ''
        self.reason = reason or default_reason(code)
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.domain = domain
        self.request_id = request_id
        super().__init__(f'{code.name} [{self.reason}]: {self.details}')

    @property
    def code_name(self) -> str:
        return self.code.name

    @property
    def grpc_code(self) -> int:
        return self.code.value[0]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, details={self.details!r}, metadata={self.metadata!r})'


# One class per status code keyshard answers with (the others are KeyshardError itself).
class InvalidArgumentError(KeyshardError):
    pass


class NotFoundError(KeyshardError):
    pass


class AlreadyExistsError(KeyshardError):
    pass


class FailedPreconditionError(KeyshardError):
    pass


class PermissionDeniedError(KeyshardError):
    """The caller may not make this call (reason NOT_AUTHORIZED)."""


class UnauthenticatedError(KeyshardError):
    pass


class ResourceExhaustedError(KeyshardError):
    pass


class UnavailableError(KeyshardError):
    """No replica could answer; idempotent calls were already retried on the others."""


class DeadlineExceededError(KeyshardError):
    pass


class InternalError(KeyshardError):
    pass


# The common reasons, each a subclass of its code's class (as in the TypeScript SDK).
class SealedError(FailedPreconditionError):
    """SEALED: the replica is sealed; a custodian quorum must unseal it."""


class UninitializedError(FailedPreconditionError):
    """UNINITIALIZED: the cluster does not exist (never initialised, destroyed, or mid-restore)."""


class KeyNotFoundError(NotFoundError):
    """KEY_NOT_FOUND: no key has that id, name or alias."""


class KeyDisabledError(FailedPreconditionError):
    """KEY_DISABLED: the key is disabled."""


class KeyPendingDestructionError(FailedPreconditionError):
    """KEY_PENDING_DESTRUCTION: the key is scheduled for destruction."""


class KeyDestroyedError(FailedPreconditionError):
    """KEY_DESTROYED: the key is destroyed."""


class WrongKeyUsageError(FailedPreconditionError):
    """WRONG_KEY_USAGE: the key's type does not do this (e.g. encrypt with a signing key)."""


class WrongContextError(InvalidArgumentError):
    """WRONG_CONTEXT: the ciphertext does not authenticate under the given encryption context (or was modified)."""


class InvalidCiphertextError(InvalidArgumentError):
    """INVALID_CIPHERTEXT: not a ciphertext keyshard made."""


class CeremonyNotFoundError(NotFoundError):
    """CEREMONY_NOT_FOUND: no ceremony has that id."""


class OverloadedError(ResourceExhaustedError):
    """OVERLOADED: the replica is at its concurrency limit; retry with backoff."""


class AuditUnavailableError(UnavailableError):
    """AUDIT_UNAVAILABLE: the audit sink cannot record the call, so it was refused."""


#: The subclass for each reason (the same names as the TypeScript SDK's).
ERROR_BY_REASON = {
    'SEALED': SealedError,
    'UNINITIALIZED': UninitializedError,
    'KEY_NOT_FOUND': KeyNotFoundError,
    'KEY_DISABLED': KeyDisabledError,
    'KEY_PENDING_DESTRUCTION': KeyPendingDestructionError,
    'KEY_DESTROYED': KeyDestroyedError,
    'WRONG_KEY_USAGE': WrongKeyUsageError,
    'WRONG_CONTEXT': WrongContextError,
    'INVALID_CIPHERTEXT': InvalidCiphertextError,
    'CEREMONY_NOT_FOUND': CeremonyNotFoundError,
    'OVERLOADED': OverloadedError,
    'AUDIT_UNAVAILABLE': AuditUnavailableError,
}

#: The class for a status code, when the reason has none of its own.
ERROR_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def default_reason(code: grpc.StatusCode) -> str:
    """The reason of a status that names none (packages/errors DEFAULT_REASON): the code's name,
    except PERMISSION_DENIED, whose reason is NOT_AUTHORIZED."""
    return 'NOT_AUTHORIZED' if code is grpc.StatusCode.PERMISSION_DENIED else code.name


def make_error(code: grpc.StatusCode, details: str, reason: Optional[str] = None,
               metadata: Optional[Mapping[str, str]] = None, domain: Optional[str] = None,
               request_id: Optional[str] = None) -> KeyshardError:
    """The typed error: its class from the reason, else from the code."""
    reason = reason or default_reason(code)
    cls = ERROR_BY_REASON.get(reason) or ERROR_BY_CODE.get(code) or KeyshardError
    return cls(code, details, reason, metadata, domain, request_id)


def _status_classes():
    """google.rpc.Status and ErrorInfo: googleapis-common-protos' when installed (so both never
    register the same .proto file in protobuf's default pool), else the SDK's generated ones.
    Imported on the first error that carries details."""
    try:
        from google.rpc import error_details_pb2, status_pb2  # googleapis-common-protos
    except ImportError:
        from keyshard._rpc import error_details_pb2, status_pb2
    return status_pb2.Status, error_details_pb2.ErrorInfo


def error_info(trailing_metadata) -> Optional[dict]:
    """keyshard's ErrorInfo (domain keyshard.dev) in a `grpc-status-details-bin` trailer, as
    {reason, domain, metadata}, or None when there is none (or the trailer cannot be parsed)."""
    raw = None
    for k, v in trailing_metadata or ():
        if k == STATUS_DETAILS_KEY:
            raw = v
    if not raw:
        return None
    Status, ErrorInfo = _status_classes()
    try:
        status = Status.FromString(bytes(raw))
    except Exception:  # a malformed trailer is no reason
        return None
    for any_ in status.details:
        info = ErrorInfo()
        # keyshard's own (domain keyshard.dev): an ErrorInfo a proxy added speaks another vocabulary
        if any_.Unpack(info) and info.domain == DOMAIN:  # Unpack: type_url ends in /google.rpc.ErrorInfo
            return {'reason': info.reason or None, 'domain': info.domain, 'metadata': dict(info.metadata)}
    return None


def from_rpc_error(e: grpc.RpcError, request_id: Optional[str] = None) -> KeyshardError:
    """The typed error for a failed grpc call (a grpc.RpcError that is also a grpc.Call).
    request_id: the id the call was sent with, for when the server did not echo it."""
    code = e.code() if hasattr(e, 'code') else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, 'details') else None) or str(e) or code.name
    try:
        trailers = tuple(e.trailing_metadata() or ()) if hasattr(e, 'trailing_metadata') else ()
    except Exception:
        trailers = ()
    info = error_info(trailers) or {}
    echoed = next((v for k, v in trailers if k == 'x-request-id' and isinstance(v, str)), None)
    err = make_error(code, details, info.get('reason'), info.get('metadata'), info.get('domain'), echoed or request_id)
    err.__cause__ = e
    return err
