"""The JWT signing keys in the database: none until a client needs a JWT;
never stored in clear outside the development server; encrypted once a
passphrase is set; a retired key's public half only, kept as long as its
tokens live; a corrupt row answered with a 503; and what a copy of the
database gives a stranger."""
import base64
import json
import re
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import (
    PASSPHRASE,
    SERVER_KINDS,
    TOKEN_URL,
    count,
    create_client,
    empty_database,
    run_python,
    token_form,
)
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from models import Client, Token, db, utcnow
from production.database import upgrade_schema
from production.signing_keys import SigningKey, key_ring


def jwt_request(http, credentials):
    return http.post(TOKEN_URL, data=token_form(*credentials))


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def stored_keys():
    db.session.expire_all()
    return db.session.scalars(db.select(SigningKey).order_by(SigningKey.id)).all()


def segments(token):
    """A JWT's header and claims, read as anyone can read them."""
    return [json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4))) for part in token.split('.')[:2]]


def kid_of(token):
    return segments(token)[0]['kid']


def errors_logged(caplog):
    return [record.getMessage() for record in caplog.records if record.levelname == 'ERROR']


def assert_cannot_sign_now(response):
    assert response.status_code == 503
    assert response.get_json()['error'] == 'temporarily_unavailable'
    assert response.headers['Retry-After'] == '60'


NO_KEY_IN_CLEAR = ('no JWT signing key is made without FLASK_SIGNING_KEY_PASSPHRASE: '
                   'only python server.py, for development, keeps a key in clear')


# --- No key until a client needs a JWT -------------------------------------


def test_the_jwks_of_a_server_without_a_key_is_empty_and_asking_makes_none(http, credentials, get_token):
    response = http.get('/.well-known/jwks.json')
    assert response.status_code == 200 and response.get_json() == {'keys': []}
    get_token(*credentials)  # an opaque token needs no key either
    assert http.get('/.well-known/jwks.json').get_json() == {'keys': []}
    assert stored_keys() == []


# --- Never in clear outside python server.py -------------------------------


def test_without_a_passphrase_no_key_is_made_outside_the_development_server(app, http, jwt_client, make_client,
                                                                            monkeypatch, caplog):
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', '')
    assert_cannot_sign_now(jwt_request(http, jwt_client))
    assert errors_logged(caplog) == [NO_KEY_IN_CLEAR]
    assert 'Traceback' not in caplog.text
    assert stored_keys() == [] and count(Token) == 0
    assert jwt_request(http, make_client('opaque')).status_code == 200  # opaque tokens need no key
    rotated = cli(app, 'rotate-signing-key')
    assert rotated.exit_code == 1 and rotated.output == f'Error: {NO_KEY_IN_CLEAR}\n'
    assert stored_keys() == []


@pytest.mark.parametrize('claims_development', [False, True], ids=['plain', 'claims-to-be-the-dev-server'])
def test_gunicorn_without_a_passphrase_answers_503_and_stores_no_key(start_gunicorn, tmp_path, claims_development):
    # Only python server.py itself may keep a key in clear: an environment
    # that names the flag it sets (FLASK_DEVELOPMENT_SERVER) changes nothing.
    database_url = f'sqlite:///{tmp_path}/no-passphrase.sqlite'
    server = start_gunicorn(database_url, workers=1, FLASK_SIGNING_KEY_PASSPHRASE='',
                            FLASK_ACCESS_TOKEN_FORMAT='jwt',
                            **({'FLASK_DEVELOPMENT_SERVER': 'true'} if claims_development else {}))
    credentials = create_client(database_url)
    answer = requests.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10)
    assert (answer.status_code, answer.json().get('error'), answer.headers.get('Retry-After')) == (
        503, 'temporarily_unavailable', '60')
    log = server.log_path.read_text()
    assert log.count(NO_KEY_IN_CLEAR) == 1 and 'Traceback' not in log
    assert rows(database_url, 'SELECT count(*) FROM signing_keys') == [(0,)]


