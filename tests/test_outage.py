"""A dependency that fails in the middle of a run (PostgreSQL, Redis; stopped
or hung): every endpoint that needs it answers 503 with Retry-After within a
few seconds, the log says one line per failure and no traceback, /healthz
names what failed, and service comes back by itself when the dependency does."""
import time

import pytest
import requests
from conftest import SERVER_KINDS, bearer, create_client, start_postgres, token_form


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, since the test stops it."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
@pytest.mark.parametrize(('storage', 'failed'), [
    ('memory://', {'database': 'unavailable'}),
    ('database://', {'database': 'unavailable', 'rate_limit_storage': 'unavailable'}),
], ids=['memory-limits', 'database-limits'])
def test_a_database_outage_is_503_on_every_endpoint_then_service_returns(own_postgres, start_gunicorn, storage,
                                                                         failed):
    database_url = own_postgres.create_database('outage')
    server = start_gunicorn(database_url, workers=2, FLASK_RATELIMIT_STORAGE_URI=storage)
    client_id, client_secret = create_client(database_url)
    credentials = token_form(client_id, client_secret)
    session = requests.Session()
    access_token = session.post(f'{server.url}/oauth/token', data=credentials, timeout=10).json()['access_token']
    about_token = {'token': access_token, 'client_id': client_id, 'client_secret': client_secret}
    requests_to_make = [
        ('post', '/oauth/token', {'data': credentials}),
        ('get', '/api/me', {'headers': bearer(access_token)}),
        ('get', '/api/items', {'headers': bearer(access_token)}),
        ('post', '/api/items', {'headers': bearer(access_token), 'json': {'name': 'x'}}),
        ('post', '/oauth/introspect', {'data': about_token}),
        ('post', '/oauth/revoke', {'data': about_token}),
    ]
    log_before = server.log_path.read_text()

    own_postgres.pause()
    try:
        for method, path, arguments in requests_to_make * 2:  # each worker's pooled connections are dead
            answer = session.request(method, server.url + path, timeout=30, **arguments)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()['error'] == 'temporarily_unavailable'
            assert int(answer.headers['Retry-After']) > 0
        health = session.get(f'{server.url}/healthz', timeout=30)
        assert (health.status_code, health.json()) == (503, {'status': 'unavailable', 'failed': failed})
    finally:
        own_postgres.resume()

    outage_log = server.log_path.read_text()[len(log_before):]
    assert 'Traceback' not in outage_log
    failures = [line for line in outage_log.splitlines() if 'database error:' in line]
    assert len(failures) == len(requests_to_make) * 2  # one line per failed request

    # Back without a restart: the token issued before the outage still works.
    answers = [session.get(f'{server.url}/api/me', headers=bearer(access_token), timeout=30).status_code
               for _ in range(4)]
    assert answers == [200] * 4
    assert session.post(f'{server.url}/oauth/token', data=credentials, timeout=30).status_code == 200
    # Prometheus counted each of them, whichever worker answered.
    from prometheus_client.parser import text_string_to_metric_families
    families = text_string_to_metric_families(session.get(f'{server.url}/metrics', timeout=30).text)
    errors = [sample.value for family in families for sample in family.samples
              if sample.name == 'oauth_database_errors_total']
    assert errors == [len(requests_to_make) * 2]


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
@pytest.mark.parametrize('failure', ['stopped', 'hung'])
def test_a_redis_outage_is_503_at_client_authentication_then_service_returns(redis_server, start_gunicorn, tmp_path,
                                                                             failure):
    # Fail closed (docs/deploying.md, docs/security.md): while failures cannot be counted, no
    # client authenticates; tokens already issued keep working.
    database_url = f'sqlite:///{tmp_path}/redis-outage.sqlite'
    server = start_gunicorn(database_url, workers=2, FLASK_RATELIMIT_STORAGE_URI=redis_server.url)
    client_id, client_secret = create_client(database_url)
    credentials = token_form(client_id, client_secret)
    session = requests.Session()
    access_token = session.post(f'{server.url}/oauth/token', data=credentials, timeout=10).json()['access_token']
    authenticating = [
        ('/oauth/token', credentials),
        ('/oauth/introspect', {'token': access_token, 'client_id': client_id, 'client_secret': client_secret}),
        ('/oauth/revoke', {'token': 'not-a-token', 'client_id': client_id, 'client_secret': client_secret}),
    ]
    log_before = server.log_path.read_text()

    def answers_within_seconds(method, path, **arguments):
        started = time.monotonic()
        answer = session.request(method, server.url + path, timeout=30, **arguments)
        return answer, time.monotonic() - started

    if failure == 'stopped':
        redis_server.kill()
    else:
        hang = redis_server.hung()
        hang.__enter__()
    try:
        for path, form in authenticating * 2:  # a new connection each time: both workers answer
            answer, seconds = answers_within_seconds('post', path, data=form)
            assert (answer.status_code, answer.json().get('error')) == (503, 'temporarily_unavailable'), answer.text
            assert int(answer.headers['Retry-After']) > 0
            assert seconds < 4, (path, seconds)  # not the Redis client's default 5 s
        me, seconds = answers_within_seconds('get', '/api/me', headers=bearer(access_token))
        assert me.status_code == 200 and seconds < 4  # the API counts nothing: issued tokens work
        health, seconds = answers_within_seconds('get', '/healthz')
        assert (health.status_code, health.json()) == (
            503, {'status': 'unavailable', 'failed': {'rate_limit_storage': 'unavailable'}})
        assert seconds < 4
    finally:
        if failure == 'hung':
            hang.__exit__(None, None, None)

    outage_log = server.log_path.read_text()[len(log_before):]
    assert 'Traceback' not in outage_log
    failures = [line for line in outage_log.splitlines() if 'rate-limit storage error:' in line]
    assert len(failures) == len(authenticating) * 2, outage_log  # one line per refused request

    if failure == 'stopped':
        redis_server.start()  # the same port, empty: counters start again
    for path, form in authenticating * 2:
        assert session.post(server.url + path, data=form, timeout=30).status_code == 200, path
    assert session.get(f'{server.url}/healthz', timeout=30).json() == {'status': 'ok'}
