"""keyshard.Client: the keyshard.v1 KeyService (and the cluster status) over mutual TLS, with
typed errors (errors.py), pinned coordinator identities (_identity.py) and failover of
idempotent calls over several replicas within each call's deadline (_pool.py, _policy.py).

    import keyshard

    with keyshard.Client() as ks:  # KEYSHARD_ADDR, KEYSHARD_CA, KEYSHARD_CERT, KEYSHARD_KEY
        ct = ks.encrypt('payments', b'4111 1111 1111 1111', context={'tenant': 'acme'}).ciphertext
        pt = ks.decrypt(ct, context={'tenant': 'acme'}).plaintext

Responses are the generated protobuf messages (keyshard.v1.keys_pb2, ceremony_pb2): fields are
attributes (`key.id`, `key.primary_version`, `resp.ciphertext`), bytes are bytes, enums are ints
(`keys_pb2.KeyState.Name(key.state)`).
"""
import datetime
import os
import secrets
import time
import uuid
from typing import Iterator, Mapping, Optional, Sequence, Union

import grpc

from . import _identity, _policy
from ._pool import CHANNEL_OPTIONS, Connection, Pool, RetryPolicy

try:
    from .v1 import ceremony_pb2, ceremony_pb2_grpc, keys_pb2, keys_pb2_grpc
except ImportError as e:  # pragma: no cover - a source checkout that was never built
    raise ImportError(
        f'{e}: keyshard\'s gRPC stubs are generated when the package is built; install it '
        '(pip install ./clients/python, see clients/python/README.md) instead of importing the source tree'
    ) from e

PemOrPath = Union[str, bytes, os.PathLike]
Context = Mapping[str, str]

DEFAULT_TIMEOUT = 10.0

_KEY_SERVICE = keys_pb2.DESCRIPTOR.services_by_name['KeyService']
_CEREMONY_SERVICE = ceremony_pb2.DESCRIPTOR.services_by_name['CeremonyService']
#: method -> 'idempotent' | 'once', per service (from the descriptors' idempotency_level, or the table)
METHOD_SAFETY = {
    'KeyService': _policy.safety_table(_KEY_SERVICE),
    'CeremonyService': _policy.safety_table(_CEREMONY_SERVICE),
}
#: Methods whose request takes a request_token: the client fills one per logical call.
TOKENED_METHODS = {
    'KeyService': _policy.tokened_methods(_KEY_SERVICE),
    'CeremonyService': _policy.tokened_methods(_CEREMONY_SERVICE),
}


class ConfigurationError(ValueError):
    """The client was given (or the environment holds) no or unusable connection settings."""


def _env_list(name: str) -> Optional[list]:
    v = os.environ.get(name)
    if v is None or v.strip() == '':
        return None
    return [s.strip() for s in v.split(',') if s.strip()]


def _pem(value: Optional[PemOrPath], env: str, what: str) -> bytes:
    if value is None:
        value = os.environ.get(env) or None
        if value is None:
            raise ConfigurationError(f'{what} is not set: pass {what}= or set {env} (e.g. `. .keyshard/dev/env`)')
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        try:
            with open(value, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise ConfigurationError(f'{what}: cannot read {os.fspath(value)!r}: {e.strerror}') from e
    if b'-----BEGIN' not in data:
        raise ConfigurationError(f'{what} is not PEM')
    return data


def _addresses(addresses: Union[None, str, Sequence[str]]) -> list:
    if addresses is None:
        addresses = _env_list('KEYSHARD_ADDR')
        if not addresses:
            raise ConfigurationError('addresses is not set: pass addresses=[...] or set KEYSHARD_ADDR (comma-separated host:port list)')
    elif isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(',') if a.strip()]
    addresses = list(addresses)
    if not addresses:
        raise ConfigurationError('addresses is empty')
    for a in addresses:
        try:
            _identity.split_address(a)
        except (ValueError, TypeError) as e:
            raise ConfigurationError(str(e)) from None
    if len(set(addresses)) != len(addresses):
        raise ConfigurationError('addresses lists a replica twice')
    return addresses


