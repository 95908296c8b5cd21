"""The README's examples, run as a reader would run them, in order, against
`python server.py`: each `curl -i` block's answer must match the answer the
README shows after it (status line, every header shown, the body's fields),
so that the README cannot drift from what the server says."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ROOT, free_port, stop_process, wait_for_port

FENCE = re.compile(r'```(\w*)\n(.*?)```', re.S)
# Values that differ from run to run: compared by type, not by value.
VARYING = {'access_token', 'exp', 'iat', 'id', 'created_at', 'client_id', 'client_secret', 'client_id_issued_at'}


def examples(first: str = '## Endpoints', after: str = '## Managing clients'):
    """(command, expected answer) for each sh block directly followed by a
    text block that starts with an HTTP status line, in README order; and
    every sh block, so that the variables they set exist for the next. From
    the section `first` up to the section `after`."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index(f'\n{first}\n'):text.index(f'\n{after}\n')]
    blocks = [(match.group(1), match.group(2), match.start(), match.end()) for match in FENCE.finditer(section)]
    for (kind, body, _, end), following in zip(blocks, [*blocks[1:], None], strict=True):
        if kind != 'sh':
            continue
        expected = None
        if following and following[0] == 'text' and not section[end:following[2]].strip() \
                and following[1].startswith('HTTP/1.1 '):
            expected = following[1]
        yield body, expected


def parse_answer(raw: str) -> tuple[str, dict, str]:
    """(status line, headers, body) of an HTTP answer as curl -i prints it, or as the README shows it."""
    head, _, body = raw.replace('\r\n', '\n').partition('\n\n')
    status, *lines = head.strip().splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(':')
        headers[name.strip().lower()] = value.strip()
    return status.strip(), headers, body.strip()


def same_shape(shown, actual, key=None):
    if isinstance(shown, dict):
        return isinstance(actual, dict) and shown.keys() == actual.keys() and all(
            same_shape(value, actual[name], name) for name, value in shown.items())
    if isinstance(shown, list):
        return isinstance(actual, list) and all(same_shape(shown[0], item) for item in actual) if shown else True
    if key in VARYING:
        return type(shown) is type(actual)
    return shown == actual


# A reader has no passphrase for the signing keys unless the README gives one.
READER = {'FLASK_SIGNING_KEY_PASSPHRASE': ''}
# The README's JWT section exports one, for the server and the commands.
README_PASSPHRASE = {'FLASK_SIGNING_KEY_PASSPHRASE': 'choose a long one'}


def start_server(tmp_path, **env):
    """python server.py with its demo client, on a fresh database of its own:
    (its URL, the database's URL, the process)."""
    port, database_url = free_port(), f'sqlite:///{tmp_path}/readme.sqlite'
    with open(tmp_path / 'server.log', 'w') as log:
        process = subprocess.Popen([sys.executable, 'server.py', '--port', str(port)], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, 'DATABASE_URL': database_url, **READER, **env})
    try:
        wait_for_port(port, process, timeout=60)
    except BaseException:
        stop_process(process)
        raise
    return f'http://127.0.0.1:{port}', database_url, process


@pytest.fixture
def readme_server(tmp_path):
    url, _, process = start_server(tmp_path)
    try:
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def jwt_readme_server(tmp_path):
    """As the README's JWT section starts it: FLASK_ACCESS_TOKEN_FORMAT=jwt python server.py,
    with FLASK_SIGNING_KEY_PASSPHRASE exported."""
    url, database_url, process = start_server(tmp_path, FLASK_ACCESS_TOKEN_FORMAT='jwt', **README_PASSPHRASE)
    try:
        yield url, database_url
    finally:
        stop_process(process)


def need_curl():
    if shutil.which('curl') is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('curl is not installed')
        pytest.skip('the README uses curl (apt-get install curl)')


