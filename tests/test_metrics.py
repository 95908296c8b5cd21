"""GET /metrics: who may read it, what it counts (parsed with
prometheus_client's own parser), bounded labels, and the sum over
gunicorn's workers in multiprocess mode."""
import json
import os
import time

import pytest
import requests
from conftest import SERVER_KINDS, TOKEN_URL, bearer, create_client, empty_database, run_python, token_form
from prometheus_client.parser import text_string_to_metric_families


def scrape(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of a metrics page."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def read(http, **kwargs) -> dict:
    response = http.get('/metrics', **kwargs)
    assert response.status_code == 200, response.get_data()
    assert response.headers['Content-Type'].startswith('text/plain; version=')
    return scrape(response.get_data(as_text=True))


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_it_counts_what_happens(http, make_client, credentials, get_token):
    before = read(http)
    token = get_token(*credentials)
    jwt_client = make_client('jwt')
    from models import Client, db
    Client.find(jwt_client[0]).token_format = 'jwt'
    db.session.commit()
    get_token(*jwt_client)
    http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong'))
    http.post(TOKEN_URL, data=token_form('nobody', 'wrong'))
    introspect = {'client_id': credentials[0], 'client_secret': credentials[1]}
    http.post('/oauth/introspect', data={'token': token, **introspect})
    http.post('/oauth/introspect', data={'token': 'unknown', **introspect})
    http.post('/oauth/revoke', data={'token': token, **introspect})
    http.get('/api/me', headers=bearer(token))
    after = read(http)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    issued = 'oauth_tokens_issued_total'
    assert grew(issued, token_format='opaque', grant_type='client_credentials') == 1
    assert grew(issued, token_format='jwt', grant_type='client_credentials') == 1
    assert grew('oauth_client_authentications_refused_total', reason='wrong_secret') == 1
    assert grew('oauth_client_authentications_refused_total', reason='unknown_client') == 1
    assert grew('oauth_introspections_total', active='true') == 1
    assert grew('oauth_introspections_total', active='false') == 1
    assert grew('oauth_tokens_revoked_total') == 1
    assert grew('oauth_request_duration_seconds_count', endpoint='access_token') == 4
    assert grew('oauth_request_duration_seconds_count', endpoint='introspect_token') == 2
    assert grew('oauth_request_duration_seconds_count', endpoint='me') == 1


def test_refusal_reasons_take_only_the_six_documented_values(http, make_client):
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from models import Client, db
    from production.client_assertions import ASSERTION_TYPE
    secret_client, disabled, key_client = make_client('secret'), make_client('disabled'), make_client('keys')
    Client.find(disabled[0]).disable()
    key = ECKey.generate_key('P-256')
    Client.find(key_client[0]).use_keys(json.dumps({'keys': [key.as_dict(private=False, kid='k1')]}))
    db.session.commit()

    def signed_by(client_id, kid='k1'):  # an assertion of this client (RFC 7523), its claims unchecked here
        claims = {'iss': client_id, 'sub': client_id, 'aud': 'http://localhost/oauth/token',
                  'exp': int(time.time()) + 60, 'jti': f'jti-{time.monotonic_ns()}'}
        return {'client_assertion_type': ASSERTION_TYPE, 'client_assertion': jwt.encode(
            {'alg': 'ES256', 'kid': kid}, claims, key, algorithms=['ES256'])}
    failures = [  # each kind of refusal, and the label it counts under
        ({'grant_type': 'client_credentials'}, 'no_credentials'),
        (token_form('nobody', 'wrong'), 'unknown_client'),
        (token_form(secret_client[0], 'wrong'), 'wrong_secret'),
        (token_form(*disabled), 'client_disabled'),
        (token_form(key_client[0], key_client[1]), 'wrong_method'),  # a secret from a key client
        ({'grant_type': 'client_credentials', **signed_by(secret_client[0])}, 'wrong_method'),
        ({'grant_type': 'client_credentials', **signed_by(key_client[0], kid='unknown')}, 'bad_assertion'),
        ({'grant_type': 'client_credentials', **signed_by(key_client[0]), 'client_assertion_type': 'saml'},
         'bad_assertion')]
    refused = 'oauth_client_authentications_refused_total'
    before = read(http)
    for number, (form, _) in enumerate(failures):  # each from an address of its own: no brute-force limit
        assert http.post(TOKEN_URL, data=form, environ_base={'REMOTE_ADDR': f'198.51.100.{number}'}).status_code == 401
    after = read(http)
    expected = {}
    for _, reason in failures:
        expected[reason] = expected.get(reason, 0) + 1
    reasons = {dict(labels)['reason'] for name, labels in after if name == refused}
    assert reasons == {'no_credentials', 'unknown_client', 'wrong_secret', 'client_disabled', 'wrong_method',
                       'bad_assertion'}
    assert {reason: value(after, refused, reason=reason) - value(before, refused, reason=reason)
            for reason in reasons} == expected


def test_throttled_requests_are_counted(http, credentials):
    before = read(http)
    for _ in range(6):  # AUTH_FAILURES_PER_CLIENT_ADDRESS: 5 per minute; the sixth is refused
        http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong'))
    after = read(http)
    name = 'oauth_requests_throttled_total'
    assert value(after, name, limit='auth_failures') - value(before, name, limit='auth_failures') == 1


def test_labels_stay_bounded(http):
    before = read(http)
    for number in range(5):
        http.get(f'/no/such/path/{number}')
        http.post(TOKEN_URL, data=token_form(f'made-up-client-{number}', 'x'), environ_base={
            'REMOTE_ADDR': f'192.0.2.{number}'})
    text = http.get('/metrics').get_data(as_text=True)
    assert 'made-up-client' not in text and '/no/such/path' not in text and '192.0.2.' not in text
    after = scrape(text)
    count = 'oauth_request_duration_seconds_count'
    assert value(after, count, endpoint='other') - value(before, count, endpoint='other') == 5


def test_not_public_by_default(http):
    refused = http.get('/metrics', environ_base={'REMOTE_ADDR': '203.0.113.7'})
    assert refused.status_code == 403 and refused.get_json()['error'] == 'access_denied'
    assert http.get('/metrics', environ_base={'REMOTE_ADDR': '::1'}).status_code == 200


def test_forwarded_for_is_not_believed_without_trusted_proxies(app, http):
    assert app.config['TRUSTED_PROXIES'] == 0  # the default: no proxy in front
    spoofed = {'X-Forwarded-For': '127.0.0.1', 'X-Real-IP': '127.0.0.1', 'Forwarded': 'for=127.0.0.1'}
    refused = http.get('/metrics', headers=spoofed, environ_base={'REMOTE_ADDR': '203.0.113.7'})
    assert refused.status_code == 403 and refused.get_json()['error'] == 'access_denied'


def test_allowed_addresses_and_bearer_token(app, http, monkeypatch):
    outside = {'REMOTE_ADDR': '10.1.2.3'}
    monkeypatch.setitem(app.config, 'METRICS_ALLOWED_ADDRESSES', ['10.0.0.0/8'])
    assert http.get('/metrics', environ_base=outside).status_code == 200
    assert http.get('/metrics').status_code == 403  # loopback is no longer listed
    monkeypatch.setitem(app.config, 'METRICS_ALLOWED_ADDRESSES', [])
    monkeypatch.setitem(app.config, 'METRICS_BEARER_TOKEN', 'scrape-secret-0123456789')
    assert http.get('/metrics', environ_base=outside).status_code == 403
    assert http.get('/metrics', environ_base=outside, headers=bearer('scrape-secret-0123456789')).status_code == 200
    assert http.get('/metrics', environ_base=outside, headers=bearer('scrape-secret-012345678X')).status_code == 403


# --- gunicorn: several workers, one sum ----------------------------------------


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    return empty_database(request, tmp_path, request.param)


def test_workers_add_up_and_the_folder_is_wiped_at_start(database_url, start_gunicorn, tmp_path):
    folder = tmp_path / 'metrics'
    folder.mkdir()
    (folder / 'counter_999999.db').write_bytes(b'\0' * 64)  # a previous run's leftovers
    server_ = start_gunicorn(database_url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(folder))
    assert not (folder / 'counter_999999.db').exists()
    credentials = create_client(database_url)
    for _ in range(12):  # a new connection each time: both workers serve some
        answer = requests.post(f'{server_.url}/oauth/token', data=token_form(*credentials), timeout=10)
        assert answer.status_code == 200
    files = {name.rsplit('_', 1)[1] for name in os.listdir(folder) if name.startswith('counter_')}
    assert len(files) >= 2  # more than one process wrote figures
    deadline, totals = time.monotonic() + 30, set()
    while time.monotonic() < deadline:
        scrapes = [scrape(requests.get(f'{server_.url}/metrics', timeout=10).text) for _ in range(6)]
        totals = {value(s, 'oauth_tokens_issued_total', token_format='opaque', grant_type='client_credentials')
                  for s in scrapes}
        if totals == {12.0}:
            break
        time.sleep(0.2)
    assert totals == {12.0}  # whichever worker answers, the sum of all


def test_metrics_can_be_turned_off(database_url, start_gunicorn):
    server_ = start_gunicorn(database_url, workers=1, FLASK_METRICS_ENABLED='false')
    assert requests.get(f'{server_.url}/metrics', timeout=10).status_code == 404


def test_admin_routes_share_one_label(http, make_client, get_token):
    admin_id, secret = make_client('ops', 'admin')
    headers = bearer(get_token(admin_id, secret))
    before = read(http)
    http.get('/admin/clients', headers=headers)
    http.get(f'/admin/clients/{admin_id}', headers=headers)
    after = read(http)
    count = 'oauth_request_duration_seconds_count'
    assert value(after, count, endpoint='admin') - value(before, count, endpoint='admin') == 2


def test_a_bad_allowed_address_stops_the_server_in_one_line():
    result = run_python('-c', 'import server', env={'FLASK_METRICS_ALLOWED_ADDRESSES': '["10.0.0.0/33"]'})
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert result.stderr.strip().startswith("FLASK_METRICS_ALLOWED_ADDRESSES is '[\"10.0.0.0/33\"]'; it must be")


def worker_pids(master_pid) -> set:
    """The pids of gunicorn's live workers: its master's children (Linux)."""
    children = f'/proc/{master_pid}/task/{master_pid}/children'
    with open(children) as listed:
        return {int(pid) for pid in listed.read().split()}


def pids_of(folder, prefix) -> set:
    return {int(name.removesuffix('.db').rsplit('_', 1)[1]) for name in os.listdir(folder) if name.startswith(prefix)}


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_restarted_workers_keep_their_counts_and_drop_their_live_gauge(start_gunicorn, tmp_path):
    folder, database_url = tmp_path / 'metrics', f'sqlite:///{tmp_path}/restarts.sqlite'
    server_ = start_gunicorn(database_url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(folder),
                             GUNICORN_CMD_ARGS='--max-requests 15')
    credentials = create_client(database_url)
    for _ in range(90):  # about six worker restarts
        answer = requests.post(f'{server_.url}/oauth/token', data=token_form(*credentials), timeout=10)
        assert answer.status_code == 200
    booted = {int(line.rsplit(' ', 1)[1]) for line in server_.log_path.read_text().splitlines()
              if 'Booting worker with pid: ' in line}
    assert len(booted) >= 5  # workers were restarted
    # Once gunicorn has reaped the dead: a live gauge file for each live worker, none for a dead one.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pids_of(folder, 'gauge_livesum_') != worker_pids(server_.process.pid):
        time.sleep(0.2)
    live = worker_pids(server_.process.pid)
    assert len(live) == 2 and pids_of(folder, 'gauge_livesum_') == live
    # The dead workers' counters stay, so that the totals never drop: at most
    # one counter and one histogram file a worker ever started.
    assert live < pids_of(folder, 'counter_') <= booted
    assert pids_of(folder, 'histogram_') <= booted
    assert {name.split('_', 1)[0] for name in os.listdir(folder)} == {'counter', 'histogram', 'gauge'}
    workers, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and workers[-2:] != [2, 2]:  # a scrape may restart a worker: wait for both
        samples = scrape(requests.get(f'{server_.url}/metrics', timeout=10).text)
        # Whichever worker answers, whichever have died: every token counted.
        assert value(samples, 'oauth_tokens_issued_total', token_format='opaque', grant_type='client_credentials') == 90
        assert value(samples, 'oauth_request_duration_seconds_count', endpoint='access_token') == 90
        workers.append(value(samples, 'oauth_gunicorn_workers'))
    assert workers[-2:] == [2, 2] and max(workers) == 2  # never a dead worker's
