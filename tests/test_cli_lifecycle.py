"""Clients over their life: show, update, disable/enable, rotate, delete, purge."""
import json
import threading
import time
from datetime import timedelta

import pytest
import requests
from conftest import TOKEN_URL, bearer, count, run_python, token_form

from models import Client, Item, Token, db, utcnow


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args, **kwargs):
        return runner.invoke(args=list(args), **kwargs)
    return invoke


def token_status(http, credentials):
    return http.post(TOKEN_URL, data=token_form(*credentials)).status_code


def reload(client_id):
    db.session.expire_all()
    return Client.find(client_id)


def test_create_client_with_its_own_token_lifetime(cli, http):
    created = json.loads(cli('create-client', 'short', '--token-lifetime', '120', '--json').output)
    assert created['token_lifetime'] == 120
    response = http.post(TOKEN_URL, data=token_form(created['client_id'], created['client_secret']))
    assert response.get_json()['expires_in'] == 120
    stored = db.session.scalar(db.select(Token))
    assert (stored.expires - stored.issued_at).total_seconds() == 120


def test_show_client(cli, credentials, token):
    shown = json.loads(cli('show-client', credentials[0], '--json').output)
    assert shown['client_id'] == credentials[0]
    assert shown['live_tokens'] == 1
    assert shown['disabled'] is False
    assert credentials[1] not in cli('show-client', credentials[0]).output


def test_update_client(cli, http, credentials, token):
    result = cli('update-client', credentials[0], '--name', 'renamed', '--scope', 'read',
                 '--token-lifetime', '60', '--json')
    assert result.exit_code == 0, result.output
    client = reload(credentials[0])
    assert (client.name, client.scope, client.token_lifetime) == ('renamed', 'read', 60)
    response = http.post(TOKEN_URL, data=token_form(*credentials)).get_json()
    assert (response['scope'], response['expires_in']) == ('read', 60)
    # The token issued before the change lost `write`.
    assert http.post('/api/items', json={'name': 'x'}, headers=bearer(token)).status_code == 403
    assert cli('update-client', credentials[0], '--token-lifetime', '0').exit_code == 0
    assert reload(credentials[0]).token_lifetime is None


def test_widening_a_scope_again_does_not_give_live_tokens_back_what_was_taken(cli, http, credentials, token):
    assert cli('update-client', credentials[0], '--scope', 'read').exit_code == 0
    assert cli('update-client', credentials[0], '--scope', 'read write').exit_code == 0
    assert http.post('/api/items', json={'name': 'x'}, headers=bearer(token)).status_code == 403
    assert http.get('/api/me', headers=bearer(token)).get_json()['scope'] == 'read'
    fresh = http.post(TOKEN_URL, data=token_form(*credentials)).get_json()['access_token']
    assert http.post('/api/items', json={'name': 'x'}, headers=bearer(fresh)).status_code == 201


def test_disable_stops_the_client_and_its_tokens_and_enable_keeps_them_revoked(cli, http, credentials, token):
    result = cli('disable-client', credentials[0])
    assert result.exit_code == 0 and 'revoked 1 token' in result.output
    assert http.get('/api/me', headers=bearer(token)).status_code == 401
    assert token_status(http, credentials) == 401
    assert cli('enable-client', credentials[0]).exit_code == 0
    assert http.get('/api/me', headers=bearer(token)).status_code == 401  # stays revoked
    assert token_status(http, credentials) == 200


def test_a_disabled_client_and_a_wrong_secret_look_the_same(cli, http, credentials):
    cli('disable-client', credentials[0])
    disabled = http.post(TOKEN_URL, data=token_form(*credentials))
    wrong = http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong'))
    assert (disabled.status_code, disabled.get_data()) == (wrong.status_code, wrong.get_data())


def test_rotate_secret_without_grace(cli, http, credentials, token):
    rotated = json.loads(cli('rotate-secret', credentials[0], '--json').output)
    assert token_status(http, credentials) == 401
    assert token_status(http, (credentials[0], rotated['client_secret'])) == 200
    # Rotation changes how the client logs in, not the tokens it holds.
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    assert rotated['client_secret'] not in repr(reload(credentials[0]).to_dict())


def test_rotate_secret_with_grace(cli, http, credentials):
    result = cli('rotate-secret', credentials[0], '--grace', '300')
    assert result.exit_code == 0
    new_secret = next(line.split()[-1] for line in result.output.splitlines() if line.startswith('client_secret'))
    assert token_status(http, credentials) == 200  # old secret, inside the grace period
    assert token_status(http, (credentials[0], new_secret)) == 200
    client = reload(credentials[0])
    client.previous_secret_expires = utcnow() - timedelta(seconds=1)  # the grace period ends
    db.session.commit()
    assert token_status(http, credentials) == 401
    assert token_status(http, (credentials[0], new_secret)) == 200


