"""Named mutations: break one rule of the code at a time and check that the
tests notice (README: "Tests").

    .venv/bin/python tests/mutate.py            # every mutation, a few minutes
    .venv/bin/python tests/mutate.py scopes     # the ones whose name contains "scopes"

Each mutation replaces one piece of text in one file of a copy of the
project (the working tree is never touched), runs the tests that guard that
rule, and counts the mutant as killed if they fail. It prints a table and
exits 1 if a mutant that should be killed survived. A few mutants are
expected to survive, each for a reason given beside it: they break a second
line of defence that a first one still holds.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    survives: str = ''  # why it is harmless, for a mutant expected to survive


MUTATIONS = [
    Mutation('secret compared with an early-exit ==', 'models.py',
             '        if check_password_hash(self.secret_hash, client_secret):',
             "        if self.secret_hash.rsplit('$', 1)[-1] == __import__('hashlib').pbkdf2_hmac("
             "'sha256', client_secret.encode(), self.secret_hash.split('$')[1].encode(), 1).hex():",
             ('tests/test_rules.py',)),
    Mutation('no dummy hash for an unknown client', 'models.py',
             '            check_password_hash(_DUMMY_SECRET_HASH, client_secret or "")\n'
             '            return None, "no_credentials"', '            return None, "no_credentials"',
             ('tests/test_rules.py',)),
    Mutation('route scopes any-of', 'models.py', 'return set(required) <= set(self.scopes)',
             'return not required or bool(set(required) & set(self.scopes))', ('tests/test_rules.py',)),
    Mutation('a revoked token accepted', 'models.py',
             'return not self.is_expired(now) and self.revoked_at is None and not self.client.disabled',
             'return not self.is_expired(now) and not self.client.disabled',
             ('tests/test_revocation.py',)),
    Mutation('Retry-After always 1', 'production/bruteforce.py', 'max(1, int(reset_at - time.time()))', '1',
             ('tests/test_rules.py',)),
    Mutation('every 4xx counted as a failed authentication', 'production/bruteforce.py',
             'if response.status_code == 401:', 'if response.status_code >= 400:', ('tests/test_rules.py',)),
    Mutation('no Referrer-Policy', 'production/headers.py', "('Referrer-Policy', 'no-referrer'),", '',
             ('tests/test_rules.py',)),
    Mutation('a permissive Content-Security-Policy', 'production/headers.py',
             "default-src 'none'; frame-ancestors 'none'", 'default-src *', ('tests/test_rules.py',)),
    Mutation('no Cache-Control: no-store', 'production/headers.py', "headers.append(('Cache-Control', 'no-store'))",
             'pass', ('tests/test_rules.py',)),
    Mutation('AUDIT_LOG_FILE ignored', 'production/audit.py',
             "if app.config['AUDIT_LOG_FILE']\n", 'if False\n', ('tests/test_rules.py',)),
    Mutation('a disabled client audited as a wrong secret', 'models.py', 'return None, "client_disabled"',
             'return None, "wrong_secret"', ('tests/test_rules.py',)),
    Mutation('no audience check at the API', 'production/validator.py',
             'if not tok.has_audience(api_resource()):', 'if False:', ('tests/test_audiences.py',)),
    Mutation('any resource may be asked for', 'production/audiences.py',
             'refused = [uri for uri in requested if uri not in allowed]', 'refused = []',
             ('tests/test_audiences.py',)),
    Mutation('an assertion jti accepted twice', 'production/client_assertions.py',
             "if not remember_jti(subject, token.claims['jti'], token.claims['exp']):", 'if False:',
             ('tests/test_private_key_jwt.py',)),
    Mutation('an assertion jti kept only until its exp', 'production/client_assertions.py',
             'datetime.fromtimestamp(exp + CLOCK_SKEW, UTC)', 'datetime.fromtimestamp(exp, UTC)',
             ('tests/test_private_key_jwt.py',)),
    Mutation('no signature check for an assertion naming no key client', 'production/client_assertions.py',
             "    token, failure = verified(assertion, keys)  # whoever it names, one signature check\n"
             "    if client is None:\n        return None, 'unknown_client'\n",
             "    if client is None:\n        return None, 'unknown_client'\n"
             "    token, failure = verified(assertion, keys)\n", ('tests/test_private_key_jwt.py',)),
    Mutation('a client\'s key set read for every assertion', 'production/client_assertions.py',
             'keys = client_keys(client.jwks) if', 'keys = KeySet.import_key_set(json.loads(client.jwks)) if',
             ('tests/test_private_key_jwt.py',)),
    Mutation('an assertion without a kid checked with a client\'s first key', 'production/client_assertions.py',
             "key, failure = (keys.keys[0], '') if len(keys.keys) == 1 else (None, 'kid_missing_among_several_keys')",
             "key, failure = keys.keys[0], ''", ('tests/test_private_key_jwt.py',)),
    Mutation('any number of registered keys', 'production/client_assertions.py',
             "if len(parsed['keys']) > MAX_KEYS:", 'if False:', ('tests/test_admin_api.py',)),
    Mutation('any RSA exponent registered', 'production/client_assertions.py',
             'if key.raw_value.public_numbers().e != RSA_EXPONENT:', 'if False:', ('tests/test_admin_api.py',)),
    Mutation('no limit on an assertion\'s lifetime', 'production/client_assertions.py',
             "if claims['exp'] > time.time() + current_app.config['CLIENT_ASSERTION_MAX_LIFETIME']:", 'if False:',
             ('tests/test_private_key_jwt.py',)),
    Mutation('an assertion for any audience', 'production/client_assertions.py',
             "aud={'essential': True, 'values': audiences()}, ", '', ('tests/test_private_key_jwt.py',)),
    Mutation('HMAC and none among the assertion algorithms', 'production/client_assertions.py',
             "SIGNING_ALGS = ['RS256', 'ES256', 'EdDSA', 'Ed25519']",
             "SIGNING_ALGS = ['RS256', 'ES256', 'EdDSA', 'Ed25519', 'HS256', 'none']",
             ('tests/test_private_key_jwt.py',)),
    Mutation('the admin API without the admin scope', 'production/admin_api.py',
             "require_admin = oauth.require_oauth('admin')", 'require_admin = oauth.require_oauth()',
             ('tests/test_admin_api.py',)),
    Mutation('metrics served to anyone', 'production/metrics.py', '    if not allowed():', '    if False:',
             ('tests/test_metrics.py',)),
]


def run(mutation: Mutation, copy: Path) -> bool:
    """True if the tests kill the mutant."""
    target = copy / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f'mutate: {mutation.name!r}: the text to replace is not in {mutation.path} '
                         'exactly once (the code changed: update the mutation)')
    target.write_text(original.replace(mutation.old, mutation.new))
    try:
        result = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
                                 *mutation.tests], cwd=copy, capture_output=True, text=True, timeout=600)
        return result.returncode != 0
    finally:
        target.write_text(original)


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or any(word in m.name for word in argv)]
    with tempfile.TemporaryDirectory(prefix='oauth-mutants-') as folder:
        copy = Path(folder) / 'project'
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns('.venv', '.git', 'instance', '__pycache__'))
        print('| mutation | tests | result |')
        print('|---|---|---|')
        unexpected = 0
        for mutation in chosen:
            started = time.monotonic()
            killed = run(mutation, copy)
            if killed:
                result = 'killed'
            elif mutation.survives:
                result = f'survives, as expected: {mutation.survives}'
            else:
                result = '**SURVIVED**'
                unexpected += 1
            print(f'| {mutation.name} | {", ".join(Path(t).name for t in mutation.tests)} | {result} '
                  f'({time.monotonic() - started:.0f} s) |', flush=True)
    print(f'\n{len(chosen)} mutants, {unexpected} survived unexpectedly')
    return 1 if unexpected else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
