"""Typed errors: every failed call raises a KeyshardError (or a subclass) with the gRPC status
code, keyshard's machine-readable reason and its metadata.

keyshard puts a serialized google.rpc.Status holding one google.rpc.ErrorInfo (domain
"keyshard.dev") in the `grpc-status-details-bin` trailer of every refusal; its `reason` is an
UPPER_SNAKE word from one list (packages/errors/src/reasons.ts: SEALED, UNINITIALIZED,
KEY_NOT_FOUND, KEY_DISABLED, WRONG_CONTEXT, NOT_AUTHORIZED, ...). The subclass is chosen by
that reason, and only when a status carries no ErrorInfo (an older server, a proxy, or an error
the SDK detects itself) by the status code: `reason` is then None. Nothing here looks at
message text.

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
    """A call keyshard refused, or that failed on the way (then `code` is UNAVAILABLE or
    DEADLINE_EXCEEDED and `reason` None).

    code      grpc.StatusCode (code_name: its name, e.g. "FAILED_PRECONDITION"; grpc_code: the number)
    reason    keyshard's reason (UPPER_SNAKE), or None when the status carried none
    metadata  dict of non-secret facts the server attached (e.g. {"key": "k_..."})
    details   the status message
    domain    the ErrorInfo domain ("keyshard.dev"), or None
    """

    def __init__(self, code: grpc.StatusCode, details: str, reason: Optional[str] = None,
                 metadata: Optional[Mapping[str, str]] = None, domain: Optional[str] = None):
        self.code = code
        self.details = details or ''
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.domain = domain
        super().__init__(self._text())

    @property
    def code_name(self) -> str:
        return self.code.name

    @property
    def grpc_code(self) -> int:
        return self.code.value[0]

    def _text(self) -> str:
        why = f' [{self.reason}]' if self.reason else ''
        return f'{self.code.name}{why}: {self.details}'

    def __repr__(self) -> str:
        return f'{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, details={self.details!r}, metadata={self.metadata!r})'


class SealedError(KeyshardError):
    """The replica is sealed: a custodian quorum must unseal it (reason SEALED)."""


class UninitializedError(KeyshardError):
    """The cluster has no state: run `keyshard init` or restore a backup (reason UNINITIALIZED)."""


class KeyNotFoundError(KeyshardError):
    """No key has that id, name or alias (reason KEY_NOT_FOUND)."""


class KeyDisabledError(KeyshardError):
    """The key is disabled (reason KEY_DISABLED)."""


class WrongContextError(KeyshardError):
    """The ciphertext does not authenticate under the given encryption context (reason WRONG_CONTEXT)."""


class PermissionDeniedError(KeyshardError):
    """The caller may not make this call (reason NOT_AUTHORIZED, or status PERMISSION_DENIED)."""


class UnavailableError(KeyshardError):
    """No replica could answer (status UNAVAILABLE); idempotent calls were already retried."""


#: The subclass for each reason (the same names as the TypeScript SDK's).
ERROR_BY_REASON = {
    'SEALED': SealedError,
    'UNINITIALIZED': UninitializedError,
    'KEY_NOT_FOUND': KeyNotFoundError,
    'KEY_DISABLED': KeyDisabledError,
    'WRONG_CONTEXT': WrongContextError,
    'NOT_AUTHORIZED': PermissionDeniedError,
}

#: The subclass for a status code, when the reason names none (or there is no reason).
ERROR_BY_CODE = {
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def make_error(code: grpc.StatusCode, details: str, reason: Optional[str] = None,
               metadata: Optional[Mapping[str, str]] = None, domain: Optional[str] = None) -> KeyshardError:
    cls = ERROR_BY_REASON.get(reason or '') or ERROR_BY_CODE.get(code) or KeyshardError
    return cls(code, details, reason, metadata, domain)


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


def from_rpc_error(e: grpc.RpcError, suffix: str = '') -> KeyshardError:
    """The typed error for a failed grpc call (a grpc.RpcError that is also a grpc.Call)."""
    code = e.code() if hasattr(e, 'code') else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, 'details') else None) or str(e)
    info = None
    try:
        info = error_info(e.trailing_metadata()) if hasattr(e, 'trailing_metadata') else None
    except Exception:
        info = None
    info = info or {}
    err = make_error(code, details + suffix, info.get('reason'), info.get('metadata'), info.get('domain'))
    err.__cause__ = e
    return err