def test_a_second_rotation_ends_the_first_grace(cli, http, credentials):
    first = json.loads(cli('rotate-secret', credentials[0], '--grace', '300', '--json').output)
    cli('rotate-secret', credentials[0], '--json')
    assert token_status(http, credentials) == 401
    assert token_status(http, (credentials[0], first['client_secret'])) == 401


def test_delete_client_asks_first(cli, http, credentials, token):
    http.post('/api/items', json={'name': 'x'}, headers=bearer(token))
    refused = cli('delete-client', credentials[0], input='n\n')
    assert refused.exit_code == 1
    assert count(Client) == 1
    result = cli('delete-client', credentials[0], input='y\n')
    assert result.exit_code == 0
    assert (count(Client), count(Token), count(Item)) == (0, 0, 0)
    assert http.get('/api/me', headers=bearer(token)).status_code == 401


def test_delete_client_yes(cli, credentials):
    assert cli('delete-client', credentials[0], '--yes').exit_code == 0
    assert count(Client) == 0


@pytest.mark.parametrize('command', ['show-client', 'update-client', 'disable-client', 'enable-client',
                                     'rotate-secret', 'delete-client'])
def test_unknown_client_id_is_a_clear_error(cli, command):
    args = [command, 'no-such-id'] + (['--name', 'x'] if command == 'update-client' else [])
    result = cli(*args)
    assert result.exit_code == 1
    assert "Error: no client with id 'no-such-id'" in result.stderr


@pytest.mark.parametrize('args', [
    ['update-client', 'ID'],
    ['update-client', 'ID', '--scope', 'superuser'],
    ['update-client', 'ID', '--name', ''],
    ['create-client', 'x', '--token-lifetime', '-5'],
    ['create-client', 'x', '--token-lifetime', 'soon'],
    ['rotate-secret', 'ID', '--grace', '-1'],
])
def test_invalid_arguments_exit_2(cli, credentials, args):
    args = [credentials[0] if arg == 'ID' else arg for arg in args]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith('Error:')
    assert reload(credentials[0]).name == 'service'


def test_purge_tokens_deletes_only_dead_ones(cli, credentials, get_token):
    tokens = [get_token(*credentials) for _ in range(4)]
    stored = db.session.scalars(db.select(Token).order_by(Token.id)).all()
    stored[0].expires = utcnow() - timedelta(seconds=1)
    Token.revoke_where(Token.id == stored[1].id)
    db.session.commit()
    result = cli('purge-tokens')
    assert result.exit_code == 0 and result.output.startswith('Purged 2 token(s), ')
    assert count(Token) == 2
    assert cli('purge-tokens').output.startswith('Purged 0 token(s)')
    del tokens


def test_purge_tokens_while_the_server_serves(app, live_server, credentials, monkeypatch):
    """Clients keep getting, using and revoking tokens while cron purges: no request fails."""
    # Four clients looping as fast as they can reach the limit on tokens per
    # client (a 429) on a fast machine; that limit is not what is tested here.
    monkeypatch.setitem(app.config, 'TOKENS_PER_CLIENT', '1000000 per minute')
    failures, successes, revoked, stop = [], [], [], threading.Event()

    def work():
        session = requests.Session()
        deadline = time.monotonic() + 120  # a bound only: the test stops the workers after the purges
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                token = session.post(f'{live_server}/oauth/token', data=token_form(*credentials), timeout=10)
                if token.status_code != 200:
                    failures.append(token.status_code)
                    continue
                access_token = token.json()['access_token']
                me = session.get(f'{live_server}/api/me', headers=bearer(access_token), timeout=10)
                (successes if me.status_code == 200 else failures).append(me.status_code)
                answer = session.post(f'{live_server}/oauth/revoke', timeout=10, data={
                    'token': access_token, 'client_id': credentials[0], 'client_secret': credentials[1]})
                (revoked if answer.status_code == 200 else failures).append(answer.status_code)
            except requests.RequestException as error:  # recorded: the test, not the thread, must fail
                failures.append(repr(error))

    def wait_for_revoked(at_least):
        deadline = time.monotonic() + 60
        while len(revoked) < at_least and not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(revoked) >= at_least, f'the workers revoked {len(revoked)} tokens in 60 s: {failures[:5]}'

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        purged = 0
        for number in range(1, 4):
            # Each purge starts once the workers have revoked more tokens, so
            # it has rows to delete while they go on; no sleep decides it.
            wait_for_revoked(5 * number)
            result = run_python('-m', 'flask', '--app', 'server', 'purge-tokens', timeout=60)
            assert result.returncode == 0, result.stderr
            purged += int(result.stdout.split()[1])
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert failures == []
    assert len(successes) >= 15 and purged >= 5
    # Every token the workers got was revoked after use: one more purge leaves none.
    assert run_python('-m', 'flask', '--app', 'server', 'purge-tokens').returncode == 0
    assert count(Token) == 0
