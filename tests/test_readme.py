"""The README and every page of docs/, run as a reader would run them.

The conventions (docs/tests.md, "How the documentation is tested"):

- A `sh` block whose first line is `# keep this running in a terminal of its
  own` starts the page's server (`.venv/bin/python server.py`, with any
  FLASK_* settings, or gunicorn). The test starts it on a fresh database, on
  a free port that replaces the page's own (5000, or gunicorn's -b) in every
  block, and stops it when the page is done. A page without one runs its
  blocks with no server.
- Every other `sh` block, and every `python` block, is run, in page order,
  in one bash per page, in a folder that looks like a fresh clone; a block
  that fails fails the test, and no block may print a traceback.
- A `text` or `json` block right after a run block is that block's standard
  output, compared line by line: what differs from run to run (ids, secrets,
  tokens, key ids, times) may differ only for a value of the same kind. An
  HTTP answer (`curl -i`) is compared by its status line, each header shown,
  and its body; a header left out must be one every answer carries (OMITTED).
- A `python` block whose first line is `# from FILE` is an excerpt: its lines
  (but `...`) must be in FILE, in that order.
- Any other block must be marked `(illustration` ... `)` in the paragraph
  just before it, e.g. `(illustration: why)`; `mermaid` diagrams need no mark.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVER_KINDS, free_port, stop_process

PAGES = [Path('README.md'), *sorted(Path('docs').glob('*.md'))]
FENCE = re.compile(r'^```(\w*)\n(.*?)^```$', re.S | re.M)
SERVER_MARK = '# keep this running in a terminal of its own'
ILLUSTRATION = re.compile(r'\(illustration\b')
# Headers every answer carries, left out of the answers shown (docs/endpoints.md says so).
OMITTED = {'date', 'server', 'content-length', 'connection', 'x-content-type-options', 'referrer-policy',
           'content-security-policy', 'x-request-id'}

# Values that differ from run to run, by kind: a shown value of a kind
# matches any value of that kind, and nothing else.
ISO_TIME = r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00'
KINDS = [
    (re.compile(ISO_TIME), ISO_TIME),
    (re.compile(r'(?<![\w.-])\d{10}(?![\w.-])'), r'\d{10}'),  # Unix times
    # ids, secrets, tokens, key ids, request ids: 16 or more URL-safe characters that look random
    (re.compile(r'(?<![\w.-])[\w.-]{16,}(?![\w.-])'), r'[\w.-]{16,}'),
]


def looks_random(word: str) -> bool:
    # A digit, or a capital inside a word: not a name like client_credentials or Content-Security-Policy.
    return any(c.isdigit() for c in word) or re.search('[a-z][A-Z]', word) is not None


def line_pattern(shown: str) -> re.Pattern:
    """A shown line as a pattern: its varying values become their kind."""
    pattern, position = [], 0
    spans = []
    for kind, replacement in KINDS:
        for match in kind.finditer(shown):
            if replacement == KINDS[-1][1] and not looks_random(match.group()):
                continue
            if not any(start < match.end() and match.start() < end for start, end, _ in spans):
                spans.append((match.start(), match.end(), replacement))
    for start, end, replacement in sorted(spans):
        pattern.append(re.escape(shown[position:start]) + replacement)
        position = end
    pattern.append(re.escape(shown[position:]))
    return re.compile(''.join(pattern))


def same_lines(shown: str, actual: str) -> bool:
    shown_lines, actual_lines = shown.rstrip('\n').split('\n'), actual.rstrip('\n').split('\n')
    return len(shown_lines) == len(actual_lines) and all(
        line_pattern(s.rstrip()).fullmatch(a.rstrip()) for s, a in zip(shown_lines, actual_lines, strict=True))


def parse_answer(raw: str) -> tuple[str, dict, str]:
    """(status line, headers, body) of an HTTP answer as curl -i prints it, or as a page shows it."""
    head, _, body = raw.replace('\r\n', '\n').partition('\n\n')
    status, *lines = head.strip().splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(':')
        headers[name.strip().lower()] = value.strip()
    return status.strip(), headers, body.strip()


def compare(shown: str, actual: str, where: str) -> None:
    if not shown.startswith('HTTP/1.1 '):
        assert same_lines(shown, actual), f'{where}: shown\n{shown}\nbut it printed\n{actual}'
        return
    shown_status, shown_headers, shown_body = parse_answer(shown)
    status, headers, body = parse_answer(actual)
    assert status == shown_status, f'{where}: {actual}'
    for name, value in shown_headers.items():
        assert name in headers and line_pattern(value).fullmatch(headers[name]), (where, name, actual)
    for name, value in headers.items():
        left_out = name in OMITTED or (name == 'cache-control' and value == 'no-store')
        assert name in shown_headers or left_out, f'{where}: the answer has {name}: {value}, not shown'
    assert same_lines(shown_body, body), f'{where}: shown\n{shown_body}\nbut the body is\n{body}'


@dataclass
class Block:
    language: str
    body: str
    line: int  # in the page, for messages
    before: str  # the text between the previous block and this one
    output: Block | None = None  # the block showing this one's output


@dataclass
class Page:
    path: Path
    server: str | None = None
    runs: list[Block] = field(default_factory=list)  # run, in order
    excerpts: list[Block] = field(default_factory=list)


def read_page(path: Path) -> Page:
    """The page's blocks, each sorted by the conventions above; a block that
    fits none fails here."""
    text = (ROOT / path).read_text()
    page, blocks, previous_end = Page(path), [], 0
    for match in FENCE.finditer(text):
        blocks.append(Block(match.group(1), match.group(2), text.count('\n', 0, match.start()) + 1,
                            text[previous_end:match.start()]))
        previous_end = match.end()
    after_run = None
    for block in blocks:
        where = f'{path}:{block.line}'
        last_paragraph = block.before.strip().split('\n\n')[-1]
        if block.language == 'mermaid' or ILLUSTRATION.search(last_paragraph):
            after_run = None
        elif block.language == 'sh' and block.body.startswith(SERVER_MARK + '\n'):
            assert page.server is None, f'{where}: a page has one server'
            page.server = block.body.removeprefix(SERVER_MARK + '\n').strip()
            assert '\n' not in page.server, f'{where}: the server is one command'
            after_run = None
        elif block.language == 'python' and block.body.startswith('# from '):
            page.excerpts.append(block)
            after_run = None
        elif block.language in ('sh', 'python'):
            page.runs.append(block)
            after_run = block
        elif after_run is not None and not block.before.strip():
            after_run.output, after_run = block, None
        else:
            pytest.fail(f'{where}: a {block.language or "plain"} block that is neither run nor compared '
                        'must be marked (illustration) in the paragraph before it')
    return page


def reader_folder(tmp_path) -> Path:
    """A folder that looks like a fresh clone to the commands run in it, so
    that the files they write (keys, JWK Sets) land there."""
    folder = tmp_path / 'reader'
    folder.mkdir()
    for name in ('server.py', 'models.py', 'client.py', 'production', 'migrations', 'gunicorn.conf.py',
                 'requirements.txt'):
        (folder / name).symlink_to(ROOT / name)
    return folder


def for_this_run(text: str, page_port: str, port: int) -> str:
    text = text.replace(f'127.0.0.1:{page_port}', f'127.0.0.1:{port}')
    return text.replace('.venv/bin/', f'{Path(sys.executable).parent}/')  # the Python running the suite


class Server:
    """The page's server, as its `keep this running` block starts it."""

    def __init__(self, command: str, folder: Path, env: dict, log: Path):
        found = re.search(r'-b 127\.0\.0\.1:(\d+)|--port (\d+)', command)
        self.page_port = next(group for group in found.groups() if group) if found else '5000'
        self.port = free_port()
        command = for_this_run(command, self.page_port, self.port)
        if not found:
            command += f' --port {self.port}'
        self.url = f'http://127.0.0.1:{self.port}'
        with open(log, 'w') as output:
            self.process = subprocess.Popen(['bash', '-c', f'exec env {command}'], cwd=folder, env=env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, log.read_text()
            try:
                if requests.get(f'{self.url}/healthz', timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f'{command} did not answer: {log.read_text()}'
            time.sleep(0.1)

    def stop(self):
        stop_process(self.process)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


def run_page(page: Page, tmp_path) -> str:
    """Run the page's blocks against its server; compare each output shown.
    The server's log, for messages."""
    folder = reader_folder(tmp_path)
    # A reader has no passphrase for the signing keys unless the page gives one.
    env = {**os.environ, 'DATABASE_URL': f'sqlite:///{tmp_path}/docs.sqlite', 'FLASK_SIGNING_KEY_PASSPHRASE': ''}
    log = tmp_path / 'server.log'
    server = Server(page.server, folder, env, log) if page.server else None
    page_port, port = (server.page_port, server.port) if server else ('5000', free_port())
    if page_port == '5000':  # client.py's default server, as a reader's is
        env['OAUTH_SERVER'] = f'http://127.0.0.1:{port}'
    outputs = tmp_path / 'outputs'
    outputs.mkdir()
    script = ['set -eu -o pipefail']
    for number, block in enumerate(page.runs):
        body = for_this_run(block.body, page_port, port)
        if block.language == 'python':
            body = f"{Path(sys.executable)} - <<'PYTHON'\n{body}PYTHON"
        script.append(f'{{\n{body}\n}} > {outputs}/{number}.out 2> {outputs}/{number}.err')
    try:
        result = subprocess.run(['bash', '-c', '\n'.join(script)], capture_output=True, text=True, timeout=300,
                                cwd=folder, env=env, stdin=subprocess.DEVNULL)
    finally:
        if server:
            server.stop()
    mismatches = []  # every one of the page's, not only the first
    for number, block in enumerate(page.runs):
        where = f'{page.path}:{block.line}'
        out, err = outputs / f'{number}.out', outputs / f'{number}.err'
        assert out.exists(), f'{where} did not run: an earlier block failed: {result.stderr[-2000:]}'
        assert 'Traceback' not in err.read_text(), f'{where} printed a traceback: {err.read_text()}'
        if number == len(page.runs) - 1 or not (outputs / f'{number + 1}.out').exists():
            assert result.returncode == 0, f'{where} failed: {err.read_text()[-2000:]}'
        if block.output is not None:
            try:
                compare(for_this_run(block.output.body, page_port, port), out.read_text(), where)
            except AssertionError as mismatch:
                mismatches.append(str(mismatch).split('\nassert ')[0])
    assert not mismatches, '\n\n'.join(mismatches)
    return log.read_text() if server else ''


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it: the pages run on SQLite')
@pytest.mark.parametrize('path', PAGES, ids=str)
def test_each_page_runs_as_shown(path, tmp_path):
    """Every command of the page is run and every output it shows is compared."""
    page = read_page(path)
    if not page.runs:
        return
    if any('curl' in block.body for block in page.runs) and not shutil.which('curl'):
        pytest.fail('the documentation uses curl (apt-get install curl)')
    server_log = run_page(page, tmp_path)
    assert 'Traceback' not in server_log, server_log


def test_the_pages_that_should_run_do():
    """A page that lost its blocks (a renamed fence, a broken mark) would pass
    silently: these pages must each have runs and compared outputs."""
    expected = {'README.md': 4, 'docs/endpoints.md': 14, 'docs/clients.md': 4, 'docs/jwt.md': 8,
                'docs/private-key-jwt.md': 3, 'docs/metrics.md': 1, 'docs/configuration.md': 2,
                'docs/deploying.md': 1, 'docs/client.md': 3, 'docs/dpop.md': 8}
    for path, at_least in expected.items():
        compared = [block for block in read_page(Path(path)).runs if block.output is not None]
        assert len(compared) >= at_least, (path, len(compared))


@pytest.mark.parametrize('path', PAGES, ids=str)
def test_each_excerpt_is_in_its_file(path):
    for block in read_page(path).excerpts:
        source_name, *lines = block.body.rstrip('\n').split('\n')
        source = (ROOT / source_name.removeprefix('# from ').strip()).read_text().split('\n')
        position = 0
        for line in lines:
            if line.strip() in ('', '...'):
                continue
            found = next((index for index in range(position, len(source)) if source[index].strip() == line.strip()),
                         None)
            assert found is not None, f'{path}:{block.line}: {line.strip()!r} is not in {source_name}, in order'
            position = found + 1


def definition_line(path: Path, name: str) -> int:
    """Where `name` (a function, class, Class.method, module variable or
    config key) is defined in a Python file, decorators included; or the
    first line of another file that starts with `name`."""
    text = path.read_text()
    if path.suffix != '.py':
        return next(number for number, line in enumerate(text.split('\n'), 1) if line.startswith(name))
    nodes = ast.parse(text).body
    *outer, last = name.split('.')
    for part in outer:
        nodes = next(node.body for node in nodes if isinstance(node, ast.ClassDef) and node.name == part)
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == last:
            return min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
        if isinstance(node, ast.Assign) and any(
                (isinstance(t, ast.Name) and t.id == last)  # oauth = ...
                or (isinstance(t, ast.Subscript) and getattr(t.slice, 'value', None) == last)  # app.config[KEY] = ...
                for t in node.targets):
            return node.lineno
    raise LookupError(f'{name} is not defined in {path}')


WALKTHROUGH_LINK = re.compile(r'\[`([\w/.-]+):([\w.-]+)`\]\(([\w/.-]+)#L(\d+)\)')


def test_the_walkthrough_line_numbers_are_true():
    """README's walkthrough links each tutorial step to `file:name` at a
    line; the line must be where that name is defined today."""
    links = WALKTHROUGH_LINK.findall((ROOT / 'README.md').read_text())
    assert len(links) >= 10
    for file, name, target, line in links:
        assert file == target, (file, target)
        assert definition_line(ROOT / file, name) == int(line), f'{file}:{name} is at line ' \
            f'{definition_line(ROOT / file, name)}, not {line}'


LINK = re.compile(r'\]\(([^)\s]+)\)')


@pytest.mark.parametrize('path', PAGES, ids=str)
def test_links_lead_somewhere(path):
    """Relative links of README and docs/ name files that exist (MkDocs
    --strict checks the links between the pages of docs/, anchors too;
    README is not one of its pages)."""
    text = (ROOT / path).read_text()
    for target in LINK.findall(FENCE.sub('', text)):
        if re.match(r'[a-z]+:', target) or target.startswith('#'):
            continue
        file = target.split('#')[0]
        assert (ROOT / path.parent / file).exists(), f'{path}: {target} does not exist'


def jwt_verifier(server_url):
    """docs/jwt.md's `verify` for another API, run against the server at `server_url`."""
    [code] = [block.body for block in read_page(Path('docs/jwt.md')).runs if 'def verify(' in block.body]
    namespace = {}
    exec(code.replace('http://127.0.0.1:5000', server_url), namespace)  # noqa: S102 - the page's own code
    return namespace['verify']


def billing_jwt_client(make_client):
    """(client, secret): a client whose JWTs are for the billing API that the docs' verifier guards."""
    from models import Client, db
    client_id, client_secret = make_client()
    client = Client.find(client_id)
    client.resources, client.token_format = 'https://billing.example.com/api', 'jwt'
    db.session.commit()
    return client, client_secret


def test_the_jwt_verifier_verifies_and_refuses(live_server, make_client, http):
    """docs/jwt.md's verifier, run against a live server: it accepts a good
    token and refuses forged ones and one for another audience."""
    from conftest import token_form

    from models import db
    client, client_secret = billing_jwt_client(make_client)
    client_id = client.client_id
    verify = jwt_verifier(live_server)
    answer = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10)
    claims = verify(answer.json()['access_token'])
    assert claims['client_id'] == client_id and claims['aud'] == 'https://billing.example.com/api'
    header, payload, signature = answer.json()['access_token'].split('.')
    for refused in (f'{header}.{payload}.{signature[:-6]}AAAAAA', f'{header}.{payload[:-4]}.{signature}'):
        with pytest.raises(Exception):  # noqa: B017 - the page says: any exception means 401
            verify(refused)
    client.resources = ''  # a token of another audience (only this server's API) is refused
    db.session.commit()
    own = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10)
    with pytest.raises(Exception):  # noqa: B017
        verify(own.json()['access_token'])


