"""Rules the documentation promises that a break in the code once slipped past the
suite (issue #17's audit): each test here fails with that break."""
import json

import pytest
from conftest import TOKEN_URL, basic_header, bearer, run_python, token_form
from flask import jsonify

import models
import server
from models import Client, db


def test_a_route_needs_all_of_its_scopes(app, credentials, get_token):
    # No route of the server asks for two scopes, so one is made here,
    # guarded by the very decorator the routes use.
    @server.oauth.require_oauth('read', 'write')
    def needs_both():
        return jsonify(ok=True)

    def call(token):
        with app.test_request_context('/x', headers=bearer(token)):
            return app.make_response(needs_both())
    read_only = get_token(*credentials, scope='read')
    refused = call(read_only)
    assert refused.status_code == 403 and refused.get_json()['error'] == 'insufficient_scope'
    assert call(get_token(*credentials)).status_code == 200


def test_retry_after_is_the_time_left_in_the_window(http, credentials):
    for _ in range(5):  # AUTH_FAILURES_PER_CLIENT_ADDRESS: 5 per minute
        assert http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong')).status_code == 401
    throttled = http.post(TOKEN_URL, data=token_form(*credentials))
    assert throttled.status_code == 429
    assert 50 <= int(throttled.headers['Retry-After']) <= 60  # the window began a moment ago


def test_only_failed_authentication_counts_toward_the_limit(http, credentials):
    for _ in range(8):  # more than the 5 failures allowed, each a 400 with the right secret
        answer = http.post(TOKEN_URL, data=token_form(*credentials, scope='superuser'))
        assert answer.status_code == 400
        answer = http.post(TOKEN_URL, data={**token_form(*credentials), 'grant_type': 'password'})
        assert answer.status_code == 400
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200


def test_every_answer_carries_the_security_headers(http, credentials, token):
    answers = [http.get('/api/me', headers=bearer(token)), http.post(TOKEN_URL, data=token_form(*credentials)),
               http.get('/no/such/page'), http.get('/.well-known/oauth-authorization-server')]
    for answer in answers:
        # .get(): a missing header fails the assertion (tests/mutate.py counts only those), not a KeyError
        assert answer.headers.get('X-Content-Type-Options') == 'nosniff'
        assert answer.headers.get('Referrer-Policy') == 'no-referrer'
        assert answer.headers.get('Content-Security-Policy') == "default-src 'none'; frame-ancestors 'none'"
        assert answer.headers.get('Cache-Control') == 'no-store'  # per-client data, never cached


def test_the_audit_log_file_setting(tmp_path):
    audit_file = tmp_path / 'audit.log'
    result = run_python('-m', 'flask', '--app', 'server', 'create-client', 'audited', env={
        'DATABASE_URL': f'sqlite:///{tmp_path}/audit.sqlite', 'FLASK_AUDIT_LOG_FILE': str(audit_file)})
    assert result.returncode == 0, result.stderr
    assert audit_file.is_file(), result.stderr
    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [line['event'] for line in lines] == ['client_created']
    assert '"event"' not in result.stderr  # in the file, not on standard error


def test_a_disabled_clients_refusal_is_audited_as_such(http, credentials, no_credentials_in_logs):
    Client.find(credentials[0]).disable()
    db.session.commit()
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 401
    failures = [json.loads(line.split(' INFO ', 1)[1]) for line in no_credentials_in_logs
                if '"event": "authentication_failed"' in line]
    assert [failure['reason'] for failure in failures] == ['client_disabled']


@pytest.fixture
def hashes_checked(monkeypatch):
    """Every stored hash a secret is checked against, in order (the real check runs)."""
    checked = []
    real = models.check_password_hash

    def spy(stored_hash, secret):
        checked.append(stored_hash)
        return real(stored_hash, secret)
    monkeypatch.setattr(models, 'check_password_hash', spy)
    return checked


def test_an_unknown_client_costs_one_hash_like_a_wrong_secret(http, credentials, hashes_checked):
    # RFC 6749 §5.2: unknown client and wrong secret must not be told apart,
    # by their answer or by their time: both check one hash.
    http.post(TOKEN_URL, data=token_form('no-such-client', 'wrong'))
    assert hashes_checked == [models._DUMMY_SECRET_HASH]
    hashes_checked.clear()
    http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong'))
    assert hashes_checked == [Client.find(credentials[0]).secret_hash]


