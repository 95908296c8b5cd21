"""What the database holds: hashes only, aware timestamps, cascades; and
its SQLite files, which only their owner may read."""
import os

import pytest
import requests
from conftest import SERVER_KINDS, TOKEN_URL, bearer, count, run_python, token_form

from models import Client, Item, Token, db


def database_dump() -> str:
    """Every row of every table as text, as a stolen backup would show it."""
    db.session.expire_all()
    rows = []
    for table in db.metadata.sorted_tables:
        rows += [repr(tuple(row)) for row in db.session.execute(table.select())]
    return '\n'.join(rows)


def test_secrets_and_tokens_are_not_stored_in_clear(http, credentials, get_token):
    client_id, secret = credentials
    access_token = get_token(client_id, secret)
    dump = database_dump()
    assert client_id in dump  # the dump is real
    assert secret not in dump
    assert access_token not in dump


def test_a_dump_alone_authenticates_nobody(http, credentials, get_token):
    client_id, secret = credentials
    get_token(client_id, secret)
    client = Client.find(client_id)
    stored_token = db.session.scalar(db.select(Token))
    for guess in (client.secret_hash, client.secret_hash.rsplit('$', 1)[-1]):
        response = http.post(TOKEN_URL, data=token_form(client_id, guess))
        assert response.status_code == 401
    response = http.get('/api/me', headers=bearer(stored_token.access_token_hash))
    assert response.status_code == 401


def test_secret_hashes_are_salted(make_client):
    first = make_client('a', client_secret='same-secret')
    second = make_client('b', client_secret='same-secret')
    hashes = {Client.find(first[0]).secret_hash, Client.find(second[0]).secret_hash}
    assert len(hashes) == 2


def test_expiry_reads_back_timezone_aware(token):
    db.session.expire_all()
    stored = db.session.scalar(db.select(Token))
    assert stored.expires.tzinfo is not None
    assert not stored.is_expired()


def test_deleting_a_client_deletes_its_tokens_and_items(http, credentials, token):
    http.post('/api/items', json={'name': 'x'}, headers=bearer(token))
    db.session.execute(db.delete(Client))  # a plain SQL delete: the database cascades
    db.session.commit()
    assert (count(Client), count(Token), count(Item)) == (0, 0, 0)


def test_generated_credentials_never_look_like_options(make_client):
    # 1 in 64 URL-safe strings starts with "-": 300 draws would hit one.
    from models import random_credential
    assert not any(random_credential(16).startswith('-') for _ in range(300))


def test_dead_tokens_and_expired_counters_are_purged_as_the_server_runs(app, http, credentials, token, monkeypatch):
    from datetime import timedelta

    from models import utcnow
    from production.bruteforce import RateLimitCounter
    monkeypatch.setitem(app.config, 'PURGE_EVERY', 3)
    monkeypatch.setitem(app.config, 'PURGE_BATCH', 2)
    client_pk = Client.find(credentials[0]).id
    past = utcnow() - timedelta(hours=2)
    for number in range(5):
        db.session.add(Token(access_token_hash=f'{number:064d}', client_pk=client_pk, scope='read',
                             issued_at=past, expires=past + timedelta(hours=1)))
        db.session.add(RateLimitCounter(name=f'expired-{number}', count=1, expires_at=0.0))
    db.session.commit()
    assert (count(Token), count(RateLimitCounter)) == (6, 5)
    for _ in range(3):  # exactly one of any three requests in a row purges one batch
        assert http.get('/healthz').status_code == 200
    assert (count(Token), count(RateLimitCounter)) == (4, 3)
    assert http.get('/api/me', headers=bearer(token)).status_code == 200  # the live token is kept


