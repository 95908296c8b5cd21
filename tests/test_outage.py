"""A PostgreSQL outage in the middle of a run: every endpoint answers 503 with
Retry-After, the log says one line per failure and no traceback, and service
comes back by itself when the database does."""
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
def test_a_database_outage_is_503_on_every_endpoint_then_service_returns(own_postgres, start_gunicorn):
    database_url = own_postgres.create_database('outage')
    server = start_gunicorn(database_url, workers=2)
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
        assert (health.status_code, health.json()) == (503, {'status': 'unavailable'})
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
