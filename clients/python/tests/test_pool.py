"""Failover (the pool with fake connections, no network): idempotent calls move on after
UNAVAILABLE or SEALED, other calls only when they provably were not sent; every attempt within
the one deadline and with the same request id."""
import time
import unittest

import grpc

import keyshard
from keyshard import _identity
from keyshard._pool import Pool, RetryPolicy
from tests.support import FakeRpcError, status_trailer

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FP = grpc.StatusCode.FAILED_PRECONDITION


class FakeConn:
    """A connection whose calls answer from a script: a value, or an exception to raise."""

    def __init__(self, world, address):
        self.world, self.address = world, address
        self.retired = False
        self.inflight = 0
        self.closed = False

    def stale(self):
        return False

    def wait_ready(self, until):
        return self.world.ready.get(self.address, 'ready')

    def invoke(self, service, method, request, timeout, metadata):
        self.world.sent.append((self.address, method, dict(metadata)['x-request-id'], timeout))
        answer = self.world.answers.get((self.address, method), self.world.answers.get(self.address, 'ok'))
        if isinstance(answer, Exception):
            raise answer
        return f'{method} from {self.address}'

    def close(self):
        self.closed = True


class World:
    def __init__(self):
        self.down = set()        # connector raises OSError
        self.impostors = set()   # connector raises IdentityError
        self.ready = {}          # address -> 'ready' | 'failed' | 'timeout'
        self.answers = {}        # address or (address, method) -> Exception | 'ok'
        self.sent = []
        self.connects = []

    def connector(self, address, timeout):
        self.connects.append(address)
        if address in self.down:
            raise ConnectionRefusedError(111, 'Connection refused')
        if address in self.impostors:
            raise _identity.IdentityError(f'server identity check failed at {address}: expected a coordinator replica; the server presented CN \'custodian-1\'')
        return FakeConn(self, address)


def sealed():
    return FakeRpcError(FP, 'keyshard is sealed', [status_trailer(FP, 'keyshard is sealed', 'SEALED')])


