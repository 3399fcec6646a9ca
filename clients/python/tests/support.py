"""Shared by the unit tests: a throwaway PKI made with the system openssl (the same profiles as
packages/pki), a one-shot TLS server, and fakes of grpc errors."""
import os
import socket
import ssl
import subprocess
import tempfile
import threading

import grpc


def openssl(args, cwd):
    subprocess.run(['openssl', *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA and certificates in a temporary directory (removed by cleanup())."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix='keyshard-pki-')
        self.dir = self._tmp.name
        openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca-key.pem'], self.dir)
        openssl(['req', '-x509', '-new', '-key', 'ca-key.pem', '-subj', '/CN=test-ca', '-days', '2', '-out', 'ca.pem'], self.dir)
        self.ca = os.path.join(self.dir, 'ca.pem')

    def issue(self, name, cn=None, eku='serverAuth,clientAuth', sans=('IP:127.0.0.1', 'DNS:localhost')):
        """(cert path, key path); eku None: no extendedKeyUsage extension; cn may be a list (several CNs)."""
        cn = name if cn is None else cn
        subj = ''.join(f'/CN={c}' for c in (cn if isinstance(cn, (list, tuple)) else [cn]))
        ext = os.path.join(self.dir, f'{name}.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n')
            if eku:
                f.write(f'extendedKeyUsage=critical,{eku}\n')
            if sans:
                f.write(f'subjectAltName={",".join(sans)}\n')
        key = f'{name}-key.pem'
        openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], self.dir)
        openssl(['req', '-new', '-key', key, '-subj', subj, '-out', f'{name}.csr'], self.dir)
        openssl(['x509', '-req', '-in', f'{name}.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial',
                 '-days', '2', '-sha256', '-extfile', ext, '-out', f'{name}.pem'], self.dir)
        return os.path.join(self.dir, f'{name}.pem'), os.path.join(self.dir, key)

    def der(self, name):
        out = subprocess.run(['openssl', 'x509', '-in', f'{name}.pem', '-outform', 'DER'], cwd=self.dir, check=True, capture_output=True)
        return out.stdout

    def read(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def cleanup(self):
        self._tmp.cleanup()


class TlsServer:
    """Accepts TLS connections on 127.0.0.1 with a given certificate (mutual TLS against the CA)
    until stopped; counts completed handshakes."""

    def __init__(self, pki, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(['h2'])
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.address = f'127.0.0.1:{self.sock.getsockname()[1]}'
        self.handshakes = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    tls.settimeout(1)
                    try:
                        tls.recv(1)
                    except (OSError, ssl.SSLError):
                        pass
            except (OSError, ssl.SSLError):
                pass

    def stop(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


class FakeRpcError(grpc.RpcError):
    """What grpcio raises for a failed unary call: an RpcError that is also a Call."""

    def __init__(self, code, details='', trailers=()):
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def status_trailer(code, message, reason, metadata=None, domain='keyshard.dev'):
    """A grpc-status-details-bin trailer as keyshard sends it."""
    from keyshard._rpc import error_details_pb2, status_pb2
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {}))
    return ('grpc-status-details-bin', status.SerializeToString())