def run_examples(pairs, server_url, cwd, env=None):
    """Run every block in order in one shell, as a reader pasting them would
    (a marker line separates their outputs), against the server at
    `server_url`; check each answer the README shows."""
    script = 'set -eu -o pipefail\n' + ''.join(f'echo; echo "@@@ {number}"\n{command}\n'
                                   for number, (command, _) in enumerate(pairs))
    script = script.replace('http://127.0.0.1:5000', server_url)
    script = script.replace('.venv/bin/', f'{Path(sys.executable).parent}/')  # the Python running the suite
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=120, cwd=cwd,
                            env={**os.environ, **READER, **(env or {})})
    assert result.returncode == 0, result.stderr
    outputs = re.split(r'^@@@ \d+\n', result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(pairs)
    for (command, expected), output in zip(pairs, outputs, strict=True):
        if expected is None:
            continue
        shown_status, shown_headers, shown_body = parse_answer(expected.replace('http://127.0.0.1:5000', server_url))
        status, headers, body = parse_answer(output)
        assert status == shown_status, (command, output)
        for name, value in shown_headers.items():
            assert headers.get(name) == value, (command, name, output)
        if shown_body:
            assert same_shape(json.loads(shown_body), json.loads(body)), (command, shown_body, body)


def test_the_readme_examples_answer_as_the_readme_shows(readme_server, tmp_path):
    need_curl()
    pairs = list(examples())
    assert sum(expected is not None for _, expected in pairs) >= 14  # the examples were found
    run_examples(pairs, readme_server, cwd=tmp_path)


def reader_folder(tmp_path) -> Path:
    """A folder that looks like a clone of the project to the commands run in
    it (flask --app server, client.py), so that the files they write (keys)
    land there and not in the repository."""
    folder = tmp_path / 'reader'
    folder.mkdir()
    for name in ('server.py', 'models.py', 'client.py', 'production', 'migrations'):
        (folder / name).symlink_to(ROOT / name)
    return folder


def test_the_readme_jwt_and_private_key_examples_answer_as_the_readme_shows(jwt_readme_server, tmp_path):
    need_curl()
    url, database_url = jwt_readme_server
    pairs = list(examples('## JWT access tokens and audiences', '## Configuration'))
    assert sum(expected is not None for _, expected in pairs) >= 7
    # Its commands run in the reader's folder, on the server's database.
    run_examples(pairs, url, cwd=reader_folder(tmp_path), env={'DATABASE_URL': database_url, **README_PASSPHRASE})


def readme_verifier(server_url):
    """The README's `verify` for another API, run against the server at `server_url`."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('\n### Verifying the tokens in another API\n'):]
    start = section.index('```python\n') + len('```python\n')
    code = section[start:section.index('\n```', start)]
    namespace = {}
    exec(code.replace('http://127.0.0.1:5000', server_url), namespace)  # noqa: S102 - the README's own code
    return namespace['verify']


def test_the_readme_verifier_verifies_and_refuses(live_server, make_client, http):
    from conftest import token_form

    from models import Client, db
    client_id, client_secret = make_client()
    client = Client.find(client_id)
    client.resources, client.token_format = 'https://billing.example.com/api', 'jwt'
    db.session.commit()
    verify = readme_verifier(live_server)
    answer = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10)
    claims = verify(answer.json()['access_token'])
    assert claims['client_id'] == client_id and claims['aud'] == 'https://billing.example.com/api'
    header, payload, signature = answer.json()['access_token'].split('.')
    for refused in (f'{header}.{payload}.{signature[:-6]}AAAAAA', f'{header}.{payload[:-4]}.{signature}'):
        with pytest.raises(Exception):  # noqa: B017 - the README says: any exception means 401
            verify(refused)
    # A token of another audience (here: only this server's API) is refused.
    client.resources = ''
    db.session.commit()
    own = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10)
    with pytest.raises(Exception):  # noqa: B017
        verify(own.json()['access_token'])


def test_the_readme_verifier_refuses_a_jwt_that_is_not_an_access_token(live_server, http):
    """RFC 9068 §4: `typ` must be at+jwt, so that an ID token or another JWT
    signed with the same key is not taken for an access token. The tokens
    are signed with the server's own key: only `typ` is wrong."""
    import time

    from joserfc import jwt

    from production.signing_keys import key_ring
    http.get('/.well-known/jwks.json')  # the server's first key, made on first need
    verify = readme_verifier(live_server)
    alg, key = key_ring().signing_key()
    now = int(time.time())
    claims = {'iss': live_server, 'aud': 'https://billing.example.com/api', 'exp': now + 60, 'iat': now,
              'sub': 'svc', 'client_id': 'svc', 'jti': 'j1', 'scope': 'read'}

    def signed(**typ):  # joserfc writes typ: JWT unless told otherwise (default_type)
        return jwt.encode({'alg': alg, 'kid': key.kid, **typ}, claims, key, algorithms=[alg],
                          default_type=None)
    assert verify(signed(typ='at+jwt'))['client_id'] == 'svc'  # the control: the same token, right typ
    for wrong in (signed(), signed(typ='JWT'), signed(typ='id_token+jwt')):
        with pytest.raises(ValueError, match='not a JWT access token'):
            verify(wrong)
