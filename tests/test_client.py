"""client.py against a real HTTP server on loopback: caching, retry, errors."""
import http.server
import json
import socket
import subprocess
import sys
import threading

import pytest
import requests
from conftest import count

import client as client_module
from client import ApiClient, ClientCredentials, ClientError, OAuthError
from models import Client, Token, db


@pytest.fixture
def api(live_server, credentials):
    return ApiClient(live_server, *credentials)


def test_calls_reuse_one_token(api):
    assert api.me()['client_id'] == api.auth.client_id
    for _ in range(5):
        api.me()
    api.create_item('pens')
    assert api.list_items()['items'][0]['name'] == 'pens'
    assert count(Token) == 1  # one token request for eight API calls


def test_token_is_renewed_shortly_before_it_expires(api, monkeypatch):
    api.me()
    issued = api.auth.token['expires_in']
    now = client_module.time.monotonic()
    monkeypatch.setattr(client_module.time, 'monotonic', lambda: now + issued - 29)
    api.me()
    assert count(Token) == 2
    api.me()
    assert count(Token) == 2


def test_invalid_token_triggers_one_new_token_and_one_retry(live_server, credentials):
    auth = ClientCredentials(f'{live_server}/oauth/token', *credentials)
    session = requests.Session()
    assert session.get(f'{live_server}/api/me', auth=auth, timeout=5).status_code == 200
    db.session.execute(db.delete(Token))  # the server forgets the token (as on revocation)
    db.session.commit()
    response = session.get(f'{live_server}/api/me', auth=auth, timeout=5)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert count(Token) == 1


def test_insufficient_scope_is_not_retried(live_server, credentials):
    api = ApiClient(live_server, *credentials, scope='read')
    with pytest.raises(OAuthError) as raised:
        api.create_item('x')
    assert raised.value.status == 403 and raised.value.error == 'insufficient_scope'
    assert count(Token) == 1


def test_basic_authentication(live_server, credentials):
    api = ApiClient(live_server, *credentials, auth_method='basic')
    assert api.me()['client_id'] == credentials[0]


def test_basic_authentication_encodes_special_characters(live_server, make_client):
    credentials = make_client(client_id='id with:colon', client_secret='s3cret+/:%')
    api = ApiClient(live_server, *credentials, auth_method='basic')
    assert api.me()['client_id'] == 'id with:colon'


def test_wrong_secret_is_an_oauth_error(live_server, credentials):
    api = ApiClient(live_server, credentials[0], 'wrong')
    with pytest.raises(OAuthError) as raised:
        api.me()
    assert raised.value.error == 'invalid_client'
    assert 'client id or secret' in str(raised.value)


def test_server_down_is_a_client_error(free_port_url):
    with pytest.raises(ClientError, match='cannot connect'):
        ApiClient(free_port_url, 'a', 'b').me()
    with pytest.raises(ClientError, match='cannot connect'):  # it reads the metadata first
        ApiClient(free_port_url, 'a', 'b').token()


@pytest.fixture
def free_port_url():
    from conftest import free_port
    return f'http://127.0.0.1:{free_port()}'


@pytest.fixture
def canned_server():
    """canned_server(status, content_type, body) -> URL of a loopback server that
    answers every request so; `body` may contain {url}, its own address."""
    servers = []

    def start(status, content_type, body):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                payload = body.replace('{url}', url).encode()
                self.send_response(status)
                self.send_header('Content-Type', content_type)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            do_POST = do_GET

            def log_message(self, *args):
                pass
        httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        url = f'http://127.0.0.1:{httpd.server_port}'
        threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        servers.append(httpd)
        return url
    yield start
    for httpd in servers:
        httpd.shutdown()


@pytest.fixture
def html_server(canned_server):
    return canned_server(502, 'text/html', '<html>Bad Gateway</html>')


def test_non_json_answer_is_a_client_error(html_server):
    with pytest.raises(ClientError, match=r'HTTP 502 with text/html, not JSON'):
        ApiClient(html_server, 'a', 'b').me()


def test_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        url = f'http://127.0.0.1:{listener.getsockname()[1]}'
        with pytest.raises(ClientError, match=r'did not answer within 0\.3 s'):
            ApiClient(url, 'a', 'b', timeout=0.3).me()


def test_script_prints_the_api_answer(live_server, credentials, capsys):
    args = ['--server', live_server, '--client-id', credentials[0], '--client-secret', credentials[1]]
    assert client_module.main(args) == 0
    assert json.loads(capsys.readouterr().out)['client_id'] == credentials[0]
    assert client_module.main([*args, 'add-item', 'pens']) == 0
    assert json.loads(capsys.readouterr().out)['name'] == 'pens'
    assert client_module.main([*args, 'items']) == 0
    assert [i['name'] for i in json.loads(capsys.readouterr().out)['items']] == ['pens']


BILLING, REPORTS = 'https://billing.example.com/api', 'https://reports.example.com/api'


