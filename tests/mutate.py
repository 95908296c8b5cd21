"""Named mutations: break one rule of the code at a time and check that the
tests guarding it notice (docs/tests.md: "The mutation audit").

    .venv/bin/python tests/mutate.py              # every mutation, a few minutes
    .venv/bin/python tests/mutate.py scopes       # those whose name contains "scopes"
    .venv/bin/python tests/mutate.py --keep DIR   # each run's output there (default: mutation-report/)

Each mutation replaces one piece of text in one file of a copy of the
project (the working tree is never touched) and runs the tests it names,
node ids as pytest takes them. A mutant counts as killed only when one of
those tests FAILS ON AN ASSERTION: a <failure> in pytest's JUnit XML whose
exception is AssertionError or pytest's Failed. An error in a fixture, an
import, syntax or collection error, any other exception and a timeout are
not a kill: they say nothing about the rule.

First a control run: every named test on the unmodified copy must pass (not
skip), else no mutant can be judged and the audit fails. A mutation whose
text is not in its file exactly once (the code changed) fails the audit too.
Each run's output and JUnit XML are kept in the report folder, with the
table printed at the end (summary.md). It exits 1 if anything failed: the
control, a stale mutation, or a mutant that survived and is not marked as
expected to (a few break a second line of defence a first one still holds;
the reason is given beside them).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPORT = ROOT / 'mutation-report'
DEFAULT_TIMEOUT = 300  # seconds for one mutant's tests; the control run gets three times that
KILLING_EXCEPTIONS = ('AssertionError', 'Failed')  # `assert ...`; pytest.fail() and pytest.raises' DID NOT RAISE
NOT_COPIED = {'.venv', '.git', 'instance', '__pycache__', '.pytest_cache', '.hypothesis', 'mutation-report'}


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids: the tests expected to catch it
    survives: str = ''  # why it is harmless, for a mutant expected to survive


R, J, A, P, M = ('tests/test_rules.py::', 'tests/test_jwt_access_tokens.py::', 'tests/test_audiences.py::',
                 'tests/test_private_key_jwt.py::', 'tests/test_admin_api.py::')
KEYS = 'tests/test_signing_keys.py::'
MIGRATIONS_KEEP_ROWS = 'tests/test_migrations.py::test_down_to_an_older_revision_and_up_again_keeps_every_row'
ADMIN_ACTOR = M + 'test_every_change_is_audited_with_the_admin_client_as_actor'
DPOP_HOSTILE = 'tests/test_dpop.py::test_a_proof_failing_a_check_is_refused_at_the_token_endpoint'
DPOP_ROUTES = 'tests/test_dpop.py::test_a_bound_token_is_refused_without_a_proof_of_its_key_on_every_route'

MUTATIONS = [
    Mutation('secret compared with an early-exit ==', 'models.py',
             '        if check_password_hash(self.secret_hash, client_secret):',
             "        if self.secret_hash.rsplit('$', 1)[-1] == __import__('hashlib').pbkdf2_hmac("
             "'sha256', client_secret.encode(), self.secret_hash.split('$')[1].encode(), 1).hex():",
             (R + 'test_secrets_are_compared_in_constant_time',)),
    Mutation('no dummy hash for an unknown client', 'models.py',
             '            check_password_hash(_DUMMY_SECRET_HASH, client_secret or "")\n'
             '            return None, "no_credentials"', '            return None, "no_credentials"',
             (R + 'test_an_unknown_client_costs_one_hash_like_a_wrong_secret',)),
    Mutation('route scopes any-of', 'models.py', 'return set(required) <= set(self.scopes)',
             'return not required or bool(set(required) & set(self.scopes))',
             (R + 'test_a_route_needs_all_of_its_scopes',)),
    Mutation('a revoked token accepted', 'models.py',
             'return not self.is_expired(now) and self.revoked_at is None and not self.client.disabled',
             'return not self.is_expired(now) and not self.client.disabled',
             ('tests/test_revocation.py::test_revoked_token_stops_working_at_once',)),
    Mutation('Retry-After always 1', 'production/bruteforce.py', 'max(1, int(reset_at - time.time()))', '1',
             (R + 'test_retry_after_is_the_time_left_in_the_window',)),
    Mutation('every 4xx counted as a failed authentication', 'production/bruteforce.py',
             'if response.status_code == 401:', 'if response.status_code >= 400:',
             (R + 'test_only_failed_authentication_counts_toward_the_limit',)),
    Mutation('no Referrer-Policy', 'production/headers.py', "('Referrer-Policy', 'no-referrer'),", '',
             (R + 'test_every_answer_carries_the_security_headers',)),
    Mutation('a permissive Content-Security-Policy', 'production/headers.py',
             "default-src 'none'; frame-ancestors 'none'", 'default-src *',
             (R + 'test_every_answer_carries_the_security_headers',)),
    Mutation('no Cache-Control: no-store', 'production/headers.py', "headers.append(('Cache-Control', 'no-store'))",
             'pass', (R + 'test_every_answer_carries_the_security_headers',)),
    Mutation('AUDIT_LOG_FILE ignored', 'production/audit.py',
             "if app.config['AUDIT_LOG_FILE']\n", 'if False\n', (R + 'test_the_audit_log_file_setting',)),
    Mutation('a disabled client audited as a wrong secret', 'models.py', 'return None, "client_disabled"',
             'return None, "wrong_secret"', (R + 'test_a_disabled_clients_refusal_is_audited_as_such',)),
    Mutation('no audience check at the API', 'production/validator.py',
             'if not tok.has_audience(api_resource()):', 'if False:',
             (A + 'test_the_api_refuses_a_token_meant_for_another',)),
    Mutation('any resource may be asked for', 'production/audiences.py',
             'refused = [uri for uri in requested if uri not in allowed]', 'refused = []',
             (A + 'test_a_client_without_resources_gets_this_servers_api',
              A + 'test_a_resource_not_allowed_is_invalid_target')),
    Mutation('an assertion jti accepted twice', 'production/client_assertions.py',
             "if not remember_jti(subject, token.claims['jti'], token.claims['exp']):", 'if False:',
             (P + 'test_a_replayed_jti_is_refused',)),
    Mutation('an assertion jti kept only until its exp', 'production/client_assertions.py',
             'datetime.fromtimestamp(exp + CLOCK_SKEW, UTC)', 'datetime.fromtimestamp(exp, UTC)',
             (P + 'test_a_replay_right_after_a_purge_is_refused',)),
    Mutation('no signature check for an assertion naming no key client', 'production/client_assertions.py',
             "    token, failure = verified(assertion, keys)  # whoever it names, one signature check\n"
             "    if client is None:\n        return None, 'unknown_client'\n",
             "    if client is None:\n        return None, 'unknown_client'\n"
             "    token, failure = verified(assertion, keys)\n",
             (P + 'test_an_assertion_costs_one_signature_check_whoever_it_names',)),
    Mutation('a client\'s key set read for every assertion', 'production/client_assertions.py',
             'keys = client_keys(client.jwks) if', 'keys = KeySet.import_key_set(json.loads(client.jwks)) if',
             (P + 'test_an_assertion_costs_one_signature_check_whoever_it_names',)),
    Mutation('an assertion without a kid checked with a client\'s first key', 'production/client_assertions.py',
             "key, failure = (keys.keys[0], '') if len(keys.keys) == 1 else (None, 'kid_missing_among_several_keys')",
             "key, failure = keys.keys[0], ''", (P + 'test_an_assertion_without_a_kid_needs_a_client_with_one_key',)),
    Mutation('any number of registered keys', 'production/client_assertions.py',
             "if len(parsed['keys']) > MAX_KEYS:", 'if False:', (M + 'test_keys_that_fit_are_registered',)),
    Mutation('any RSA exponent registered', 'production/client_assertions.py',
             'if key.raw_value.public_numbers().e != RSA_EXPONENT:', 'if False:',
             (M + 'test_a_key_that_cannot_sign_or_costs_too_much_to_check_is_refused',)),
    Mutation('no limit on an assertion\'s lifetime', 'production/client_assertions.py',
             "if claims['exp'] > time.time() + current_app.config['CLIENT_ASSERTION_MAX_LIFETIME']:", 'if False:',
             (P + 'test_wrong_claims_are_refused',)),
    Mutation('an assertion for any audience', 'production/client_assertions.py',
             "aud={'essential': True, 'values': audiences()}, ", '', (P + 'test_wrong_claims_are_refused',)),
    Mutation('HMAC and none among the assertion algorithms', 'production/client_assertions.py',
             "SIGNING_ALGS = ['RS256', 'ES256', 'EdDSA', 'Ed25519']",
             "SIGNING_ALGS = ['RS256', 'ES256', 'EdDSA', 'Ed25519', 'HS256', 'none']",
             (P + 'test_alg_none_is_refused', P + 'test_hs256_keyed_with_the_public_key_is_refused',
              P + 'test_metadata_lists_private_key_jwt')),
    Mutation('the admin API without the admin scope', 'production/admin_api.py',
             "require_admin = oauth.require_oauth('admin')", 'require_admin = oauth.require_oauth()',
             (M + 'test_every_route_needs_the_admin_scope',)),
    Mutation('metrics served to anyone', 'production/metrics.py', '    if not allowed():', '    if False:',
             ('tests/test_metrics.py::test_not_public_by_default',)),
    # Issue 24's audit: rules no test caught, or only by accident.
    Mutation('the documented verifier takes a JWT without typ', 'docs/jwt.md',
             "    if token.header.get('typ') != 'at+jwt':", "    if token.header.get('typ', 'at+jwt') != 'at+jwt':",
             ('tests/test_readme.py::test_the_jwt_verifier_refuses_a_jwt_that_is_not_an_access_token',)),
    Mutation('the documented verifier takes a DPoP-bound token as bearer', 'docs/jwt.md',
             "    if 'cnf' in token.claims:", '    if False:',
             ('tests/test_readme.py::test_the_jwt_verifier_refuses_a_dpop_bound_token_sent_as_bearer',)),
    Mutation('JWTs signed without typ at+jwt', 'production/access_tokens.py',
             "jwt.encode({'typ': 'at+jwt', 'alg': alg, 'kid': key.kid}, claims, key, algorithms=[alg])",
             "jwt.encode({'alg': alg, 'kid': key.kid}, claims, key, algorithms=[alg], default_type=None)",
             (J + 'test_a_jwt_holds_the_claims_of_rfc_9068',)),
    Mutation('RSA keys under 2048 bits registered', 'production/client_assertions.py',
             'RSA_BITS = (2048, 4096)', 'RSA_BITS = (1024, 4096)',
             (P + 'test_a_bad_jwks_is_refused_in_one_line', M + 'test_an_rsa_key_under_2048_bits_is_refused')),
    Mutation('a disabled private_key_jwt client authenticates', 'production/client_assertions.py',
             "    if client.disabled:\n        return None, 'client_disabled'",
             "    if False:\n        return None, 'client_disabled'",
             (P + 'test_a_disabled_key_client_can_neither_introspect_nor_revoke',)),
    Mutation('admin changes audited with actor cli', 'production/admin_api.py',
             'return request.oauth.client.client_id  # the admin client', "return 'cli'  # the admin client",
             (M + 'test_register_a_client_and_use_it', ADMIN_ACTOR)),
    Mutation('an admin update audited as cli', 'production/admin_api.py',
             'client_admin.update(client, actor=actor(), **changes)', 'client_admin.update(client, **changes)',
             (ADMIN_ACTOR,)),
    Mutation('an admin disable audited as cli', 'production/admin_api.py',
             'revoked = client_admin.disable(client, actor=actor())', 'revoked = client_admin.disable(client)',
             (ADMIN_ACTOR,)),
    Mutation('metrics trust X-Forwarded-For', 'production/metrics.py',
             "address = ipaddress.ip_address(request.remote_addr or '')",
             "address = ipaddress.ip_address(request.headers.get('X-Forwarded-For', request.remote_addr or '')"
             ".split(',')[0].strip())",
             ('tests/test_metrics.py::test_forwarded_for_is_not_believed_without_trusted_proxies',)),
    Mutation('any refusal reason becomes a metrics label', 'production/metrics.py',
             "AUTHENTICATIONS_REFUSED.labels(REFUSAL_REASONS.get(details.get('reason'), 'bad_assertion')).inc()",
             "AUTHENTICATIONS_REFUSED.labels(str(details.get('reason'))).inc()",
             ('tests/test_metrics.py::test_refusal_reasons_take_only_the_six_documented_values',)),
    Mutation('this server\'s API added to every audience', 'production/audiences.py',
             'return client.resources.split() or [api_resource()]',
             'return list(dict.fromkeys([*client.resources.split(), api_resource()]))',
             (A + 'test_a_token_is_for_the_clients_registered_resources_and_no_other',)),
    Mutation('a cacheable admin 201 with a new secret', 'production/admin_api.py',
             '    return answer, 201, NOT_CACHED', "    return answer, 201, {'Cache-Control': 'private, max-age=600'}",
             (M + 'test_answers_carrying_a_secret_are_never_cached',)),
    Mutation('the batch purge deletes tokens about to expire', 'models.py',
             'if revoked else cls.expires <= utcnow()',
             'if revoked else cls.expires <= utcnow() + timedelta(minutes=5)',
             ('tests/test_storage.py::test_the_servers_batch_purge_deletes_expired_tokens_only',)),
    Mutation('the batch purge deletes revoked tokens', 'production/housekeeping.py',
             'Token.purge(batch, batches=1, revoked=False)', 'Token.purge(batch, batches=1)',
             ('tests/test_storage.py::test_the_servers_batch_purge_deletes_expired_tokens_only',)),
    Mutation('the issuer taken from the Host again', 'production/settings.py',
             "    configured = current_app.config['OAUTH2_ISSUER']\n",
             "    configured = current_app.config['OAUTH2_ISSUER'] or request.url_root\n",
             ('tests/test_hardening.py::test_without_an_issuer_requests_that_need_it_are_503_with_one_log_line',)),
    Mutation('Redis waited for as long as its client likes', 'production/bruteforce.py',
             "REDIS_OPTIONS = {'socket_connect_timeout': 1, 'socket_timeout': 1}", 'REDIS_OPTIONS = {}',
             ('tests/test_outage.py::test_a_redis_outage_is_503_at_client_authentication_then_service_returns[hung]',)),
    Mutation('invisible characters in a name', 'models.py', '    if hidden is not None:', '    if False:',
             (M + 'test_a_name_with_control_or_invisible_characters_is_refused_by_the_api_and_the_cli',)),
    Mutation("no cap on a client's resources", 'production/client_admin.py',
             '    if len(resources) > MAX_RESOURCES:', '    if False:',
             (M + 'test_hostile_resources_are_refused_by_the_api_and_the_cli',)),
    Mutation("a dead worker's live gauge kept", 'gunicorn.conf.py', '    multiprocess.mark_process_dead(worker.pid)',
             '    pass',
             ('tests/test_metrics.py::test_restarted_workers_keep_their_counts_and_drop_their_live_gauge',)),
    # Keys and jtis (issue 24, on the code after issue 22: this server verifies no JWT itself).
    Mutation('a retired key published for the token lifetime only, not plus the cache time',
             'production/signing_keys.py',
             "keep = timedelta(seconds=int(max(lifetimes)) + current_app.config['SIGNING_KEY_CACHE_SECONDS'])",
             'keep = timedelta(seconds=int(max(lifetimes)))',
             (J + 'test_rotation_keeps_live_tokens_working',
              KEYS + 'test_a_clients_longer_lifetime_keeps_the_retired_key_longer')),
    Mutation("a rotation ignores the clients' own token lifetimes", 'production/signing_keys.py',
             '                     *db.session.scalars(db.select(Client.token_lifetime)'
             '.where(Client.token_lifetime.is_not(None))),\n', '',
             (KEYS + 'test_a_clients_longer_lifetime_keeps_the_retired_key_longer',)),
    Mutation('the JWKS serves a key past its publish_until', 'production/signing_keys.py',
             'return db.or_(cls.publish_until.is_(None), cls.publish_until > utcnow())', 'return db.true()',
             (J + 'test_a_retired_key_goes_once_its_tokens_have_expired',)),
    Mutation('a retired key keeps its private PEM', 'production/signing_keys.py',
             'publish_until=cls.retired_publish_until(now, configured_lifetime),\n                private_pem=None))',
             'publish_until=cls.retired_publish_until(now, configured_lifetime)))',
             (KEYS + 'test_a_retired_key_keeps_only_its_public_half_and_still_verifies',)),
    Mutation('the JWKS makes a key', 'production/signing_keys.py',
             "        return {'keys': [jwk for key in SigningKey.published() if (jwk := self._readable(key))]}",
             "        self.signing_key()\n"
             "        return {'keys': [jwk for key in SigningKey.published() if (jwk := self._readable(key))]}",
             (KEYS + 'test_the_jwks_of_a_server_without_a_key_is_empty_and_asking_makes_none',)),
    Mutation('a key stored in clear without the development server', 'production/signing_keys.py',
             "if passphrase() is None and not current_app.config.get('DEVELOPMENT_SERVER'):", 'if False:',
             (KEYS + 'test_without_a_passphrase_no_key_is_made_outside_the_development_server',
              KEYS + 'test_gunicorn_without_a_passphrase_answers_503_and_stores_no_key')),
    Mutation('FLASK_DEVELOPMENT_SERVER taken from the environment', 'production/settings.py',
             "    app.config['DEVELOPMENT_SERVER'] = False\n",
             "    app.config.setdefault('DEVELOPMENT_SERVER', False)\n",
             (KEYS + 'test_gunicorn_without_a_passphrase_answers_503_and_stores_no_key[claims-to-be-the-dev-server]',)),
    Mutation('an assertion jti kept until it is used, not until its exp', 'production/client_assertions.py',
             'expires = datetime.fromtimestamp(exp + CLOCK_SKEW, UTC)', 'expires = datetime.now(UTC)',
             (P + 'test_a_replay_right_after_a_purge_is_refused',
              P + 'test_an_unexpired_jti_survives_every_purge_and_its_replay_is_refused')),
    Mutation('housekeeping purges jtis that have not expired', 'production/replay.py',
             'deleted = db.session.execute(db.delete(cls).where(cls.expires <= utcnow())).rowcount',
             'deleted = db.session.execute(db.delete(cls)).rowcount',
             (P + 'test_an_unexpired_jti_survives_every_purge_and_its_replay_is_refused',)),
    Mutation('migrations on SQLite with foreign keys on', 'migrations/env.py',
             "connection.exec_driver_sql('PRAGMA foreign_keys=OFF')", 'pass',
             (MIGRATIONS_KEEP_ROWS + '[sqlite-0001]', MIGRATIONS_KEEP_ROWS + '[sqlite-0002]')),  # both copy `clients`
    # Memory (issue 26): what the hot path never needs is imported on first use.
    Mutation('Alembic loaded by a server on an up-to-date database', 'production/database.py',
             '        if not at_newest_migration(db.engine):', '        if True:',
             ('tests/test_migrations.py::test_a_server_on_an_up_to_date_database_never_loads_alembic[sqlite]',)),
    Mutation('joserfc loaded by a server that issues no JWT', 'production/access_tokens.py',
             'from flask import current_app\n', 'from flask import current_app\nfrom joserfc import jwt\n',
             (J + 'test_a_server_loads_joserfc_only_when_a_client_first_needs_a_jwt',)),
    # DPoP (RFC 9449 §4.3, §7): each check of a proof, and of the binding.
    Mutation('DPoP: htm not checked', 'production/dpop.py', '    if htm != request.method:  # step 8',
             '    if False:', (DPOP_HOSTILE,)),
    Mutation('DPoP: htu not checked', 'production/dpop.py',
             'if not isinstance(htu, str) or normalized_uri(htu) is None or normalized_uri(htu) != request_uri():',
             'if False:', (DPOP_HOSTILE,)),
    Mutation('DPoP: htu from the Host header', 'production/dpop.py', 'configured = normalized_uri(issuer())',
             "configured = normalized_uri(request.host_url.rstrip('/'))",
             ('tests/test_dpop.py::test_an_htu_with_a_letter_that_lowercases_to_ascii_is_refused',)),
    Mutation('DPoP: ath not checked', 'production/dpop.py',
             "if not isinstance(ath, str) or not hmac.compare_digest(ath.encode('utf-8', 'surrogatepass'), expected):",
             'if False:', (DPOP_ROUTES,)),
    Mutation('DPoP: a proof jti accepted twice at the token endpoint', 'production/dpop.py',
             '    if proof is not None and not remember(proof):', '    if False:',
             ('tests/test_dpop.py::test_a_proof_is_accepted_once_at_the_token_endpoint',)),
    Mutation('DPoP: a proof jti accepted twice at the API', 'production/dpop.py',
             '    if not remember(proof):\n        return InvalidDPoPProofError',
             '    if False:\n        return InvalidDPoPProofError',
             ('tests/test_dpop.py::test_a_proof_is_accepted_once_at_the_api',
              'tests/test_dpop_end_to_end.py::test_a_replayed_proof_is_refused_by_every_worker_of_every_app_server')),
    Mutation('DPoP: jkt not matched', 'production/dpop.py',
             '    if not hmac.compare_digest(proof.jkt, tok.jkt):  # §4.3 step 12', '    if False:', (DPOP_ROUTES,)),
    Mutation('DPoP: a bound token taken as Bearer', 'production/dpop.py', "    if scheme == 'bearer' and not tok.jkt:",
             "    if scheme == 'bearer':", (DPOP_ROUTES,)),
    Mutation('DPoP: the signature not checked', 'production/dpop.py', '    if not verified:  # §4.3 step 6',
             '    if False:', (DPOP_HOSTILE,)),
    Mutation('DPoP: iat not checked', 'production/dpop.py', 'or not now - max_age <= iat <= now + CLOCK_SKEW:',
             'or False:', (DPOP_HOSTILE,)),
]


# --- Running pytest, reading its JUnit XML -----------------------------------


@dataclass
class Run:
    """One pytest run: how it ended and, per test, how it went."""

    returncode: int | None  # None: timed out
    seconds: float
    report: Path  # the output kept for a reader
    outcomes: dict[str, str] = field(default_factory=dict)  # node id -> passed, skipped, error, or failed:<exception>


def node_id(case: ET.Element) -> str:
    """A <testcase>'s pytest node id, from its file (junit_family=xunit1), class and name."""
    file, classname = case.get('file', ''), case.get('classname', '')
    module = file.removesuffix('.py').replace('/', '.')
    classes = classname[len(module) + 1:].split('.') if classname.startswith(module + '.') else []
    return '::'.join([file, *classes, case.get('name', '')])


def outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag == 'failure':
            # pytest's long report ends with the line "path:line: ExceptionName".
            last = (child.text or '').rstrip().rsplit('\n', 1)[-1]
            return 'failed:' + last.rsplit(': ', 1)[-1].strip()
        if child.tag in ('error', 'skipped'):
            return child.tag
    return 'passed'


def run_tests(copy: Path, tests: list[str], report: Path, timeout: float) -> Run:
    """pytest on `tests` in the copy, its output and JUnit XML kept as report.txt and report.xml."""
    junit = report.with_suffix('.xml')
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-o', 'junit_family=xunit1',
               f'--junitxml={junit}', *tests]
    env = {name: value for name, value in os.environ.items() if not name.startswith('PYTEST_')}
    started = time.monotonic()
    with open(report.with_suffix('.txt'), 'w') as output:
        output.write('$ ' + ' '.join(command[1:]) + '\n\n')
        output.flush()
        # A session of its own, so that a timeout stops it and whatever it started.
        process = subprocess.Popen(command, cwd=copy, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
            stop(process)
        seconds = time.monotonic() - started
        ended = f'timed out after {timeout:.0f} s' if returncode is None else f'exit code {returncode}'
        output.write(f'\n[mutate.py: {ended}, {seconds:.1f} s]\n')
    outcomes = {}
    if junit.exists() and returncode is not None:
        try:
            outcomes = {node_id(case): outcome(case) for case in ET.parse(junit).iter('testcase')}  # noqa: S314
        except ET.ParseError:
            outcomes = {}
    return Run(returncode, seconds, report, outcomes)


def stop(process: subprocess.Popen) -> None:
    """Interrupt pytest as Ctrl-C would, so that its fixtures stop the servers
    they started; after 30 s, kill its whole process group."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def matching(named: str, outcomes: dict[str, str]) -> dict[str, str]:
    """The test cases a named node id stands for (a function: each of its parameters)."""
    return {case: result for case, result in outcomes.items()
            if case == named or case.startswith(named + '[') or case.startswith(named + '::')}


# --- Judging ---------------------------------------------------------------------


def control_problems(mutations: list[Mutation], run: Run) -> list[str]:
    """Why the unmodified copy does not let these mutants be judged; [] if it does."""
    if run.returncode is None:
        return [f'the control run timed out (see {run.report.name}.txt)']
    problems = [] if run.returncode == 0 else [f'the control run exited with {run.returncode}']
    for named in dict.fromkeys(test for mutation in mutations for test in mutation.tests):
        cases = matching(named, run.outcomes)
        if not cases:
            problems.append(f'{named}: no such test ran')
        for case, result in cases.items():
            if result != 'passed':
                problems.append(f'{case}: {result} on the unmodified code')
    return problems


def verdict(mutation: Mutation, run: Run) -> tuple[bool, str]:
    """(killed, what happened): killed only by a named test failing on an assertion."""
    if run.returncode is None:
        return False, 'timed out'
    named = {case: result for test in mutation.tests for case, result in matching(test, run.outcomes).items()}
    killers = [case for case, result in named.items() if result.removeprefix('failed:') in KILLING_EXCEPTIONS]
    if killers:
        return True, ', '.join(killers[:3]) + (f' and {len(killers) - 3} more' if len(killers) > 3 else '')
    if not named:
        return False, f'no named test ran (exit code {run.returncode}: an import, syntax or collection error?)'
    others = sorted({result for result in named.values() if result != 'passed'})
    return False, 'no assertion failed' + (f' ({", ".join(others)})' if others else ': every named test passed')


def slug(text: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:60]


def stale(mutations: list[Mutation], root: Path) -> list[str]:
    """A line for each mutation whose text is not in its file exactly once."""
    lines = []
    for mutation in mutations:
        path = root / mutation.path
        found = path.read_text().count(mutation.old) if path.exists() else 0
        if found != 1:
            lines.append(f'mutate.py: STALE MUTATION {mutation.name!r}: its text is in {mutation.path} {found} '
                         'times, not once: the code changed, update the mutation')
    return lines


def copy_project(destination: Path, report: Path) -> None:
    def ignored(folder, names):
        return [name for name in names if name in NOT_COPIED or Path(folder, name).resolve() == report.resolve()]
    shutil.copytree(ROOT, destination, ignore=ignored)


def audit(mutations: list[Mutation], report: Path, timeout: float = DEFAULT_TIMEOUT,
          control_timeout: float | None = None, out=sys.stdout) -> int:
    """Run the control, then each mutant; print the table; 0 if every mutant
    was killed (or survived as expected) after a passing control, else 1."""
    def say(line=''):
        print(line, file=out, flush=True)
    report.mkdir(parents=True, exist_ok=True)
    for old in [*report.glob('[0-9][0-9]-*.txt'), *report.glob('[0-9][0-9]-*.xml'), report / 'summary.md']:
        old.unlink(missing_ok=True)  # this run's files only, not a previous run's
    problems = stale(mutations, ROOT)
    if problems:
        for line in problems:
            say(line)
        say(f'mutate.py: AUDIT FAILED: {len(problems)} stale mutation(s)')
        return 1
    with tempfile.TemporaryDirectory(prefix='oauth-mutants-') as folder:
        copy = Path(folder) / 'project'
        copy_project(copy, report)
        every_test = list(dict.fromkeys(test for mutation in mutations for test in mutation.tests))
        control = run_tests(copy, every_test, report / '00-control', control_timeout or timeout * 3)
        problems = control_problems(mutations, control)
        if problems:
            for line in problems:
                say(f'mutate.py: control: {line}')
            say(f'mutate.py: AUDIT FAILED: the control run on the unmodified code did not pass (see '
                f'{report / "00-control.txt"}): no mutant can be judged')
            return 1
        say(f'control run: {len(control.outcomes)} tests passed on the unmodified code ({control.seconds:.0f} s)')
        rows, killed_count, unexpected = [], 0, 0
        for number, mutation in enumerate(mutations, 1):
            target = copy / mutation.path
            original = target.read_text()
            target.write_text(original.replace(mutation.old, mutation.new))
            try:
                run = run_tests(copy, list(mutation.tests), report / f'{number:02d}-{slug(mutation.name)}', timeout)
            finally:
                target.write_text(original)
            killed, detail = verdict(mutation, run)
            if killed:
                result, killed_count = 'killed', killed_count + 1
            elif mutation.survives:
                result, detail = 'survives, as expected', f'{detail}; harmless: {mutation.survives}'
            else:
                result, unexpected = '**NOT KILLED**', unexpected + 1
            rows.append(f'| {mutation.name} | {result} | {detail} | {run.seconds:.0f} s | {run.report.name}.txt |')
            say(rows[-1])
    table = ['| mutation | result | killed by (or what happened) | time | output |', '|---|---|---|---|---|', *rows]
    summary = (f'{len(mutations)} mutants: {killed_count} killed, {len(mutations) - killed_count - unexpected} '
               f'surviving as expected, {unexpected} not killed; the control run passed')
    (report / 'summary.md').write_text('\n'.join(table) + f'\n\n{summary}\n')
    say('\n' + '\n'.join(table) + f'\n\n{summary}; every run\'s output is in {report}/')
    return 1 if unexpected else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('words', nargs='*', help='only the mutations whose name contains one of these')
    parser.add_argument('--keep', type=Path, default=DEFAULT_REPORT, metavar='DIR',
                        help='where each run\'s output and JUnit XML are kept (default: mutation-report/)')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT, metavar='SECONDS',
                        help=f'for one mutant\'s tests; a timeout is not a kill (default: {DEFAULT_TIMEOUT})')
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.words or any(word in m.name for word in args.words)]
    if not chosen:
        print(f'mutate.py: no mutation\'s name contains any of {args.words}', file=sys.stderr)
        return 1
    return audit(chosen, args.keep.resolve(), args.timeout)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
