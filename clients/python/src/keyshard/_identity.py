"""Pinned servers: the SDK talks only to a coordinator replica of the cluster, not to any server
holding a certificate of the cluster CA (a custodian's, the audit sink's), the same rule as the
TypeScript SDK (packages/rpc/src/server-identity.ts).

grpcio has no hook to inspect the server certificate of a client connection, so the check is
done in two parts:

1. Before the SDK opens a channel to an address, it makes one TLS handshake there itself
   (Python's ssl, the same CA, client certificate and name check as gRPC) and refuses the
   server unless its certificate carries extendedKeyUsage serverAuth and its subject CN is a
   coordinator id: one of the configured ids (coordinator_ids / KEYSHARD_COORDINATOR_IDS), or
   by default any CN `coordinator-<n>` or `<prefix>-coordinator-<n>`.
2. When that certificate also names its CN as a DNS subjectAltName (the dev PKI issues every
   server certificate so, for exactly this), the channel is opened with
   `grpc.ssl_target_name_override` = that CN: gRPC itself then verifies, on every handshake
   including its silent reconnections, that the server is that replica. Otherwise the channel
   verifies the dialled name as usual, and the identity is checked again (step 1, on a new
   channel) whenever the connection was lost; issue coordinator certificates with DNS:<id> for
   the per-handshake check.

A refusal fails the attempt with UNAVAILABLE and a message naming what was expected and what
was presented; like a connection that never came up, it proves the call was not sent, so any
call may move to another replica.
"""
import os
import re
import socket
import ssl
import tempfile
from typing import NamedTuple, Optional, Sequence, Tuple

SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1'
COORDINATOR_ID_PATTERN = re.compile(r'^(?:[a-z0-9][a-z0-9-]*-)?coordinator-\d{1,4}$')
_MAX_SHOWN = 128


class IdentityError(Exception):
    """The server at an address is not a coordinator replica the client expects."""


class ServerIdentity(NamedTuple):
    cn: str
    dns_names: Tuple[str, ...]
    #: The name gRPC pins on every handshake (ssl_target_name_override), when the certificate allows it.
    pin: Optional[str]


def split_address(address: str) -> Tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    m = re.fullmatch(r'\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)', address.strip())
    if not m:
        raise ValueError(f'address {address!r} is not "host:port"')
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ValueError(f'address {address!r} has an invalid port')
    return host, port


def _shown(s: Optional[str]) -> str:
    if s is None:
        return '(none)'
    return repr(s if len(s) <= _MAX_SHOWN else s[:_MAX_SHOWN] + '…')


def describe_expected(ids: Optional[Sequence[str]]) -> str:
    names = f'CN matching {COORDINATOR_ID_PATTERN.pattern}' if not ids else (
        f'CN {_shown(ids[0])}' if len(ids) == 1 else 'CN one of ' + ', '.join(_shown(i) for i in ids))
    return f'a coordinator replica ({names}, extendedKeyUsage serverAuth)'


# ---- a minimal DER reader: enough to find a certificate's extendedKeyUsage (RFC 5280) ----

def _tlv(der: bytes, i: int) -> Tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at i."""
    if i + 2 > len(der):
        raise ValueError('truncated DER')
    tag, n = der[i], der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or i + k > len(der):
            raise ValueError('bad DER length')
        n = int.from_bytes(der[i:i + k], 'big')
        i += k
    if i + n > len(der):
        raise ValueError('truncated DER')
    return tag, i, i + n


def _children(der: bytes, start: int, end: int):
    i = start
    while i < end:
        tag, s, e = _tlv(der, i)
        yield tag, s, e
        i = e


def _oid(b: bytes) -> str:
    arcs, v = [], 0
    for c in b:
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            arcs.append(v)
            v = 0
    if not arcs:
        raise ValueError('empty OID')
    first = min(arcs[0] // 40, 2)
    return '.'.join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def extended_key_usage(der: bytes) -> Optional[Tuple[str, ...]]:
    """The OIDs of a DER certificate's extendedKeyUsage, or None when it has none."""
    _, cs, ce = _tlv(der, 0)  # Certificate
    _, ts, te = next(_children(der, cs, ce))  # tbsCertificate
    for tag, s, e in _children(der, ts, te):
        if tag != 0xA3:  # [3] extensions
            continue
        _, xs, xe = _tlv(der, s)  # SEQUENCE OF Extension
        for _, es, ee in _children(der, xs, xe):
            parts = list(_children(der, es, ee))
            if not parts or parts[0][0] != 0x06:
                continue
            if _oid(der[parts[0][1]:parts[0][2]]) != '2.5.29.37':
                continue
            octets = parts[-1]
            _, ss, se = _tlv(der, octets[1])  # ExtKeyUsageSyntax ::= SEQUENCE OF KeyPurposeId
            return tuple(_oid(der[a:b]) for t, a, b in _children(der, ss, se) if t == 0x06)
    return None


def _cn_of(cert: dict) -> Optional[str]:
    cns = [v for rdn in cert.get('subject', ()) for k, v in rdn if k == 'commonName']
    return cns[0] if len(cns) == 1 else None  # several CNs are no single identity


def identity_problem(cert: dict, der: bytes, ids: Optional[Sequence[str]]) -> Optional[str]:
    """Why a verified peer certificate (ssl getpeercert() and its DER) is not an expected
    coordinator, or None when it is."""
    cn = _cn_of(cert)
    want = describe_expected(ids)
    try:
        eku = extended_key_usage(der)
    except (ValueError, StopIteration, IndexError):
        return f'expected {want}; the server presented CN {_shown(cn)} whose certificate could not be read'
    if not eku or SERVER_AUTH_OID not in eku:
        return f'expected {want}; the server presented CN {_shown(cn)} whose certificate is not for serverAuth'
    ok = cn is not None and (cn in ids if ids else bool(COORDINATOR_ID_PATTERN.fullmatch(cn)))
    return None if ok else f'expected {want}; the server presented CN {_shown(cn)}'


class TlsFiles:
    """The client's TLS material, as PEM bytes, with the files Python's ssl needs made on demand."""

    def __init__(self, ca: bytes, cert: bytes, key: bytes):
        self.ca, self.cert, self.key = ca, cert, key

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca.decode('ascii'))
        ctx.set_alpn_protocols(['h2'])
        # load_cert_chain reads files only: private files for the moment it takes
        with tempfile.TemporaryDirectory(prefix='keyshard-tls-') as d:
            cert_path, key_path = os.path.join(d, 'cert.pem'), os.path.join(d, 'key.pem')
            for path, data in ((cert_path, self.cert), (key_path, self.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, 'wb') as f:
                    f.write(data)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx


def check_server(address: str, ctx: ssl.SSLContext, ids: Optional[Sequence[str]], timeout: float) -> ServerIdentity:
    """One TLS handshake with `address`: the chain and the dialled name verified, then the
    identity (identity_problem). Raises OSError when there is no connection (refused, timed out,
    TLS failure), IdentityError when the server is not an expected coordinator."""
    host, port = split_address(address)
    with socket.create_connection((host, port), timeout=max(timeout, 0.001)) as raw:
        raw.settimeout(max(timeout, 0.001))
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            cert = tls.getpeercert()
            der = tls.getpeercert(binary_form=True)
    problem = identity_problem(cert, der, ids)
    if problem:
        raise IdentityError(f'server identity check failed at {address}: {problem}')
    cn = _cn_of(cert)
    dns = tuple(v for k, v in cert.get('subjectAltName', ()) if k == 'DNS')
    return ServerIdentity(cn, dns, cn if cn in dns else None)