class Failover(unittest.TestCase):
    def pool(self, world, n=2, **policy):
        return Pool([f'r{i}:1' for i in range(1, n + 1)], world.connector, RetryPolicy(**policy), sleep=lambda s: None)

    def call(self, pool, method='Encrypt', idempotent=True, key_op=True, timeout=5.0, rid='req-1'):
        return pool.call('KeyService', method, None, time.monotonic() + timeout, rid, idempotent, key_op)

    def test_an_idempotent_call_moves_past_a_stopped_replica(self):
        w = World()
        w.down.add('r1:1')
        p = self.pool(w)
        for _ in range(4):
            self.assertEqual(self.call(p), 'Encrypt from r2:1')
        self.assertLessEqual(w.connects.count('r1:1'), 1, 'the stopped replica is skipped once known down')

    def test_an_unsent_call_of_any_kind_moves_on(self):
        w = World()
        w.down.add('r1:1')
        self.assertEqual(self.call(self.pool(w), 'CreateKey', idempotent=False), 'CreateKey from r2:1')
        w = World()
        w.ready['r1:1'] = 'failed'
        self.assertEqual(self.call(self.pool(w), 'CreateKey', idempotent=False), 'CreateKey from r2:1')
        w = World()
        w.impostors.add('r1:1')
        self.assertEqual(self.call(self.pool(w), 'CreateKey', idempotent=False), 'CreateKey from r2:1')

    def test_a_sent_call_that_is_not_idempotent_is_never_repeated(self):
        w = World()
        w.answers['r1:1'] = FakeRpcError(UNAVAILABLE, 'connection reset')
        with self.assertRaises(keyshard.UnavailableError):
            self.call(self.pool(w), 'CreateKey', idempotent=False)
        self.assertEqual([s[0] for s in w.sent], ['r1:1'])

    def test_a_sent_idempotent_call_is_repeated_elsewhere_with_the_same_request_id(self):
        w = World()
        w.answers['r1:1'] = FakeRpcError(UNAVAILABLE, 'connection reset')
        self.assertEqual(self.call(self.pool(w), rid='abc'), 'Encrypt from r2:1')
        self.assertEqual([(s[0], s[2]) for s in w.sent], [('r1:1', 'abc'), ('r2:1', 'abc')])

    def test_a_sealed_replica_is_avoided_for_idempotent_key_operations(self):
        w = World()
        w.answers['r1:1'] = sealed()
        p = self.pool(w)
        self.assertEqual(self.call(p), 'Encrypt from r2:1')
        self.assertEqual(self.call(p), 'Encrypt from r2:1', 'known sealed: skipped')
        with self.assertRaises(keyshard.SealedError):
            self.call(self.pool(w, n=1))
        w2 = World()
        w2.answers['r1:1'] = sealed()
        with self.assertRaises(keyshard.SealedError):
            self.call(self.pool(w2), 'RotateKey', idempotent=False)

    def test_a_status_call_answered_by_a_sealed_replica_does_not_clear_its_sealed_mark(self):
        w = World()
        w.answers[('r1:1', 'Encrypt')] = sealed()
        p = self.pool(w)
        self.assertEqual(self.call(p), 'Encrypt from r2:1')
        for _ in range(2):  # round robin: one of them goes to r1, which answers Status
            p.call('CeremonyService', 'Status', None, time.monotonic() + 5, 'rid', True, False)
        self.assertEqual(self.call(p), 'Encrypt from r2:1')
        self.assertEqual(self.call(p), 'Encrypt from r2:1')
        self.assertEqual(sum(1 for s in w.sent if s[:2] == ('r1:1', 'Encrypt')), 1)

    def test_a_sealed_answer_wins_over_the_unreachable_replicas(self):
        # r1 is down, r2 sealed; both become usable again at once (no skip period), so the
        # attempts alternate until they run out, the last one refused by r1. SEALED is raised.
        w = World()
        w.down.add('r1:1')
        w.answers['r2:1'] = sealed()
        with self.assertRaises(keyshard.SealedError) as cm:
            self.call(self.pool(w, max_attempts=3, max_unhealthy=0))
        self.assertIn('(after 3 attempts; the answer of r2:1; no other replica could take the call)', cm.exception.details)
        self.assertEqual(w.connects.count('r1:1'), 2)

    def test_other_refusals_are_final(self):
        w = World()
        w.answers['r1:1'] = FakeRpcError(FP, 'x', [status_trailer(FP, 'x', 'KEY_DISABLED')])
        with self.assertRaises(keyshard.KeyDisabledError):
            self.call(self.pool(w))
        self.assertEqual(len(w.sent), 1)
        w = World()
        w.answers['r1:1'] = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, 'slow')
        with self.assertRaises(keyshard.KeyshardError) as cm:
            self.call(self.pool(w))
        self.assertEqual(cm.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(len(w.sent), 1)

    def test_every_replica_down_fails_unavailable_naming_the_attempts(self):
        w = World()
        w.down.update({'r1:1', 'r2:1'})
        with self.assertRaises(keyshard.UnavailableError) as cm:
            self.call(self.pool(w, max_attempts=4))
        self.assertIn('after 4 attempts', str(cm.exception))
        self.assertIn('no connection to r', str(cm.exception))

    def test_an_impostor_is_reported(self):
        w = World()
        w.impostors.add('r1:1')
        with self.assertRaisesRegex(keyshard.UnavailableError, "server identity check failed at r1:1.*custodian-1"):
            self.call(self.pool(w, n=1, max_attempts=1))

    def test_the_deadline_bounds_the_retries(self):
        w = World()
        w.down.update({'r1:1', 'r2:1'})
        p = Pool(['r1:1', 'r2:1'], w.connector, RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.05))
        t0 = time.monotonic()
        with self.assertRaises(keyshard.KeyshardError):
            self.call(p, timeout=0.4)
        self.assertLess(time.monotonic() - t0, 1.0)

    def test_attempts_carry_what_is_left_of_the_deadline(self):
        w = World()
        w.answers['r1:1'] = FakeRpcError(UNAVAILABLE, 'reset')
        self.call(self.pool(w), timeout=3)
        self.assertTrue(all(0 < s[3] <= 3 for s in w.sent))

    def test_round_robin_over_healthy_replicas(self):
        w = World()
        p = self.pool(w, n=3)
        got = [self.call(p) for _ in range(6)]
        self.assertEqual(sorted(set(got)), ['Encrypt from r1:1', 'Encrypt from r2:1', 'Encrypt from r3:1'])

    def test_threads_share_a_pool(self):
        import threading
        w = World()
        w.down.add('r1:1')
        p = self.pool(w, n=3)
        results, errors = [], []

        def work():
            try:
                for _ in range(50):
                    results.append(self.call(p))
            except Exception as e:  # noqa: BLE001  reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 400)
        self.assertNotIn('Encrypt from r1:1', results)
        self.assertEqual(w.connects.count('r2:1') + w.connects.count('r3:1'), 2, 'one connection per live replica')

    def test_a_closed_pool_refuses(self):
        p = self.pool(World())
        p.close()
        with self.assertRaises(keyshard.KeyshardError) as cm:
            self.call(p)
        self.assertEqual(cm.exception.code, grpc.StatusCode.CANCELLED)

    def test_retry_policy_is_validated(self):
        for bad in ({'max_attempts': 0}, {'max_attempts': 1.5}, {'connect_timeout': -1}):
            with self.assertRaises(ValueError):
                RetryPolicy(**bad)


if __name__ == '__main__':
    unittest.main()