@pytest.fixture
def jwt_credentials(make_client):
    from models import Client
    client_id, client_secret = make_client()
    client = Client.find(client_id)
    client.resources, client.token_format = f'{BILLING} {REPORTS}', 'jwt'
    db.session.commit()
    return client_id, client_secret


def jwt_claims(access_token):
    import base64
    payload = access_token.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))


def test_the_module_asks_for_resources(live_server, jwt_credentials):
    one = ClientCredentials(f'{live_server}/oauth/token', *jwt_credentials, resource=BILLING)
    assert jwt_claims(one.access_token)['aud'] == BILLING
    both = ClientCredentials(f'{live_server}/oauth/token', *jwt_credentials, resource=[BILLING, REPORTS])
    assert jwt_claims(both.access_token)['aud'] == [BILLING, REPORTS]
    api = ApiClient(live_server, *jwt_credentials, resource='https://unknown.example.com')
    with pytest.raises(OAuthError) as refused:
        api.token()
    assert refused.value.error == 'invalid_target'


def test_script_token_with_resources(live_server, jwt_credentials, capsys):
    args = ['--server', live_server, '--client-id', jwt_credentials[0], '--client-secret', jwt_credentials[1]]
    assert client_module.main([*args, '--resource', BILLING, '--resource', REPORTS, 'token']) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer['token_type'] == 'Bearer' and jwt_claims(answer['access_token'])['aud'] == [BILLING, REPORTS]
    assert client_module.main([*args, '--resource', 'https://unknown.example.com', 'token']) == 1
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err.startswith('client.py: invalid_target: ')
    assert len(captured.err.strip().splitlines()) == 1


def test_script_reads_credentials_from_the_environment(live_server, credentials, capsys, monkeypatch):
    monkeypatch.setenv('OAUTH_SERVER', live_server)
    monkeypatch.setenv('OAUTH_CLIENT_ID', credentials[0])
    monkeypatch.setenv('OAUTH_CLIENT_SECRET', credentials[1])
    assert client_module.main([]) == 0
    assert json.loads(capsys.readouterr().out)['client_id'] == credentials[0]


def test_script_errors_are_one_line(live_server, credentials, capsys):
    assert client_module.main(['--server', live_server, '--client-id', credentials[0],
                               '--client-secret', 'wrong']) == 1
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err.strip().splitlines() == [
        'client.py: invalid_client: the server rejected the client id or secret']


def test_script_rejects_a_server_that_is_not_a_url(capsys):
    with pytest.raises(SystemExit) as exited:
        client_module.main(['--server', 'localhost:5000'])
    assert exited.value.code == 2
    assert '--server must be an http(s) URL' in capsys.readouterr().err


def test_endpoints_come_from_the_metadata(live_server, credentials, canned_server):
    # A server whose metadata sends clients to the real token endpoint elsewhere.
    elsewhere = canned_server(200, 'application/json', json.dumps(
        {'issuer': '{url}', 'token_endpoint': f'{live_server}/oauth/token'}))
    api = ApiClient(elsewhere, *credentials)
    assert api.endpoint('token_endpoint') == f'{live_server}/oauth/token'
    assert api.endpoint('revocation_endpoint') == f'{elsewhere}/oauth/revoke'  # not published
    assert api.auth.access_token
    assert count(Token) == 1


def test_a_client_that_asked_for_dpop_discards_a_bearer_token(canned_server):
    # RFC 9449 §5: the protection was asked for, so a token without it is refused.
    server = canned_server(200, 'application/json', '{"access_token": "abc", "token_type": "Bearer"}')
    with pytest.raises(ClientError, match=r"did not answer with a DPoP token \(its token_type: 'Bearer'; does it "
                                          r"support DPoP\?\)"):
        ApiClient(server, 'a', 'b', dpop_key='new').token()
    assert ApiClient(server, 'a', 'b').token()['access_token'] == 'abc'  # the control: asked for Bearer


def test_metadata_of_another_issuer_is_not_used(credentials, canned_server):
    # RFC 8414 §3.3: an impostor's metadata must not redirect the credentials.
    server = canned_server(200, 'application/json', json.dumps(
        {'issuer': 'https://evil.example', 'token_endpoint': 'https://evil.example/token'}))
    assert ApiClient(server, *credentials).endpoint('token_endpoint') == f'{server}/oauth/token'


@pytest.mark.parametrize('status, content_type, body', [
    (404, 'application/json', '{"error": "invalid_request"}'),
    (200, 'text/html', '<html></html>'),
    (200, 'application/json', '["not", "an", "object"]'),
])
def test_without_usable_metadata_the_default_paths_are_used(canned_server, status, content_type, body):
    server = canned_server(status, content_type, body)
    assert ApiClient(server, 'a', 'b').endpoint('token_endpoint') == f'{server}/oauth/token'


def test_discovery_against_the_real_server(live_server, credentials):
    api = ApiClient(live_server, *credentials)
    assert api.metadata['issuer'] == live_server
    assert api.me()['client_id'] == credentials[0]


