"""Client configuration: the CLI's environment variables, arguments over them, refusals that
name what is missing; argument checks of the wrappers. No server is contacted."""
import os
import unittest
from unittest import mock

import keyshard
from tests.support import Pki

ENV = ('KEYSHARD_ADDR', 'KEYSHARD_CA', 'KEYSHARD_CERT', 'KEYSHARD_KEY', 'KEYSHARD_COORDINATOR_IDS')


class Configuration(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        cls.cert, cls.key = cls.pki.issue('app', eku='clientAuth', sans=())

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()

    def env(self, **values):
        clean = {k: v for k, v in os.environ.items() if k not in ENV}
        clean.update(values)
        p = mock.patch.dict(os.environ, clean, clear=True)
        p.start()
        self.addCleanup(p.stop)

    def full_env(self, **extra):
        self.env(**{'KEYSHARD_ADDR': '127.0.0.1:1, 127.0.0.1:2', 'KEYSHARD_CA': self.pki.ca, 'KEYSHARD_CERT': self.cert, 'KEYSHARD_KEY': self.key, **extra})

    def test_everything_from_the_environment(self):
        self.full_env(KEYSHARD_COORDINATOR_IDS='coordinator-1,coordinator-2')
        with keyshard.Client() as c:
            self.assertEqual(c.addresses, ['127.0.0.1:1', '127.0.0.1:2'])
            self.assertEqual(c.coordinator_ids, ['coordinator-1', 'coordinator-2'])
            self.assertEqual(c.timeout, 10.0)

    def test_arguments_win_and_pem_bytes_work(self):
        self.full_env()
        with keyshard.Client(['127.0.0.1:9'], ca=self.pki.read(self.pki.ca), cert=self.pki.read(self.cert), key=self.pki.read(self.key),
                             coordinator_ids=['keyshard-coordinator-0'], timeout=2) as c:
            self.assertEqual(c.addresses, ['127.0.0.1:9'])
            self.assertEqual(c.coordinator_ids, ['keyshard-coordinator-0'])
        with keyshard.Client('127.0.0.1:7,127.0.0.1:8') as c:
            self.assertEqual(c.addresses, ['127.0.0.1:7', '127.0.0.1:8'])
            self.assertIsNone(c.coordinator_ids, 'default: the coordinator naming pattern')

    def test_missing_settings_name_the_variable(self):
        self.env()
        with self.assertRaisesRegex(keyshard.ConfigurationError, 'KEYSHARD_ADDR'):
            keyshard.Client()
        for var in ('KEYSHARD_CA', 'KEYSHARD_CERT', 'KEYSHARD_KEY'):
            with self.subTest(var):
                self.full_env(**{var: ''})
                with self.assertRaisesRegex(keyshard.ConfigurationError, var):
                    keyshard.Client()

    def test_bad_settings_are_refused(self):
        self.full_env()
        for bad in (['127.0.0.1:1', '127.0.0.1:1'], ['nohost'], [], 'a:1,a:1'):
            with self.subTest(bad):
                with self.assertRaises(keyshard.ConfigurationError):
                    keyshard.Client(bad)
        with self.assertRaisesRegex(keyshard.ConfigurationError, 'cannot read'):
            keyshard.Client(ca='/nonexistent/ca.pem')
        with self.assertRaisesRegex(keyshard.ConfigurationError, 'not PEM'):
            keyshard.Client(ca=b'garbage')
        with self.assertRaises(keyshard.ConfigurationError):
            keyshard.Client(coordinator_ids=[])
        with self.assertRaises(keyshard.ConfigurationError):
            keyshard.Client(timeout=0)

    def test_argument_checks_before_any_call(self):
        self.full_env()
        with keyshard.Client() as c:
            with self.assertRaises(TypeError):
                c.encrypt('k', 12)
            with self.assertRaises(TypeError):
                c.encrypt('k', b'x', context={'a': 1})
            with self.assertRaises(ValueError):
                c.sign('k')
            with self.assertRaises(ValueError):
                c.create_key('k', rotation_period=-1)
            with self.assertRaises(ValueError):
                c.get_key('k', timeout=0)


if __name__ == '__main__':
    unittest.main()
