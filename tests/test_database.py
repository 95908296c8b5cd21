"""How requests use the database: one pooled connection each, given back in
the state the rest of the app expects; and when the database fails, a JSON
503 the client can retry, never a 500, and service again as soon as it is back."""
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from conftest import DATABASE_URL, TOKEN_URL, bearer, count, statements_run, token_form

import production.sqlite
from models import Client, Item, Token, db
from production.sqlite import sqlite_writers


@pytest.fixture
def checkouts():
    """The number of connections the pool hands out while the test runs."""
    counted = []

    def count_checkout(*args):
        counted.append(1)
    sa.event.listen(db.engine, 'checkout', count_checkout)
    yield counted
    sa.event.remove(db.engine, 'checkout', count_checkout)


def test_a_request_takes_one_connection_from_the_pool(http, credentials, token, checkouts):
    # One checkout, so one pre-ping on a database server, however many
    # statements the request runs (the token endpoint runs two).
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200
    assert len(checkouts) == 1
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    assert len(checkouts) == 2


def test_engine_events_see_the_token_insert_and_lookup(http, credentials):
    # The hot statements run through SQLAlchemy's Connection, so echo,
    # tracing and query recording see them like any other statement.
    with statements_run() as statements:
        access_token = http.post(TOKEN_URL, data=token_form(*credentials)).get_json()['access_token']
        assert http.get('/api/me', headers=bearer(access_token)).status_code == 200
    assert sum(s.startswith('insert into tokens') for s in statements) == 1
    assert sum(s.startswith('select') and 'from tokens join clients' in s for s in statements) == 1
    assert sum(s.startswith('select') and 'from clients where clients.client_id' in s for s in statements) == 1


def test_connections_go_back_to_the_pool_ready_for_transactions(http, credentials, token):
    # The hot statements run in autocommit on a database server; the
    # connection must come back transactional, or a rollback would undo nothing.
    owner = db.session.scalar(db.select(Client.id).filter_by(client_id=credentials[0]))
    db.session.commit()
    db.engine.dispose()  # a fresh pool: the requests and the session share its one connection
    for _ in range(3):
        assert http.get('/api/me', headers=bearer(token)).status_code == 200
    db.session.add(Item(client_pk=owner, name='never stored'))
    db.session.flush()
    db.session.rollback()
    assert count(Item) == 0


@contextmanager
def tokens_table_missing():
    """The tokens table renamed away for the test (as a failed migration or a
    wrong database would leave it), and put back afterwards."""
    db.session.execute(sa.text('ALTER TABLE tokens RENAME TO tokens_away'))
    db.session.commit()
    try:
        yield
    finally:
        db.session.rollback()
        db.session.execute(sa.text('ALTER TABLE tokens_away RENAME TO tokens'))
        db.session.commit()


def assert_retry_later(response):
    assert response.status_code == 503
    assert response.get_json()['error'] == 'temporarily_unavailable'
    assert response.headers['Retry-After']


def test_token_and_api_requests_answer_503_while_the_tokens_table_is_unusable(http, credentials, token):
    issued = count(Token)
    with tokens_table_missing():
        assert_retry_later(http.post(TOKEN_URL, data=token_form(*credentials)))
        assert_retry_later(http.get('/api/me', headers=bearer(token)))
    # Back at once: the token issued before still works, nothing was stored meanwhile.
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    assert count(Token) == issued
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200


@pytest.mark.skipif(not DATABASE_URL.startswith('postgresql'), reason='needs a database server that drops connections')
def test_connections_the_server_dropped_are_replaced(http, credentials, token):
    # What a database restart or failover does to every pooled connection.
    engine = sa.create_engine(DATABASE_URL)
    with engine.connect() as connection:
        killed = connection.execute(sa.text(
            'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
            'WHERE datname = current_database() AND pid <> pg_backend_pid()')).scalar_one()
    engine.dispose()
    assert killed >= 1
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200


@pytest.mark.skipif(not DATABASE_URL.startswith('sqlite'), reason='queues writers to a SQLite file')
def test_token_writes_queue_on_the_sqlite_writers_lock(http, credentials):
    # Another process (here: this test, through a file of its own) holding the
    # writers' lock makes a token request wait for it, instead of polling
    # SQLite's own lock with millisecond sleeps.
    fcntl = pytest.importorskip('fcntl')
    answers = []
    with open(db.engine.url.database + '-writers', 'a') as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        request = threading.Thread(target=lambda: answers.append(
            http.post(TOKEN_URL, data=token_form(*credentials)).status_code))
        request.start()
        request.join(timeout=0.5)
        assert request.is_alive() and answers == []  # waiting for its turn
        fcntl.flock(other_writer, fcntl.LOCK_UN)
        request.join(timeout=10)
    assert answers == [200]


