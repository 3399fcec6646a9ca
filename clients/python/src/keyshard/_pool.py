"""The coordinator replicas one Client talks to, and how one call finds its way through them
(the same rules as the TypeScript SDK's replica-pool.ts and call-policy.ts).

Selection: round robin over the replicas that are healthy and, for key operations, not known to
be sealed; when there is none, a sealed one (it answers at once, and says why), else the one
whose skip ends first.
Health: a replica whose connection fails, or that answers UNAVAILABLE, is skipped for a
jittered period that doubles per failure in a row (at most max_unhealthy); its next success
clears it. A replica that answers SEALED to a key operation is skipped for key operations for a
while, or until it answers one.
Sending: an attempt sends its request only on a READY connection; until then it waits at most
connect_timeout (never past the deadline). So "never became READY" (or "failed its identity
check") proves the request was not sent, and then any call may move to another replica. After a
request was sent, only idempotent calls are sent again (_policy.py). Every attempt carries what
is left of the caller's one deadline and the same x-request-id.
"""
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import grpc

from . import _identity
from .errors import KeyshardError, from_rpc_error, make_error

_READY = grpc.ChannelConnectivity.READY
_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limits (seconds). max_attempts counts the first attempt (1 turns retries off)."""
    max_attempts: int = 5
    #: Cap of the first retry's random delay when no replica is usable; doubles per retry.
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    #: How long an attempt waits for a connection before trying another replica.
    connect_timeout: float = 2.0
    #: Longest time a failed or sealed replica is skipped while another is usable.
    max_unhealthy: float = 5.0

    def __post_init__(self):
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 100:
            raise ValueError('max_attempts must be an integer between 1 and 100')
        for name in ('initial_backoff', 'max_backoff', 'connect_timeout', 'max_unhealthy'):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or v != v:
                raise ValueError(f'{name} must be a non-negative number of seconds')


#: The first failure of a replica skips it this long (jittered), doubling per failure in a row.
_FIRST_UNHEALTHY = 0.2

#: Channel arguments (grpc core). A replica that comes back is noticed within seconds (reconnect
#: backoff at most 5 s); one that hangs is noticed by HTTP/2 keepalive while a call is in flight
#: (PING every 2 s, 3 s to answer), which fails its calls UNAVAILABLE so idempotent ones move on.
#: Servers permit this rate (packages/rpc serverOptions). Each channel has its own subchannels,
#: so a new connection after a failure is really new.
CHANNEL_OPTIONS = (
    ('grpc.max_receive_message_length', 16 * 1024 * 1024),
    ('grpc.max_reconnect_backoff_ms', 5_000),
    ('grpc.keepalive_time_ms', 2_000),
    ('grpc.keepalive_timeout_ms', 3_000),
    ('grpc.keepalive_permit_without_calls', 0),
    ('grpc.use_local_subchannel_pool', 1),
    ('grpc.enable_channelz', 0),
)


class Connection:
    """One gRPC channel to one replica, opened after its server passed the identity check. It
    follows the channel's connectivity (a grpc subscription, polled by grpc's own thread) to know
    without a call whether the connection failed or was lost."""

    def __init__(self, address: str, channel: grpc.Channel, identity: Optional[_identity.ServerIdentity], stubs: dict):
        self.address = address
        self.channel = channel
        self.identity = identity
        self.stubs = stubs  # service name -> generated stub
        self.inflight = 0
        self.retired = False
        self._state = None
        self._left_ready = False
        self._cond = threading.Condition()
        channel.subscribe(self._on_state, try_to_connect=False)

    def _on_state(self, state):
        with self._cond:
            if self._state is _READY and state is not _READY:
                self._left_ready = True
            self._state = state
            self._cond.notify_all()

    def stale(self) -> bool:
        """Whether this connection must be replaced before use: it failed, or it was lost and
        grpc would reconnect to a server whose identity nothing checks (no pinned name)."""
        with self._cond:
            if self._state in (_FAILED, _SHUTDOWN):
                return True
            return self._left_ready and (self.identity is None or self.identity.pin is None)

    def wait_ready(self, until: float) -> str:
        """'ready', 'failed' (the connection failed: nothing was sent) or 'timeout'."""
        with self._cond:
            if self._state is _READY:
                return 'ready'  # the common case: no subscription (grpc delivers each on a new thread)
        kick = lambda _state: None  # noqa: E731  subscribing with try_to_connect starts connecting
        self.channel.subscribe(kick, try_to_connect=True)
        try:
            with self._cond:
                while True:
                    if self._state is _READY:
                        return 'ready'
                    if self._state in (_FAILED, _SHUTDOWN):
                        return 'failed'
                    left = until - time.monotonic()
                    if left <= 0:
                        return 'timeout'
                    self._cond.wait(left)
        finally:
            self.channel.unsubscribe(kick)

    def invoke(self, service: str, method: str, request, timeout: float, metadata):
        return getattr(self.stubs[service], method)(request, timeout=timeout, metadata=metadata)

    def close(self):
        try:
            self.channel.unsubscribe(self._on_state)
        finally:
            self.channel.close()


class Replica:
    def __init__(self, address: str):
        self.address = address
        self.conn = None
        self.failures = 0
        self.unhealthy_until = 0.0
        self.sealed_until = 0.0
        self.lock = threading.Lock()  # one connection attempt at a time per replica


Connector = Callable[[str, float], Connection]


class Pool:
    """Sends calls through the replicas. `connector(address, timeout)` opens a Connection or
    raises OSError (no connection) / _identity.IdentityError (the wrong server)."""

    def __init__(self, addresses: Sequence[str], connector: Connector, policy: RetryPolicy,
                 rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not addresses:
            raise ValueError('at least one coordinator address is needed')
        self.replicas: List[Replica] = [Replica(a) for a in addresses]
        self.connector = connector
        self.policy = policy
        self.random, self.clock, self.sleep = rand, clock, sleep
        self.closed = False
        self._lock = threading.Lock()
        self._next = 0

    # ---- replica health ----

    def pick(self, now: float, key_op: bool) -> Replica:
        with self._lock:
            rs, n = self.replicas, len(self.replicas)
            if n == 1:
                return rs[0]
            sealed = soonest = None
            for i in range(n):
                r = rs[(self._next + i) % n]
                if r.unhealthy_until > now:
                    if soonest is None or r.unhealthy_until < soonest.unhealthy_until:
                        soonest = r
                elif key_op and r.sealed_until > now:
                    sealed = sealed or r
                else:
                    self._next = (self._next + i + 1) % n
                    return r
            self._next = (self._next + 1) % n
            return sealed or soonest

    def has_usable(self, now: float, key_op: bool) -> bool:
        with self._lock:
            return any(r.unhealthy_until <= now and not (key_op and r.sealed_until > now) for r in self.replicas)

    def mark_down(self, r: Replica, now: float):
        with self._lock:
            r.failures += 1
            cap = min(self.policy.max_unhealthy, _FIRST_UNHEALTHY * 2 ** min(r.failures - 1, 30))
            r.unhealthy_until = now + cap * (0.5 + self.random() / 2)

    def mark_up(self, r: Replica, key_op: bool):
        """A call succeeded on r; a key operation also shows that r is not sealed."""
        with self._lock:
            r.failures = 0
            r.unhealthy_until = 0.0
            if key_op:
                r.sealed_until = 0.0

    def mark_sealed(self, r: Replica, now: float):
        with self._lock:
            r.sealed_until = now + self.policy.max_unhealthy * (0.5 + self.random() / 2)

    def retry_delay(self, retry: int) -> float:
        return self.random() * min(self.policy.max_backoff, self.policy.initial_backoff * 2 ** (retry - 1))

    # ---- connections ----

    def _retire(self, r: Replica, conn: Connection):
        with self._lock:
            if r.conn is conn:
                r.conn = None
            conn.retired = True
            idle = conn.inflight == 0
        if idle:
            conn.close()

    def _connection(self, r: Replica, timeout: float) -> Connection:
        with r.lock:
            conn = r.conn
            if conn is not None and conn.stale():
                self._retire(r, conn)
                conn = None
            if conn is None:
                conn = self.connector(r.address, timeout)
                with self._lock:
                    if self.closed:
                        conn.close()
                        raise make_error(grpc.StatusCode.CANCELLED, 'the client was closed')
                    r.conn = conn
            return conn

    # ---- one call ----

    def call(self, service: str, method: str, request, deadline: float, request_id: str, idempotent: bool, key_op: bool):
        """Sends one call (retrying as the policy allows); returns its response or raises the
        last KeyshardError. `deadline` is on the pool's clock (time.monotonic)."""
        metadata = (('x-request-id', request_id),)
        attempts = 0
        last: Optional[KeyshardError] = None
        r: Optional[Replica] = None
        sealed = None  # (error, replica) of a replica that answered SEALED during this call

        def final(err: KeyshardError) -> KeyshardError:
            # Had a replica answered SEALED, that answer says more than the other replicas'
            # unreachability or a deadline that ran out retrying: it is the one raised.
            if sealed is not None and err.reason != 'SEALED' and err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return self._final(sealed[0], attempts, sealed[1], 'the answer of', '; no other replica could take the call')
            return self._final(err, attempts, r)

        while True:
            now = self.clock()
            if self.closed:
                raise make_error(grpc.StatusCode.CANCELLED, 'the client was closed', request_id=request_id)
            if now >= deadline:
                raise final(last or make_error(grpc.StatusCode.DEADLINE_EXCEEDED, 'deadline exceeded before the call was sent', request_id=request_id))
            r = self.pick(now, key_op)
            attempts += 1
            connect_until = min(deadline, now + self.policy.connect_timeout)
            sent = False
            try:
                conn = self._connection(r, connect_until - now)
                state = conn.wait_ready(connect_until)
                if state != 'ready':
                    if state == 'failed':
                        self._retire(r, conn)
                    raise OSError('it is failing' if state == 'failed' else f'it was not ready within {self.policy.connect_timeout:g} s')
                with self._lock:
                    if conn.retired:  # replaced by another thread meanwhile: nothing was sent
                        raise OSError('its connection was being replaced')
                    conn.inflight += 1
                sent = True
                try:
                    res = conn.invoke(service, method, request, max(deadline - self.clock(), 0.001), metadata)
                except ValueError:  # grpc: "Cannot invoke RPC on closed channel!"
                    if self.closed:
                        raise make_error(grpc.StatusCode.CANCELLED, 'the client was closed', request_id=request_id) from None
                    raise
                finally:
                    with self._lock:
                        conn.inflight -= 1
                        close = conn.retired and conn.inflight == 0
                    if close:
                        conn.close()
                self.mark_up(r, key_op)
                return res
            except grpc.RpcError as e:
                err = from_rpc_error(e, request_id)
            except _identity.IdentityError as e:
                err = make_error(grpc.StatusCode.UNAVAILABLE, str(e), request_id=request_id)
            except OSError as e:  # includes ssl.SSLError and socket timeouts
                now = self.clock()
                if now >= deadline:
                    err = make_error(grpc.StatusCode.DEADLINE_EXCEEDED, f'deadline exceeded while connecting to {r.address}', request_id=request_id)
                else:
                    err = make_error(grpc.StatusCode.UNAVAILABLE, f'no connection to {r.address}: {_why(e)}', request_id=request_id)
            now = self.clock()
            last = err
            if not sent:
                # Nothing was sent: any call may try another replica (the deadline permitting).
                if err.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise final(err)
                self.mark_down(r, now)
            elif err.code is grpc.StatusCode.UNAVAILABLE:
                self.mark_down(r, now)
                if not idempotent:
                    raise final(err)
            elif key_op and err.reason == 'SEALED':
                self.mark_sealed(r, now)
                sealed = (err, r)
                if not (idempotent and self.has_usable(now, key_op)):
                    raise final(err)
            else:
                raise final(err)
            if attempts >= self.policy.max_attempts:
                raise final(err)
            delay = 0.0 if self.has_usable(now, key_op) else self.retry_delay(attempts)
            if now + delay >= deadline:
                raise final(err)
            if delay:
                self.sleep(delay)

    @staticmethod
    def _final(err: KeyshardError, attempts: int, r: Optional[Replica], which: str = 'the last to', more: str = '') -> KeyshardError:
        if attempts > 1 and r is not None:
            cause = err.__cause__
            err = type(err)(err.code, f'{err.details} (after {attempts} attempts; {which} {r.address}{more})', err.reason, err.metadata, err.domain, err.request_id)
            err.__cause__ = cause
        return err

    def close(self):
        with self._lock:
            self.closed = True
            conns = [r.conn for r in self.replicas if r.conn is not None]
            for r in self.replicas:
                r.conn = None
        for c in conns:
            c.close()


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError) or type(e).__name__ == 'timeout':
        return 'timed out'
    return str(e) or type(e).__name__