def test_the_jwt_verifier_refuses_a_jwt_that_is_not_an_access_token(live_server, http):
    """RFC 9068 §4: `typ` must be at+jwt, so that an ID token or another JWT
    signed with the same key is not taken for an access token. The tokens
    are signed with the server's own key: only `typ` is wrong."""
    from joserfc import jwt

    from production.signing_keys import key_ring
    http.get('/.well-known/jwks.json')
    verify = jwt_verifier(live_server)
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


def test_the_jwt_verifier_refuses_a_dpop_bound_token_sent_as_bearer(live_server, make_client):
    """RFC 9449 §7.1: a token bound to a key is no bearer token. The same
    client's unbound token is the control."""
    from conftest import token_form

    from client import PrivateKey
    client, client_secret = billing_jwt_client(make_client)
    client_id = client.client_id
    verify = jwt_verifier(live_server)
    unbound = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10)
    assert verify(unbound.json()['access_token'])['client_id'] == client_id
    key = PrivateKey(PrivateKey.generate('ES256')[0])
    bound = requests.post(f'{live_server}/oauth/token', data=token_form(client_id, client_secret), timeout=10,
                          headers={'DPoP': key.dpop_proof('POST', f'{live_server}/oauth/token')})
    assert bound.json()['token_type'] == 'DPoP'
    with pytest.raises(ValueError, match='DPoP-bound'):
        verify(bound.json()['access_token'])


