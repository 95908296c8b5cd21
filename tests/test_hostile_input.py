"""Generated hostile requests (hypothesis): never a 5xx, never HTML, and a
rejected request never changes the database.

Each test sends HOSTILE_EXAMPLES requests (1,500 by default; set the variable
for a longer run). Rate limiting is switched off here, or the limiter would
answer most of them with 429 before they reach the code under test; its own
tests are in test_hardening.py.
"""
import base64
import os
import string

import pytest
from conftest import basic_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server
from models import Client, Item, Token, db

EXAMPLES = int(os.environ.get('HOSTILE_EXAMPLES', '1500'))
hostile = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FIELDS = ['grant_type', 'client_id', 'client_secret', 'scope', 'token', 'token_type_hint', 'name',
          'access_token', 'refresh_token', 'code', 'redirect_uri']
# What a WSGI header can hold: latin-1 text. Non-UTF-8 bytes arrive as \x80-\xff.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=300)
huge = st.integers(1000, 20_000).map(lambda n: 'A' * n)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def authorization(draw, known):
    """Authorization headers: odd schemes, bad base64, non-UTF-8, huge, and real ones."""
    client_id, secret, token, _ = known
    return draw(st.one_of(
        st.none(),
        st.just(f'Bearer {token}'),
        st.just('Basic ' + b64(f'{client_id}:{secret}'.encode())),
        st.builds(lambda s: f'Bearer {s}', header_text),
        st.builds(lambda s: f'Basic {s}', header_text),
        st.builds(lambda b: 'Basic ' + b64(b), st.binary(max_size=200)),
        st.builds(lambda scheme, rest: f'{scheme} {rest}', st.sampled_from(['Digest', 'bearer', 'BASIC', 'MAC', '']),
                  header_text),
        st.builds(lambda s: f'Bearer {s}', huge),
        header_text,
    ))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=20)


@st.composite
def near_valid_request(draw, paths, known):
    """A request that would succeed, with some of its parts replaced by hostile ones,
    so that generated input reaches authentication, scopes and the views."""
    client_id, secret, token, read_only_token = known
    path = draw(st.sampled_from(paths))
    hostile_text = st.one_of(st.text(max_size=200), header_text, huge)
    headers, body = {}, {}
    if path.startswith('/oauth/'):
        method = 'POST'
        form = {'grant_type': 'client_credentials'} if path == '/oauth/token' else {'token': token}
        if draw(st.booleans()):
            form.update(client_id=client_id, client_secret=secret)
        else:
            headers['Authorization'] = 'Basic ' + b64(f'{client_id}:{secret}'.encode())
        for key in list(form):
            if draw(st.integers(0, 3)) == 0:
                form[key] = draw(hostile_text)
        extra = draw(st.dictionaries(st.sampled_from(FIELDS), hostile_text, max_size=3))
        body = {'data': {**form, **extra}}
        if draw(st.integers(0, 4)) == 0:
            headers['Authorization'] = draw(authorization(known)) or ''
    else:
        method = draw(st.sampled_from(['GET', 'POST']))
        bearer = draw(st.sampled_from([token, token, read_only_token]))
        headers['Authorization'] = f'Bearer {bearer}' if draw(st.integers(0, 3)) else draw(authorization(known)) or ''
        if method == 'POST':
            names = st.one_of(st.text(min_size=1, max_size=200), json_values)
            body = {'json': draw(st.one_of(st.builds(lambda name: {'name': name}, names), json_values))}
    return method, path, '', headers, body