def _context(context: Optional[Context]) -> dict:
    if context is None:
        return {}
    if not isinstance(context, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
        raise TypeError('context must be a mapping of str to str')
    return dict(context)


def _bytes(value, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode('utf-8')
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f'{what} must be bytes (or str, sent as UTF-8)')


def _seconds(value) -> int:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError('a period must be a non-negative whole number of seconds (or a timedelta)')
    return int(value)


def _policy_message(policy: Optional[Mapping[str, Sequence[str]]]):
    if policy is None:
        return None
    return keys_pb2.KeyPolicy(grants={op: keys_pb2.PrincipalList(principals=list(p)) for op, p in policy.items()})


class Client:
    """A client of one keyshard cluster.

    addresses        coordinator replicas, "host:port" (a list, or a comma-separated string);
                     default KEYSHARD_ADDR (comma-separated)
    ca, cert, key    the cluster CA, the client certificate and its key: a path, or PEM bytes;
                     default KEYSHARD_CA, KEYSHARD_CERT, KEYSHARD_KEY
    coordinator_ids  the replicas' certificate CNs; any other server is refused. Default
                     KEYSHARD_COORDINATOR_IDS, else any CN `coordinator-<n>` / `<prefix>-coordinator-<n>`
    timeout          each call's deadline in seconds, retries included (default 10)
    retry            RetryPolicy (attempts, backoff, connect timeout)
    channel_options  extra grpc channel arguments, [(name, value), ...]

    Every method takes keyword-only `timeout` (seconds, this call's whole budget), `deadline`
    (an absolute time.time() value or an aware datetime; wins over timeout) and `request_id`
    (sent as x-request-id, the same on every attempt, so the audit log links them).
    Thread-safe; close() it (or use it as a context manager).
    """

    def __init__(self, addresses: Union[None, str, Sequence[str]] = None, *, ca: Optional[PemOrPath] = None,
                 cert: Optional[PemOrPath] = None, key: Optional[PemOrPath] = None,
                 coordinator_ids: Optional[Sequence[str]] = None, timeout: float = DEFAULT_TIMEOUT,
                 retry: Optional[RetryPolicy] = None, channel_options: Sequence = ()):
        self.addresses = _addresses(addresses)
        self._tls = _identity.TlsFiles(_pem(ca, 'KEYSHARD_CA', 'ca'), _pem(cert, 'KEYSHARD_CERT', 'cert'), _pem(key, 'KEYSHARD_KEY', 'key'))
        ids = list(coordinator_ids) if coordinator_ids is not None else _env_list('KEYSHARD_COORDINATOR_IDS')
        if ids is not None and (not ids or any(not isinstance(i, str) or not i.strip() for i in ids)):
            raise ConfigurationError('coordinator_ids must be a non-empty list of certificate names')
        self.coordinator_ids = ids
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigurationError('timeout must be a positive number of seconds')
        self.timeout = float(timeout)
        self._ssl = self._tls.ssl_context()
        self._credentials = grpc.ssl_channel_credentials(root_certificates=self._tls.ca, private_key=self._tls.key, certificate_chain=self._tls.cert)
        self._channel_options = list(CHANNEL_OPTIONS) + list(channel_options)
        self._pool = Pool(self.addresses, self._connect, retry or RetryPolicy())

    # ---- plumbing ----

    def _connect(self, address: str, timeout: float) -> Connection:
        identity = _identity.check_server(address, self._ssl, self.coordinator_ids, timeout)
        options = list(self._channel_options)
        if identity.pin:
            options.append(('grpc.ssl_target_name_override', identity.pin))
        channel = grpc.secure_channel(address, self._credentials, options=options)
        stubs = {'KeyService': keys_pb2_grpc.KeyServiceStub(channel), 'CeremonyService': ceremony_pb2_grpc.CeremonyServiceStub(channel)}
        return Connection(address, channel, identity, stubs)

    def _deadline(self, timeout: Optional[float], deadline) -> float:
        now = time.monotonic()
        if deadline is not None:
            if isinstance(deadline, datetime.datetime):
                if deadline.tzinfo is None:
                    raise ValueError('deadline must be an aware datetime')
                deadline = deadline.timestamp()
            return now + (float(deadline) - time.time())
        t = self.timeout if timeout is None else timeout
        if not (isinstance(t, (int, float)) and t > 0):
            raise ValueError('timeout must be a positive number of seconds')
        return now + t

    def _call(self, service: str, method: str, request, timeout=None, deadline=None, request_id=None, request_token=None):
        safety = METHOD_SAFETY[service].get(method, _policy.ONCE)
        if method in TOKENED_METHODS[service] and not request.request_token:
            # One token per logical call, kept by every attempt: the coordinator applies the change
            # once and answers a repeat with its outcome. 128 random bits, base64url (22 characters).
            request.request_token = request_token or secrets.token_urlsafe(16)
        return self._pool.call(service, method, request, self._deadline(timeout, deadline), request_id or str(uuid.uuid4()),
                               idempotent=safety == _policy.IDEMPOTENT, key_op=service == 'KeyService')

    def _k(self, method, request, **o):
        return self._call('KeyService', method, request, **o)

    def server_identities(self) -> dict:
        """address -> {'cn': the replica's certificate CN, 'pinned': whether gRPC verifies that
        name on every handshake} for each replica the client has a connection to."""
        out = {}
        for r in self._pool.replicas:
            conn = r.conn
            if conn is not None and conn.identity is not None:
                out[r.address] = {'cn': conn.identity.cn, 'pinned': conn.identity.pin is not None}
        return out

    def close(self):
        self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- cluster ----

    def status(self, *, timeout=None, deadline=None, request_id=None) -> 'ceremony_pb2.StatusResponse':
        """The answering replica's view: initialized, sealed, replicas, custodians, etcd, audit sink."""
        return self._call('CeremonyService', 'Status', ceremony_pb2.StatusRequest(), timeout, deadline, request_id)

    # ---- keys ----

    def create_key(self, name: str, *, type: Optional[str] = None, description: str = '', labels: Optional[Mapping[str, str]] = None,
                   rotation_period=None, policy: Optional[Mapping[str, Sequence[str]]] = None,
                   timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        """A new key. type: "aes256-gcm" (default), "chacha20-poly1305", "hmac-sha256", "ed25519",
        "ecdsa-p256", "ecdsa-secp256k1". rotation_period: seconds or a timedelta (none: no
        scheduled rotation). policy: operation -> principals allowed (key policy grants).
        Sent at most once (not retried after it may have reached a replica)."""
        req = keys_pb2.CreateKeyRequest(name=name, type=type or '', description=description, labels=dict(labels or {}))
        if rotation_period is not None:
            req.rotation.period_seconds = _seconds(rotation_period)
        if policy is not None:
            req.policy.CopyFrom(_policy_message(policy))
        return self._k('CreateKey', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def get_key(self, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        """A key by id, name or alias/<name>."""
        return self._k('GetKey', keys_pb2.GetKeyRequest(key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    def list_keys(self, *, page_size: int = 0, timeout=None, request_id=None) -> Iterator['keys_pb2.Key']:
        """Every key, fetched page by page as the iterator advances (each page one call with its
        own timeout)."""
        token = ''
        while True:
            page = self._k('ListKeys', keys_pb2.ListKeysRequest(page_size=page_size, page_token=token), timeout=timeout, request_id=request_id)
            yield from page.keys
            token = page.next_page_token
            if not token:
                return

    def update_key(self, key: str, *, description: Optional[str] = None, labels: Optional[Mapping[str, str]] = None,
                   min_decryption_version: Optional[int] = None, policy: Optional[Mapping[str, Sequence[str]]] = None,
                   timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        req = keys_pb2.UpdateKeyRequest(key=key, description=description or '', labels=dict(labels or {}),
                                        min_decryption_version=min_decryption_version or 0)
        if policy is not None:
            req.policy.CopyFrom(_policy_message(policy))
        return self._k('UpdateKey', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def enable_key(self, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        return self._k('EnableKey', keys_pb2.KeyRef(key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    def disable_key(self, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        return self._k('DisableKey', keys_pb2.KeyRef(key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    def rotate_key(self, key: str, *, only_if_due: bool = False, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        """A new primary version now; with only_if_due, only if the key's scheduled rotation is due."""
        return self._k('RotateKey', keys_pb2.RotateKeyRequest(key=key, only_if_due=only_if_due), timeout=timeout, deadline=deadline, request_id=request_id)

    def set_rotation_policy(self, key: str, period, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        """Scheduled rotation every `period` (seconds or a timedelta; 0: none)."""
        req = keys_pb2.SetRotationPolicyRequest(key=key, rotation=keys_pb2.RotationPolicy(period_seconds=_seconds(period)))
        return self._k('SetRotationPolicy', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def schedule_key_destruction(self, key: str, waiting_period=0, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        req = keys_pb2.ScheduleKeyDestructionRequest(key=key, waiting_period_seconds=_seconds(waiting_period))
        return self._k('ScheduleKeyDestruction', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def cancel_key_destruction(self, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Key':
        return self._k('CancelKeyDestruction', keys_pb2.KeyRef(key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    # ---- aliases ----

    def create_alias(self, name: str, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Alias':
        return self._k('CreateAlias', keys_pb2.AliasRequest(name=name, key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    def update_alias(self, name: str, key: str, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.Alias':
        return self._k('UpdateAlias', keys_pb2.AliasRequest(name=name, key=key), timeout=timeout, deadline=deadline, request_id=request_id)

    def delete_alias(self, name: str, *, timeout=None, deadline=None, request_id=None) -> None:
        self._k('DeleteAlias', keys_pb2.AliasRequest(name=name), timeout=timeout, deadline=deadline, request_id=request_id)

    def list_aliases(self, key: str = '', *, timeout=None, deadline=None, request_id=None) -> list:
        return list(self._k('ListAliases', keys_pb2.ListAliasesRequest(key=key), timeout=timeout, deadline=deadline, request_id=request_id).aliases)

    # ---- crypto ----

    def encrypt(self, key: str, plaintext, context: Optional[Context] = None, *, timeout=None, deadline=None,
                request_id=None) -> 'keys_pb2.EncryptResponse':
        """.ciphertext (self-describing, see keyshard.ciphertext), .key_id, .key_version. The
        context is bound as AAD and must be given again to decrypt. plaintext: bytes (a str is
        sent as UTF-8)."""
        req = keys_pb2.EncryptRequest(key=key, plaintext=_bytes(plaintext, 'plaintext'), context=_context(context))
        return self._k('Encrypt', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def decrypt(self, ciphertext: bytes, context: Optional[Context] = None, *, key: str = '', timeout=None, deadline=None,
                request_id=None) -> 'keys_pb2.DecryptResponse':
        """.plaintext, .key_id, .key_version. With `key`, the ciphertext must belong to that key.
        A wrong or missing context raises WrongContextError."""
        req = keys_pb2.DecryptRequest(ciphertext=_bytes(ciphertext, 'ciphertext'), context=_context(context), key=key)
        return self._k('Decrypt', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def re_encrypt(self, ciphertext: bytes, source_context: Optional[Context] = None, *, destination_key: str = '',
                   destination_context: Optional[Context] = None, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.ReEncryptResponse':
        """Decrypts and encrypts again inside keyshard (default: the same key's primary version
        and the same context), without the plaintext leaving it."""
        dest = source_context if destination_context is None else destination_context
        req = keys_pb2.ReEncryptRequest(ciphertext=_bytes(ciphertext, 'ciphertext'), source_context=_context(source_context),
                                        destination_key=destination_key, destination_context=_context(dest))
        return self._k('ReEncrypt', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def generate_data_key(self, key: str, length: int = 32, context: Optional[Context] = None, *, with_plaintext: bool = True,
                          timeout=None, deadline=None, request_id=None) -> 'keys_pb2.GenerateDataKeyResponse':
        """A random data key: .plaintext (empty when with_plaintext=False) and .ciphertext, the
        data key encrypted under `key` with `context` (decrypt() returns it)."""
        req = keys_pb2.GenerateDataKeyRequest(key=key, length=length, context=_context(context))
        method = 'GenerateDataKey' if with_plaintext else 'GenerateDataKeyWithoutPlaintext'
        return self._k(method, req, timeout=timeout, deadline=deadline, request_id=request_id)

    def sign(self, key: str, message=None, *, digest: Optional[bytes] = None, timeout=None, deadline=None,
             request_id=None) -> 'keys_pb2.SignResponse':
        """.signature, .key_id, .key_version: over `message`, or over a pre-hashed `digest`."""
        if (message is None) == (digest is None):
            raise ValueError('give message or digest')
        req = keys_pb2.SignRequest(key=key, message=_bytes(message, 'message') if message is not None else b'',
                                   digest=_bytes(digest, 'digest') if digest is not None else b'')
        return self._k('Sign', req, timeout=timeout, deadline=deadline, request_id=request_id)

    def verify(self, key: str, signature: bytes, message=None, *, digest: Optional[bytes] = None, key_version: int = 0,
               timeout=None, deadline=None, request_id=None) -> bool:
        """Whether `signature` is valid for `message` (or `digest`) under the key (a version, or the primary)."""
        if (message is None) == (digest is None):
            raise ValueError('give message or digest')
        req = keys_pb2.VerifyRequest(key=key, signature=_bytes(signature, 'signature'), key_version=key_version,
                                     message=_bytes(message, 'message') if message is not None else b'',
                                     digest=_bytes(digest, 'digest') if digest is not None else b'')
        return self._k('Verify', req, timeout=timeout, deadline=deadline, request_id=request_id).valid

    def get_public_key(self, key: str, key_version: int = 0, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.GetPublicKeyResponse':
        """.pem, .jwk, .key_version of a signing key."""
        return self._k('GetPublicKey', keys_pb2.GetPublicKeyRequest(key=key, key_version=key_version), timeout=timeout, deadline=deadline, request_id=request_id)

    def mac(self, key: str, message, *, timeout=None, deadline=None, request_id=None) -> 'keys_pb2.MacResponse':
        """.mac, .key_version (HMAC-SHA256 keys)."""
        return self._k('Mac', keys_pb2.MacRequest(key=key, message=_bytes(message, 'message')), timeout=timeout, deadline=deadline, request_id=request_id)

    def verify_mac(self, key: str, message, mac: bytes, *, key_version: int = 0, timeout=None, deadline=None, request_id=None) -> bool:
        req = keys_pb2.VerifyMacRequest(key=key, message=_bytes(message, 'message'), mac=_bytes(mac, 'mac'), key_version=key_version)
        return self._k('VerifyMac', req, timeout=timeout, deadline=deadline, request_id=request_id).valid