def test_the_servers_batch_purge_deletes_expired_tokens_only(app, http, credentials, monkeypatch):
    from datetime import timedelta

    from models import hash_token, utcnow
    monkeypatch.setitem(app.config, 'PURGE_EVERY', 1)
    monkeypatch.setitem(app.config, 'PURGE_BATCH', 2)
    client_pk, now = Client.find(credentials[0]).id, utcnow()
    rows = {  # name: (expires, revoked_at); live ones first, so that a batch taking any row would take them
        'live, a minute left': (now + timedelta(minutes=1), None),
        'live, an hour left': (now + timedelta(hours=1), None),
        'revoked, not expired': (now + timedelta(hours=1), now),
        'expired a second ago': (now - timedelta(seconds=1), None),
        'expired an hour ago': (now - timedelta(hours=1), None),
        'expired and revoked': (now - timedelta(minutes=1), now - timedelta(minutes=30)),
    }
    for name, (expires, revoked_at) in rows.items():
        db.session.add(Token(access_token_hash=hash_token(name), client_pk=client_pk, scope='read',
                             issued_at=now - timedelta(hours=2), expires=expires, revoked_at=revoked_at))
    db.session.commit()
    names = {hash_token(name): name for name in rows}

    def left():
        db.session.expire_all()
        return {names[stored] for stored in db.session.scalars(db.select(Token.access_token_hash))}
    kept = {'live, a minute left', 'live, an hour left', 'revoked, not expired'}
    assert http.get('/healthz').status_code == 200  # one batch: two of the three expired ones
    assert len(left()) == 4 and kept <= left()
    for _ in range(3):
        assert http.get('/healthz').status_code == 200
    # Revoked tokens wait for their expiry, or for `purge-tokens`: finding
    # them reads the whole table, too slow for a batch after every PURGE_EVERY requests.
    assert left() == kept


def test_signing_keys_no_longer_published_are_purged_as_the_server_runs(app, http, monkeypatch):
    from datetime import timedelta

    from models import utcnow
    from production.signing_keys import SigningKey, key_ring
    monkeypatch.setitem(app.config, 'PURGE_EVERY', 1)
    key_ring().signing_key()
    gone, kept = SigningKey.generate('ES256', None), SigningKey.generate('ES256', None)
    gone.retired_at = gone.publish_until = utcnow() - timedelta(seconds=1)
    kept.retired_at, kept.publish_until = utcnow(), utcnow() + timedelta(hours=1)
    db.session.commit()
    assert count(SigningKey) == 3
    assert http.get('/healthz').status_code == 200
    db.session.expire_all()
    assert sorted(db.session.scalars(db.select(SigningKey.kid))) == sorted([key_ring().signing_key()[1].kid, kept.kid])


# --- The SQLite files: their owner's only ----------------------------------

SQLITE_FILES = ('', '-wal', '-shm', '-writers')  # the database, its log and the log's index, the writers' lock


def file_modes(database):
    return {suffix: f'{os.stat(database + suffix).st_mode & 0o777:04o}' for suffix in SQLITE_FILES
            if os.path.exists(database + suffix)}


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass, on SQLite, runs it')
@pytest.mark.parametrize('entry_point', ['python server.py', 'gunicorn', 'command'])
def test_a_new_sqlite_database_and_its_files_are_readable_by_their_owner_only(entry_point, start_dev_server,
                                                                              start_gunicorn, tmp_path):
    database = f'{tmp_path}/new.sqlite'
    url = f'sqlite:///{database}'
    previous = os.umask(0o022)  # the usual umask, with which SQLite makes 0644 files
    try:
        if entry_point == 'python server.py':
            start_dev_server(url)
        elif entry_point == 'gunicorn':
            server = start_gunicorn(url, workers=2)
            assert requests.get(f'{server.url}/.well-known/jwks.json', timeout=10).status_code == 200
        else:
            assert run_python('-m', 'flask', '--app', 'server', 'list-clients',
                              env={'DATABASE_URL': url}).returncode == 0
    finally:
        os.umask(previous)
    modes = file_modes(database)
    # A running server keeps all four; a command's last connection takes the log and its index away.
    assert set(modes) == ({'', '-writers'} if entry_point == 'command' else set(SQLITE_FILES))
    assert set(modes.values()) == {'0600'}


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass, on SQLite, runs it')
def test_an_sqlite_file_other_users_can_open_is_said_once_and_left_alone(tmp_path):
    database = f'{tmp_path}/shared.sqlite'
    environment = {'DATABASE_URL': f'sqlite:///{database}'}
    assert run_python('-m', 'flask', '--app', 'server', 'list-clients', env=environment).returncode == 0
    os.chmod(database, 0o644)
    result = run_python('-m', 'flask', '--app', 'server', 'list-clients', env=environment)
    assert result.returncode == 0
    said = [line for line in result.stderr.splitlines() if 'other users can open' in line]
    assert said == [f'SQLite files other users can open: {database} (0644); the server leaves their '
                    'permissions alone: chmod 600 them']
    assert file_modes(database)[''] == '0644'