def test_python_server_py_without_a_passphrase_keeps_a_key_in_clear_and_warns(start_dev_server, tmp_path):
    database_url = f'sqlite:///{tmp_path}/development.sqlite'
    url, log_path = start_dev_server(database_url, FLASK_SIGNING_KEY_PASSPHRASE='', FLASK_ACCESS_TOKEN_FORMAT='jwt')
    answer = requests.post(f'{url}/oauth/token', data=token_form('demo-client', 'demo-secret'), timeout=10)
    assert answer.status_code == 200
    [(pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys')
    assert pem.startswith('-----BEGIN PRIVATE KEY-----')
    assert log_path.read_text().count('JWT signing keys are stored unencrypted: set FLASK_SIGNING_KEY_PASSPHRASE') == 1


# --- A key in clear is encrypted once a passphrase is set ------------------


def store_key_in_clear(database_url):
    """A database at the newest revision holding a signing key in clear, as
    python server.py without a passphrase (or an older release) left it: its kid."""
    upgraded = run_python('-m', 'flask', '--app', 'server', 'db', 'upgrade', env={'DATABASE_URL': database_url})
    assert upgraded.returncode == 0, upgraded.stderr
    key = ECKey.generate_key('P-256', private=True)
    kid = key.thumbprint()
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(SigningKey.__table__.insert(), {
            'kid': kid, 'alg': 'ES256', 'created_at': utcnow(), 'private_pem': key.as_pem(private=True).decode(),
            'public_jwk': json.dumps(key.as_dict(private=False, kid=kid, alg='ES256', use='sig'))})
    engine.dispose()
    return kid


def rows(database_url, statement):
    """The rows of a statement (SQL text, or SQLAlchemy's, which reads each
    column as its model's type) on a database of the test's own."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            statement = sa.text(statement) if isinstance(statement, str) else statement
            return [tuple(row) for row in connection.execute(statement)]
    finally:
        engine.dispose()


def encrypted_with_the_passphrase(pem, kid):
    assert pem.startswith('-----BEGIN ENCRYPTED PRIVATE KEY-----')
    return ECKey.import_key(pem, password=PASSPHRASE).thumbprint() == kid


def encrypted_line(kid):
    return f'encrypted JWT signing key(s) {kid}, stored in clear until now, with FLASK_SIGNING_KEY_PASSPHRASE'


def test_a_key_in_clear_is_encrypted_when_the_app_first_uses_the_database_once(app, http, jwt_client, monkeypatch,
                                                                                caplog):
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', '')
    monkeypatch.setitem(app.config, 'DEVELOPMENT_SERVER', True)
    kid = kid_of(jwt_request(http, jwt_client).get_json()['access_token'])
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', PASSPHRASE)
    monkeypatch.setitem(app.config, 'DEVELOPMENT_SERVER', False)
    caplog.clear()
    upgrade_schema()
    [key] = stored_keys()
    assert encrypted_with_the_passphrase(key.private_pem, kid)
    assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == [encrypted_line(kid)]
    upgrade_schema()  # again: nothing to do, nothing said
    assert stored_keys()[0].private_pem == key.private_pem
    assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == [encrypted_line(kid)]
    key_ring().forget()
    assert kid_of(jwt_request(http, jwt_client).get_json()['access_token']) == kid  # the same key signs on


def test_without_a_passphrase_a_command_says_a_key_is_in_clear(tmp_path):
    database_url = f'sqlite:///{tmp_path}/clear.sqlite'
    kid = store_key_in_clear(database_url)
    listed = run_python('-m', 'flask', '--app', 'server', 'list-clients',
                        env={'DATABASE_URL': database_url, 'FLASK_SIGNING_KEY_PASSPHRASE': ''})
    assert listed.returncode == 0
    assert listed.stderr.count(f'JWT signing key(s) {kid} are stored in clear: set FLASK_SIGNING_KEY_PASSPHRASE') == 1


@pytest.mark.parametrize('entry_point', ['command', 'python server.py'])
def test_every_entry_point_encrypts_a_key_in_clear(entry_point, start_dev_server, tmp_path):
    database_url = f'sqlite:///{tmp_path}/clear.sqlite'
    kid = store_key_in_clear(database_url)
    if entry_point == 'command':
        result = run_python('-m', 'flask', '--app', 'server', 'list-clients', env={'DATABASE_URL': database_url})
        assert result.returncode == 0
        said = result.stderr
    else:
        _, log_path = start_dev_server(database_url)
        said = log_path.read_text()
    assert said.count(encrypted_line(kid)) == 1
    [(pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys')
    assert encrypted_with_the_passphrase(pem, kid)


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    return empty_database(request, tmp_path, request.param)


def test_gunicorn_workers_starting_together_encrypt_a_key_in_clear_once(database_url, start_gunicorn):
    kid = store_key_in_clear(database_url)
    server = start_gunicorn(database_url, workers=4)
    answers = []

    def first_requests():  # a new connection each: the workers' first requests, at once
        answers.extend(requests.get(f'{server.url}/.well-known/jwks.json', timeout=30).status_code for _ in range(5))
    threads = [threading.Thread(target=first_requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [200] * 40
    assert server.log_path.read_text().count(encrypted_line(kid)) == 1
    [(pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys')
    assert encrypted_with_the_passphrase(pem, kid)


# --- A retired key keeps its public half only ------------------------------


def test_a_retired_key_keeps_only_its_public_half_and_still_verifies(app, http, jwt_client):
    old_token = jwt_request(http, jwt_client).get_json()['access_token']
    assert cli(app, 'rotate-signing-key').exit_code == 0
    old, new = stored_keys()
    assert old.kid == kid_of(old_token) and old.retired_at is not None
    assert old.private_pem is None
    assert new.private_pem.startswith('-----BEGIN ENCRYPTED PRIVATE KEY-----')
    published = KeySet.import_key_set(http.get('/.well-known/jwks.json').get_json())
    assert {key.kid for key in published.keys} == {old.kid, new.kid}
    assert jwt.decode(old_token, published, algorithms=['ES256']).claims['client_id'] == jwt_client[0]


# --- A corrupt row is a 503, one log line, and the JWKS serves the rest ----


def other_type_pem(key):
    return RSAKey.generate_key(2048, private=True).as_pem(private=True, password=PASSPHRASE).decode()


def other_key_pem(key):
    return ECKey.generate_key('P-256', private=True).as_pem(private=True, password=PASSPHRASE).decode()


CORRUPTIONS = {
    # name: (the change to the signing key's row, why it is unusable, the JWKS still serves its public half)
    'empty private key': ({'private_pem': ''}, 'it has no private key', True),
    'no private key': ({'private_pem': None}, 'it has no private key', True),
    'unreadable private key': ({'private_pem': '-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n'},
                               'its private key is unreadable', True),
    'a PEM of another key type': ({'private_pem': other_type_pem}, 'its private key is not for ES256', True),
    'another key of the same type': ({'private_pem': other_key_pem}, 'its private key is not the key its kid names',
                                     True),
    'unreadable public JWK': ({'public_jwk': '{"kty": "EC", "crv": "P-256", "x": "%%%"'},
                              'its public JWK is unreadable', False),
    'a public JWK of another key': ({'public_jwk': json.dumps(ECKey.generate_key('P-256').as_dict(private=False))},
                                    'its public JWK is not the key its kid names', False),
    'unknown alg': ({'alg': 'HS256'}, "its alg 'HS256' is not one of ES256, RS256", False),
}


@pytest.mark.parametrize('corruption', CORRUPTIONS)
def test_a_corrupt_signing_key_is_a_503_with_one_log_line_and_the_jwks_serves_what_it_can(
        app, http, jwt_client, make_client, caplog, corruption):
    change, reason, still_published = CORRUPTIONS[corruption]
    kid_of(jwt_request(http, jwt_client).get_json()['access_token'])  # a first key, which the rotation retires
    assert cli(app, 'rotate-signing-key').exit_code == 0
    retired, signing = stored_keys()
    for column, value in change.items():
        setattr(signing, column, value(signing) if callable(value) else value)
    db.session.commit()
    key_ring().forget()
    caplog.clear()
    assert_cannot_sign_now(jwt_request(http, jwt_client))
    assert_cannot_sign_now(jwt_request(http, jwt_client))
    expected = f'JWT signing key {signing.kid} is unusable: {reason}'
    assert errors_logged(caplog) == [expected] * 2  # one line a request, no traceback
    assert all(record.exc_info is None for record in caplog.records) and 'Traceback' not in caplog.text
    caplog.clear()
    for _ in range(2):
        answer = http.get('/.well-known/jwks.json')
        assert answer.status_code == 200
        served = {key['kid'] for key in answer.get_json()['keys']}
        assert served == ({retired.kid, signing.kid} if still_published else {retired.kid})
    # The JWKS says once per process what it leaves out; a corrupt private half is not its concern.
    assert errors_logged(caplog) == ([] if still_published else [f'{expected}; the JWKS leaves it out'])
    assert jwt_request(http, make_client('opaque')).status_code == 200  # opaque tokens need no key
    # The way out: a new key.
    assert cli(app, 'rotate-signing-key').exit_code == 0
    assert jwt_request(http, jwt_client).status_code == 200


def test_the_jwks_never_serves_a_private_member_even_if_the_row_holds_one(app, http, jwt_client):
    jwt_request(http, jwt_client)
    [key] = stored_keys()
    private = ECKey.import_key(key.private_pem, password=PASSPHRASE)
    key.public_jwk = json.dumps(private.as_dict(private=True, kid=key.kid, alg='ES256', use='sig'))
    db.session.commit()
    key_ring().forget()
    [served] = http.get('/.well-known/jwks.json').get_json()['keys']
    assert 'd' not in served and served['kid'] == key.kid


# --- How long a retired key stays published --------------------------------


def publish_time(key):
    return (key.publish_until - key.retired_at).total_seconds()


def test_a_clients_longer_lifetime_keeps_the_retired_key_longer(app, http, jwt_client, make_client):
    jwt_request(http, jwt_client)
    Client.find(make_client('long-lived')[0]).token_lifetime = 7200  # no token of it yet
    db.session.commit()
    assert cli(app, 'rotate-signing-key').exit_code == 0
    assert publish_time(stored_keys()[0]) == 7200 + 60


def test_a_live_token_expiring_later_keeps_the_retired_key_until_then(app, http, jwt_client):
    # A token stamped by a server whose clock runs a day ahead: its lifetime
    # is an hour, but it expires after anything a lifetime alone would give.
    jwt_request(http, jwt_client)
    ahead = utcnow() + timedelta(days=1)
    client_pk = Client.find(jwt_client[0]).id
    db.session.add(Token(access_token_hash='f' * 64, client_pk=client_pk, scope='read', issued_at=ahead,
                         expires=ahead + timedelta(hours=1)))
    db.session.commit()
    assert cli(app, 'rotate-signing-key').exit_code == 0
    assert stored_keys()[0].publish_until == ahead + timedelta(hours=1)


def test_a_rotation_without_the_servers_lifetime_keeps_the_old_key_as_long_as_its_tokens(database_url,
                                                                                         start_gunicorn):
    """The server runs with day-long tokens; the rotation is run with the
    default environment (an hour): the tokens in the database decide."""
    server = start_gunicorn(database_url, workers=1, FLASK_OAUTH2_PROVIDER_TOKEN_EXPIRES_IN='86400',
                            FLASK_ACCESS_TOKEN_FORMAT='jwt')
    credentials = create_client(database_url)
    answer = requests.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10).json()
    assert answer['expires_in'] == 86400
    rotated = run_python('-m', 'flask', '--app', 'server', 'rotate-signing-key', env={'DATABASE_URL': database_url})
    assert rotated.returncode == 0, rotated.stderr
    table = SigningKey.__table__
    [(retired_at, publish_until)] = rows(database_url, sa.select(table.c.retired_at, table.c.publish_until)
                                         .where(table.c.retired_at.is_not(None)))
    assert publish_until - retired_at == timedelta(seconds=86400 + 60)
    assert publish_until.timestamp() >= segments(answer['access_token'])[1]['exp']


# --- A copy of the database in a stranger's hands -------------------------

PEM_BLOCK = re.compile(rb'-----BEGIN ((?:ENCRYPTED )?PRIVATE KEY)-----[A-Za-z0-9+/=\s]+?-----END \1-----')


def private_keys_a_stranger_finds(text: bytes) -> tuple[list, list]:
    """(usable private keys, encrypted ones) in any bytes: the stranger has no passphrase."""
    usable, encrypted = [], []
    for match in PEM_BLOCK.finditer(text):
        try:
            usable.append(serialization.load_pem_private_key(match.group(0), password=None))
        except TypeError:  # "Password was not given but private key is encrypted"
            encrypted.append(match.group(0))
        except ValueError:
            pass
    return usable, encrypted


def copy_of(database_url, folder: Path) -> bytes:
    """What a stranger takes: the SQLite files as they lie on disk (the
    database, its log and index), or PostgreSQL's rows as pg_dump reads them."""
    if database_url.startswith('sqlite'):
        database = database_url.removeprefix('sqlite:///')
        copied = b''
        for suffix in ('', '-wal', '-shm'):
            if Path(database + suffix).exists():
                shutil.copyfile(database + suffix, folder / f'copy{suffix}')
                copied += (folder / f'copy{suffix}').read_bytes()
        return copied
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = sa.inspect(engine).get_table_names()
            return '\n'.join(str(value) for table in tables
                             for row in connection.execute(sa.text(f'SELECT * FROM {table}')) for value in row).encode()
    finally:
        engine.dispose()


def test_a_stranger_with_a_copy_of_the_database_gets_no_usable_private_key(database_url, start_gunicorn,
                                                                           start_dev_server, tmp_path):
    # A learner's database: python server.py without a passphrase keeps a key in clear.
    if database_url.startswith('sqlite'):
        url, _ = start_dev_server(database_url, FLASK_SIGNING_KEY_PASSPHRASE='', FLASK_ACCESS_TOKEN_FORMAT='jwt')
        assert requests.post(f'{url}/oauth/token', data=token_form('demo-client', 'demo-secret'),
                             timeout=10).status_code == 200
    else:
        store_key_in_clear(database_url)
    [(clear_pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys')
    assert len(private_keys_a_stranger_finds(copy_of(database_url, tmp_path))[0]) == 1  # the stranger's tool works
    # Production from then on: a passphrase, JWTs, a rotation, more JWTs.
    server = start_gunicorn(database_url, workers=2, FLASK_ACCESS_TOKEN_FORMAT='jwt')
    credentials = create_client(database_url)
    for _ in range(3):
        assert requests.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10).status_code == 200
    [(retired_pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys')
    assert run_python('-m', 'flask', '--app', 'server', 'rotate-signing-key',
                      env={'DATABASE_URL': database_url}).returncode == 0
    for _ in range(3):
        assert requests.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10).status_code == 200
    copied = copy_of(database_url, tmp_path)
    usable, encrypted = private_keys_a_stranger_finds(copied)
    assert usable == []
    # Only the signing key's private half is there, encrypted; the retired key
    # keeps none, not even its old encrypted text; its clear text is gone too.
    [(signing_pem,)] = rows(database_url, 'SELECT private_pem FROM signing_keys WHERE retired_at IS NULL')
    assert set(encrypted) == {signing_pem.strip().encode()}
    for gone in (clear_pem, retired_pem):
        assert not any(line.encode() in copied for line in gone.splitlines() if len(line) >= 40)