@pytest.mark.skipif(not DATABASE_URL.startswith('sqlite'), reason='checkpoints a SQLite file')
def test_the_sqlite_log_reaches_the_database_and_starts_over_under_steady_writes(app, credentials, monkeypatch):
    # A thread copies the write-ahead log into the database: nothing else
    # writes the database file itself in WAL mode. Under steady writes the
    # log must also start over, or it grows without end.
    monkeypatch.setattr(sqlite_writers, 'CHECKPOINT_INTERVAL', 0.2)
    monkeypatch.setitem(app.config, 'TOKENS_PER_CLIENT', '1000000 per minute')  # one client, thousands of tokens
    time.sleep(1.1)  # a thread already running sleeps out its one-second wait first
    database_file = db.engine.url.database
    with db.engine.connect() as connection:
        connection.exec_driver_sql('PRAGMA wal_checkpoint(TRUNCATE)')  # an empty log to start from
    written = os.stat(database_file).st_mtime_ns
    issued, largest_log, stop_at = [], 0, time.monotonic() + 3

    def issue_tokens():  # statuses are recorded, not asserted: an assert here would only end the thread
        client = app.test_client()
        while time.monotonic() < stop_at and len(issued) < 20_000:
            issued.append(client.post(TOKEN_URL, data=token_form(*credentials)).status_code)
    writers = [threading.Thread(target=issue_tokens) for _ in range(3)]
    for writer in writers:
        writer.start()
    while any(writer.is_alive() for writer in writers):
        largest_log = max(largest_log, os.path.getsize(database_file + '-wal'))
        time.sleep(0.05)
    for writer in writers:
        writer.join()
    # Each token adds at least four pages to the log (a row and three index
    # entries): a log that never started over would hold them all.
    assert len(issued) > 100 and set(issued) == {200}
    assert largest_log < 0.5 * len(issued) * 4 * 4096
    assert os.stat(database_file).st_mtime_ns != written


@pytest.mark.skipif(not DATABASE_URL.startswith('sqlite'), reason='checkpoints a SQLite file')
def test_a_long_reader_holds_the_sqlite_log_back_is_logged_once_and_the_log_is_cut_back_after(
        app, http, credentials, monkeypatch, no_credentials_in_logs):
    limit = 256 * 1024
    monkeypatch.setattr(production.sqlite, 'JOURNAL_SIZE_LIMIT', limit)
    monkeypatch.setattr(sqlite_writers, 'CHECKPOINT_INTERVAL', 0.1)
    monkeypatch.setitem(app.config, 'TOKENS_PER_CLIENT', '1000000 per minute')  # one client, hundreds of tokens
    db.engine.dispose()  # connections made from now on have the smaller limit
    time.sleep(1.1)  # a thread already running sleeps out its one-second wait first
    log_file = db.engine.url.database + '-wal'

    def issue(tokens):
        for _ in range(tokens):
            assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200

    def held_up_lines():
        return [line for line in no_credentials_in_logs if 'production.sqlite' in line and 'held up' in line]
    reader = sqlite3.connect(db.engine.url.database)
    try:
        # A reader whose snapshot predates the log reads the database file
        # alone and holds nothing back: start it just after a write, and
        # again if a checkpoint came in between.
        for _ in range(20):
            issue(1)
            reader.execute('BEGIN')
            reader.execute('SELECT count(*) FROM tokens').fetchall()  # a read transaction, held open
            issue(20)
            time.sleep(0.3)  # a few checkpoints
            if held_up_lines():
                break
            reader.rollback()
        issue(400)  # each adds at least four pages to the log
        held_size = os.path.getsize(log_file)
    finally:
        reader.rollback()
        reader.close()
    assert len(held_up_lines()) == 1  # said once, not once per checkpoint
    assert held_size > 400 * 4 * 4096  # nothing could start over while the reader read
    # With the reader gone, a checkpoint completes; the next write starts the
    # log over, and the file is cut back to the limit.
    time.sleep(0.5)
    issue(1)
    assert os.path.getsize(log_file) <= limit + 64 * 1024  # the limit, and the one write after it
    said = [line for line in no_credentials_in_logs if 'production.sqlite' in line]
    assert sum('completes again' in line for line in said) == 1, said