def test_secrets_are_compared_in_constant_time(http, credentials, monkeypatch):
    # Werkzeug's check compares with hmac.compare_digest; a plain == would
    # return as soon as a character differs.
    import hmac

    import werkzeug.security
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(len(a))
        return real(a, b)
    monkeypatch.setattr(werkzeug.security.hmac, 'compare_digest', spy)
    assert http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong')).status_code == 401
    assert http.post(TOKEN_URL, headers=basic_header(*credentials),
                     data={'grant_type': 'client_credentials'}).status_code == 200
    assert len(compared) == 2


LIFETIME_SCRIPT = """
import server
from models import Client, db
from production.database import upgrade_schema
with server.app.app_context():
    upgrade_schema()
    client, secret = Client.create('x', 'read')
    db.session.commit()
    form = {'grant_type': 'client_credentials', 'client_id': client.client_id, 'client_secret': secret}
print(server.app.test_client().post('/oauth/token', data=form).get_json()['expires_in'])
"""


def test_the_token_lifetime_setting(tmp_path):
    result = run_python('-c', LIFETIME_SCRIPT, env={'DATABASE_URL': f'sqlite:///{tmp_path}/lifetime.sqlite',
                                                    'FLASK_OAUTH2_PROVIDER_TOKEN_EXPIRES_IN': '120'})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '120'


def test_a_64_character_request_id_is_kept_and_a_65_character_one_replaced(http):
    kept, long = 'a' * 64, 'b' * 65
    assert http.get('/healthz', headers={'X-Request-ID': kept}).headers['X-Request-ID'] == kept
    replaced = http.get('/healthz', headers={'X-Request-ID': long}).headers['X-Request-ID']
    assert replaced != long and len(replaced) == 32


def test_the_realm_setting(app, http, monkeypatch):
    monkeypatch.setitem(app.config, 'OAUTH2_REALM', 'billing-auth')
    assert http.get('/api/me').headers['WWW-Authenticate'] == \
        'Bearer realm="billing-auth", DPoP algs="RS256 ES256 EdDSA Ed25519"'
    refused = http.post(TOKEN_URL, data=token_form('nobody', 'wrong'))
    assert refused.headers['WWW-Authenticate'] == 'Basic realm="billing-auth"'


def test_the_scopes_supported_setting(tmp_path):
    env = {'DATABASE_URL': f'sqlite:///{tmp_path}/scopes.sqlite',
           'FLASK_OAUTH2_SCOPES_SUPPORTED': '["orders:read", "orders:write"]'}
    accepted = run_python('-m', 'flask', '--app', 'server', 'create-client', 'x', '--scope', 'orders:read', '--json',
                          env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)['scope'] == 'orders:read'
    refused = run_python('-m', 'flask', '--app', 'server', 'create-client', 'y', '--scope', 'read', env=env)
    assert refused.returncode == 2 and "unknown scope 'read'" in refused.stderr


BODY_SCRIPT = """
import server
answer = server.app.test_client().post('/oauth/token', data={'grant_type': 'client_credentials', 'pad': 'x' * 2000})
print(answer.status_code, answer.get_json()['error'])
"""


def test_the_max_content_length_setting(tmp_path):
    result = run_python('-c', BODY_SCRIPT, env={'DATABASE_URL': f'sqlite:///{tmp_path}/body.sqlite',
                                                'FLASK_MAX_CONTENT_LENGTH': '1000'})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['413', 'invalid_request']


def test_purge_tokens_removes_expired_counters_only(app):
    import time

    from production.bruteforce import RateLimitCounter
    db.session.add_all([RateLimitCounter(name='expired', count=3, expires_at=time.time() - 1),
                        RateLimitCounter(name='live', count=3, expires_at=time.time() + 60)])
    db.session.commit()
    result = app.test_cli_runner().invoke(args=['purge-tokens'])
    assert result.exit_code == 0 and '1 expired rate-limit counter(s)' in result.output
    db.session.expire_all()
    assert db.session.scalars(db.select(RateLimitCounter.name)).all() == ['live']


def test_show_client_counts_only_live_tokens(app, http, credentials, get_token):
    from datetime import timedelta

    from models import Token, utcnow
    for _ in range(3):
        get_token(*credentials)
    expired, revoked, _ = db.session.scalars(db.select(Token).order_by(Token.id)).all()
    expired.expires = utcnow() - timedelta(seconds=1)
    Token.revoke_where(Token.id == revoked.id)
    db.session.commit()
    shown = json.loads(app.test_cli_runner().invoke(args=['show-client', credentials[0], '--json']).output)
    assert shown['live_tokens'] == 1