def test_revoke_the_held_token(api):
    api.me()
    held = api.auth.token['access_token']
    assert api.revoke() is None
    assert api.introspect(held) == {'active': False}
    assert api.me()['client_id']  # a new token is fetched
    assert count(Token) == 2


def test_introspect_a_token(api, credentials):
    api.me()
    claims = api.introspect(api.auth.token['access_token'])
    assert claims['active'] is True and claims['client_id'] == credentials[0]


def test_script_revoke_and_introspect(live_server, credentials, capsys):
    args = ['--server', live_server, '--client-id', credentials[0], '--client-secret', credentials[1]]
    api = ApiClient(live_server, *credentials)
    api.me()
    held = api.auth.token['access_token']
    assert client_module.main([*args, 'introspect', held]) == 0
    assert json.loads(capsys.readouterr().out)['active'] is True
    assert client_module.main([*args, 'revoke', held]) == 0
    assert capsys.readouterr().out.startswith('Revoked: the server accepts this token no more, if it knew it')
    assert client_module.main([*args, 'introspect', held]) == 0
    assert json.loads(capsys.readouterr().out) == {'active': False}
    assert client_module.main([*args, 'revoke']) == 0  # the token this run gets
    db.session.expire_all()
    assert all(t.revoked_at is not None for t in db.session.scalars(db.select(Token)))


def test_script_revoke_of_an_unknown_token_says_what_the_answer_means(live_server, credentials, capsys):
    # RFC 7009 §2.2: the server answers 200 for a token it never issued too.
    args = ['--server', live_server, '--client-id', credentials[0], '--client-secret', credentials[1]]
    assert client_module.main([*args, 'revoke', 'not-a-token']) == 0
    said = capsys.readouterr().out
    assert 'if it knew it at all' in said and 'RFC 7009' in said and '"revoked": true' not in said


def test_a_key_client_refused_hears_of_its_assertion_not_of_a_secret(live_server, make_client, capsys, tmp_path):
    from client import PrivateKey
    _, jwks = PrivateKey.generate()
    client_id, _ = make_client()
    client = Client.find(client_id)
    client.token_endpoint_auth_method, client.jwks = 'private_key_jwt', json.dumps(jwks)
    db.session.commit()
    other_key = tmp_path / 'other.pem'
    other_key.write_text(PrivateKey.generate()[0])  # a key the server does not know for it
    line = script_error(capsys, '--server', live_server, '--client-id', client_id, '--private-key', str(other_key))
    assert line.startswith('client.py: invalid_client: the server rejected the client id or its signed assertion')
    assert 'secret' not in line


def script_error(capsys, *args) -> str:
    """The one line client.py prints on stderr when it fails (exit 1)."""
    assert client_module.main(list(args)) == 1
    captured = capsys.readouterr()
    assert captured.out == ''
    [line] = captured.err.strip().splitlines()
    return line


def test_script_says_which_scopes_a_client_may_ask_for(live_server, make_client, capsys):
    client_id, secret = make_client(scope='read')
    line = script_error(capsys, '--server', live_server, '--client-id', client_id, '--client-secret', secret,
                        '--scope', 'write')
    assert line == 'client.py: invalid_scope: This client may ask for: read.'


def test_script_says_a_client_may_not_get_tokens(live_server, make_client, capsys):
    client_id, secret = make_client(grant_types='')
    line = script_error(capsys, '--server', live_server, '--client-id', client_id, '--client-secret', secret)
    assert line == ('client.py: unauthorized_client: '
                    'This client may not get tokens: it is registered to revoke or introspect only.')


def test_script_says_a_wrong_server_path_is_not_found(live_server, credentials, capsys):
    line = script_error(capsys, '--server', f'{live_server}/nothing-here/', '--client-id', credentials[0],
                        '--client-secret', credentials[1])
    assert line.startswith(f'client.py: {live_server}/nothing-here/oauth/token does not exist (HTTP 404)')


def test_script_says_https_against_plain_http_is_a_tls_problem(live_server, credentials, capsys):
    line = script_error(capsys, '--server', live_server.replace('http://', 'https://'), '--client-id',
                        credentials[0], '--client-secret', credentials[1])
    assert 'TLS handshake' in line and 'does it serve HTTPS?' in line


def test_script_piped_into_a_reader_that_leaves_early_prints_no_traceback(live_server, credentials):
    from conftest import ROOT
    # `client.py | head -c 0`: the reader is gone before the answer is written.
    script = subprocess.Popen([sys.executable, 'client.py', '--server', live_server, '--client-id', credentials[0],
                               '--client-secret', credentials[1]], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.run(['head', '-c', '0'], stdin=script.stdout, capture_output=True, timeout=60)
    script.stdout.close()  # only the reader held the pipe's other end
    _, errors = script.communicate(timeout=60)
    assert reader.returncode == 0
    assert errors == b''
    assert script.returncode == 0