API = 'https://billing.example.com/api/invoices'  # a request to another API, as its verifier sees it


def test_the_dpop_verifier_verifies_and_refuses(live_server, make_client):
    """docs/dpop.md's verifier, run against a live server: good requests,
    an RSA proof over joserfc's default header limit, and every refusal the
    page lists."""
    [code] = [block.body for block in read_page(Path('docs/dpop.md')).runs if 'def verify(' in block.body]
    namespace = {}
    exec(code.replace('http://127.0.0.1:5000', live_server), namespace)  # noqa: S102 - the page's own code
    verify = namespace['verify']
    import base64
    import hashlib

    from conftest import token_form
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from client import PrivateKey
    from models import Client, db
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


# --- The conventions themselves --------------------------------------------


def test_a_shown_value_matches_only_a_value_of_its_kind():
    assert same_lines('{"id": "Kq1oX5cV8bN2mZ7yT4wR0g", "exp": 1795881278}',
                      '{"id": "a7PqR2sT9uV4wX1yZ3bC5d", "exp": 1795999999}')
    assert not same_lines('{"id":1,"name":"Pens"}', '{"id": 1, "name": "Pens"}')  # spaced is not compact
    assert not same_lines('{"scope": "read write"}', '{"scope": "read"}')
    assert not same_lines('{"a": 1, "b": 2}', '{"b": 2, "a": 1}')  # the order shown is the order printed
    assert not same_lines('name:   signer', 'name:   null')
    assert not same_lines('X-Content-Type-Options', 'WWW-Authenticate-Header')  # words are not random
    assert same_lines('created_at: 2026-11-28T02:08:38.075107+00:00', 'created_at: 2026-01-01T00:00:00+00:00')


def test_an_unmarked_block_fails(tmp_path, monkeypatch):
    page = tmp_path / 'page.md'
    page.write_text('Some text.\n\n```yaml\nkey: value\n```\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    with pytest.raises(pytest.fail.Exception, match='must be marked'):
        read_page(Path('page.md'))
    page.write_text('Some text (illustration):\n\n```yaml\nkey: value\n```\n')
    assert read_page(Path('page.md')).runs == []


def test_a_wrong_output_fails(tmp_path, monkeypatch):
    page = tmp_path / 'page.md'
    page.write_text('```sh\necho hello\n```\n\n```text\nhullo\n```\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    with pytest.raises(AssertionError, match='hullo'):
        run_page(read_page(Path('page.md')), tmp_path)