@st.composite
def any_request(draw, paths, known):
    client_id, secret, token, _ = known
    form_values = st.one_of(st.text(max_size=200), st.sampled_from(
        ['client_credentials', client_id, secret, token, 'read', 'write read', 'introspect', 'access_token']), huge)
    body = draw(st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), form_values, max_size=6).map(
            lambda form: {'data': form}),
        st.lists(st.tuples(st.sampled_from(FIELDS), form_values), max_size=6).map(
            lambda pairs: {'data': '&'.join(f'{k}={v}' for k, v in pairs),
                           'content_type': 'application/x-www-form-urlencoded'}),
        json_values.map(lambda value: {'json': value}),
        st.binary(max_size=2000).map(lambda raw: {'data': raw, 'content_type': 'application/json'}),
        st.tuples(st.binary(max_size=500), header_text).map(lambda p: {'data': p[0], 'content_type': p[1]}),
    )) or {}
    headers = {}
    auth = draw(authorization(known))
    if auth is not None:
        headers['Authorization'] = auth
    for name in draw(st.lists(st.sampled_from(['X-Request-ID', 'X-Forwarded-For', 'Accept', 'Content-Length',
                                               'Transfer-Encoding', 'Host']), max_size=3, unique=True)):
        headers[name] = draw(header_text)
    query = draw(st.one_of(st.just(''), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=80),
                           st.builds(lambda k, v: f'{k}={v}', st.sampled_from(FIELDS), st.text(max_size=40))))
    method = draw(st.sampled_from(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']))
    path = draw(st.sampled_from(paths) | st.text(string.printable, max_size=40).map(lambda p: '/' + p.lstrip('/')))
    return method, path, query, headers, body


def snapshot():
    db.session.expire_all()
    return tuple(db.session.execute(db.select(
        db.func.count(model.id)) if model is not Token else db.select(
        db.func.count(Token.id), db.func.count(Token.revoked_at))).one()
        for model in (Client, Token, Item)) + tuple(
        db.session.execute(db.select(Client.secret_hash, Client.disabled, Client.scope).order_by(Client.id)).all())


@pytest.fixture
def known(app, credentials, token, get_token, monkeypatch):
    """A real client id, its secret, a token with every scope and a read-only one."""
    monkeypatch.setattr(server.limit_failed_authentication, 'enabled', False)
    # Housekeeping deletes dead rows now and then, whatever the request was;
    # the snapshot is of what a request itself may change.
    monkeypatch.setitem(app.config, 'PURGE_EVERY', 0)
    return credentials[0], credentials[1], token, get_token(*credentials, scope='read')


def check(http, request):
    """Send one generated request; 4xx and 2xx only, errors as JSON, and a
    refusal leaves the database as it was."""
    before = snapshot()
    method, path, query, headers, body = request
    response = http.open(path + ('?' + query if query else ''), method=method, headers=headers, **body)
    # docs/security.md: every answer is a 2xx or a 4xx, never a redirect or a 500.
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, (
        request, response.status_code, response.get_data()[:300])
    if response.status_code < 300 and method != 'HEAD' and response.get_data():
        # JSON, but at /metrics (Prometheus' text format, served to this loopback caller).
        expected = 'text/plain' if path == '/metrics' else 'application/json'
        assert response.mimetype == expected, (request, response.status_code)
    if response.status_code >= 400:
        if method != 'HEAD':  # a HEAD answer has no body
            assert response.mimetype == 'application/json', (request, response.status_code)
            answer = response.get_json()
            assert 'error' in answer or 'error_description' in answer, (request, answer)
        assert snapshot() == before, request



OAUTH_PATHS = ['/oauth/token', '/oauth/revoke', '/oauth/introspect', '/.well-known/oauth-authorization-server']
API_PATHS = ['/api/me', '/api/items', '/api/items', '/api/items/1', '/healthz']


def hostile_request(paths, known):
    return st.one_of(near_valid_request(paths, known), any_request(paths, known))


@pytest.mark.parametrize('paths', [OAUTH_PATHS, API_PATHS], ids=['oauth-endpoints', 'api'])
def test_hostile_requests(http, known, paths):
    @hostile
    @given(hostile_request(paths, known))
    def run(request):
        check(http, request)
    run()


@pytest.mark.parametrize('path', OAUTH_PATHS[:3])
def test_non_ascii_basic_credentials_are_a_json_400_on_every_client_endpoint(http, path):
    # Werkzeug raises a bare ValueError on this header; it must not become a 500.
    response = http.post(path, data={'grant_type': 'client_credentials', 'token': 'x'},
                         headers={'Authorization': 'Basic é'})
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'
    assert response.headers['Pragma'] == 'no-cache'


@pytest.mark.parametrize('path', OAUTH_PATHS[:3])
def test_a_query_that_is_not_utf8_is_a_json_400_on_every_client_endpoint(http, credentials, path):
    response = http.post(path + '?a=\u00e9', data={'grant_type': 'client_credentials', 'token': 'x'},
                         headers=basic_header(*credentials))
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'
