"""docs/dpop.md, as a reader runs it: its commands against `python server.py`,
each output shown compared with the real one, its Python client code run,
and its verifier run against a live server with good and bad requests."""
import base64
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, token_form
from joserfc import jwt
from joserfc.jwk import ECKey
from test_readme import need_curl, parse_answer, reader_folder, same_shape, start_server

from client import PrivateKey
from models import Client, db

PAGE = ROOT / 'docs' / 'dpop.md'
FENCE = re.compile(r'```(\w*)\n(.*?)```', re.S)


def blocks(kind: str) -> list[tuple[str, str | None, str | None]]:
    """(body, the kind and body of the block right after it, if only blank lines lie between) of each `kind` block."""
    text = PAGE.read_text()
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    result = []
    for (block_kind, body, _, end), following in zip(found, [*found[1:], None], strict=True):
        if block_kind != kind:
            continue
        if following and not text[end:following[2]].strip():
            result.append((body, following[0], following[1]))
        else:
            result.append((body, None, None))
    return result


def test_the_commands_of_the_page_answer_as_it_shows(tmp_path):
    need_curl()
    url, database_url, process = start_server(tmp_path)
    try:
        commands = blocks('sh')
        script = 'set -eu -o pipefail\n' + ''.join(f'echo; echo "@@@ {n}"\n{body}\n' for n, (body, _, _) in
                                                  enumerate(commands))
        script = script.replace('http://127.0.0.1:5000', url).replace('.venv/bin/', f'{Path(sys.executable).parent}/')
        # client.py's default server is http://127.0.0.1:5000; here, the one started above.
        env = {'PATH': '/usr/bin:/bin', 'DATABASE_URL': database_url, 'OAUTH_SERVER': url}
        result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=120,
                                cwd=reader_folder(tmp_path), env=env)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    outputs = re.split(r'^@@@ \d+\n', result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(commands) >= 8
    compared = 0
    for (command, kind, shown), output in zip(commands, outputs, strict=True):
        if kind == 'text' and shown.startswith('HTTP/1.1 '):
            shown_status, shown_headers, shown_body = parse_answer(shown.replace('http://127.0.0.1:5000', url))
            status, headers, body = parse_answer(output)
            assert status == shown_status, (command, output)
            for name, value in shown_headers.items():
                assert headers.get(name) == value, (command, name, output)
            assert same_shape(json.loads(shown_body), json.loads(body)), (command, shown_body, body)
        elif kind == 'json':
            assert same_shape(json.loads(shown), json.loads(output)), (command, shown, output)
        else:
            continue
        compared += 1
    assert compared == len(commands)


def test_the_python_client_code_of_the_page_runs(live_server, monkeypatch, capsys):
    code = next(body for body, _, _ in blocks('python') if 'ApiClient' in body)
    from server import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
    Client.create('Demo client', 'read write', DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    db.session.commit()
    exec(code.replace('http://127.0.0.1:5000', live_server), {})  # noqa: S102 - the page's own code
    assert "'client_id': 'demo-client'" in capsys.readouterr().out


@pytest.fixture
def verify(live_server):
    code = next(body for body, _, _ in blocks('python') if 'def verify(' in body)
    namespace = {}
    exec(code.replace('http://127.0.0.1:5000', live_server), namespace)  # noqa: S102 - the page's own code
    return namespace['verify']


API = 'https://billing.example.com/api/invoices'


def test_the_verifier_of_the_page_verifies_and_refuses(live_server, make_client, verify):
    client_id, secret = make_client()
    client = Client.find(client_id)
    client.resources, client.token_format = 'https://billing.example.com/api', 'jwt'
    db.session.commit()
    key, other = (PrivateKey(PrivateKey.generate(alg)[0]) for alg in ('ES256', 'ES256'))

    def bound_token(with_key):
        answer = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, secret), timeout=10,
                               headers={'DPoP': with_key.dpop_proof('POST', f'{live_server}/oauth/token')})
        assert answer.json()['token_type'] == 'DPoP'
        return answer.json()['access_token']

    access_token = bound_token(key)
    good = key.dpop_proof('GET', API, access_token)
    assert verify(f'DPoP {access_token}', good, 'GET', API)['client_id'] == client_id
    rsa = PrivateKey(PrivateKey.generate('RS256')[0])  # a header over joserfc's default limit
    rsa_token = bound_token(rsa)
    assert verify(f'DPoP {rsa_token}', rsa.dpop_proof('GET', API, rsa_token), 'GET', API)['client_id'] == client_id

    now = int(time.time())
    jwk = key.public_jwk

    def signed(header=None, **claims):
        """A proof of `key` for this request and token, with `header` and `claims` changed."""
        made = {'jti': f'j{time.monotonic_ns()}', 'htm': 'GET', 'htu': API, 'iat': now,
                'ath': base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b'=').decode(),
                **claims}
        return jwt.encode({'typ': 'dpop+jwt', 'alg': 'ES256', 'jwk': jwk, **(header or {})}, made, key.key)

    assert verify(f'DPoP {access_token}', signed(), 'GET', API)  # the control for the refusals made with signed()
    unbound_id, unbound_secret = make_client('unbound')
    unbound = Client.find(unbound_id)
    unbound.resources, unbound.token_format = 'https://billing.example.com/api', 'jwt'
    db.session.commit()
    bearer_token = requests.post(f'{live_server}/oauth/token', data=token_form(unbound_id, unbound_secret),
                                 timeout=10).json()['access_token']
    refused = {
        'replayed': (f'DPoP {access_token}', good, 'GET', API),
        'sent as Bearer': (f'Bearer {access_token}', key.dpop_proof('GET', API, access_token), 'GET', API),
        'a proof of another key': (f'DPoP {access_token}', other.dpop_proof('GET', API, access_token), 'GET', API),
        'a proof for another token': (f'DPoP {access_token}', key.dpop_proof('GET', API, 'another'), 'GET', API),
        'a proof for another URL': (f'DPoP {access_token}', key.dpop_proof('GET', API + 'x', access_token),
                                    'GET', API),
        'a proof for another method': (f'DPoP {access_token}', key.dpop_proof('POST', API, access_token), 'GET', API),
        'a stale proof': (f'DPoP {access_token}', signed(iat=now - 120), 'GET', API),
        'a proof of the future': (f'DPoP {access_token}', signed(iat=now + 60), 'GET', API),
        'a proof typed JWT': (f'DPoP {access_token}', signed({'typ': 'JWT'}), 'GET', API),
        'a private key in the proof': (f'DPoP {access_token}', signed({'jwk': key.key.as_dict(private=True)}),
                                       'GET', API),
        'a proof signed by another key': (f'DPoP {access_token}', jwt.encode(
            {'typ': 'dpop+jwt', 'alg': 'ES256', 'jwk': jwk},
            {'jti': 'x', 'htm': 'GET', 'htu': API, 'iat': now}, ECKey.generate_key('P-256')), 'GET', API),
        'a bearer token with a proof': (f'DPoP {bearer_token}', key.dpop_proof('GET', API, bearer_token), 'GET', API),
    }
    for case, arguments in refused.items():
        with pytest.raises(Exception):  # noqa: B017 - the page says: any exception means 401
            verify(*arguments)
            pytest.fail(f'accepted: {case}')
