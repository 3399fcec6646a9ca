"""keyshard: the Python SDK of the keyshard key management service.

    import keyshard

    with keyshard.Client() as ks:          # KEYSHARD_ADDR, KEYSHARD_CA, KEYSHARD_CERT, KEYSHARD_KEY
        key = ks.create_key('payments')
        ct = ks.encrypt('payments', b'secret', context={'tenant': 'acme'}).ciphertext
        assert ks.decrypt(ct, context={'tenant': 'acme'}).plaintext == b'secret'

Errors are KeyshardError subclasses chosen by keyshard's reason (keyshard.errors). The generated
protobuf modules are keyshard.v1.keys_pb2 / keys_pb2_grpc, ceremony_pb2, ... (built from the
repository's proto/ when the package is built). See clients/python/README.md.
"""
from . import ciphertext, errors
from ._pool import RetryPolicy
from .client import METHOD_SAFETY, Client, ConfigurationError
from .errors import (
    AlreadyExistsError,
    AuditUnavailableError,
    CeremonyNotFoundError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    InvalidCiphertextError,
    KeyDestroyedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyPendingDestructionError,
    KeyshardError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SealedError,
    UnauthenticatedError,
    UnavailableError,
    UninitializedError,
    WrongContextError,
    WrongKeyUsageError,
)
from .v1 import ceremony_pb2, keys_pb2

__version__ = '0.1.0'

__all__ = [
    'Client', 'ConfigurationError', 'RetryPolicy', 'METHOD_SAFETY',
    'KeyshardError',
    'InvalidArgumentError', 'NotFoundError', 'AlreadyExistsError', 'FailedPreconditionError', 'PermissionDeniedError',
    'UnauthenticatedError', 'ResourceExhaustedError', 'UnavailableError', 'DeadlineExceededError', 'InternalError',
    'SealedError', 'UninitializedError', 'KeyNotFoundError', 'KeyDisabledError', 'KeyPendingDestructionError',
    'KeyDestroyedError', 'WrongKeyUsageError', 'WrongContextError', 'InvalidCiphertextError', 'CeremonyNotFoundError',
    'OverloadedError', 'AuditUnavailableError',
    'ciphertext', 'errors', 'keys_pb2', 'ceremony_pb2',
]
