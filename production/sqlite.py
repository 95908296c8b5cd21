"""SQLite as a server's database: its files, readable by their owner only;
its settings; a queue for its writers; and a thread that copies its
write-ahead log back into the database file.

Nothing here runs for PostgreSQL. On systems without POSIX file locks
(Windows) writers and checkpoints are left to SQLite's defaults.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

# The write-ahead log is cut back to this size each time it starts over, so
# that one long reader (which keeps it from starting over) cannot leave a
# file of hundreds of megabytes behind for good.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


# The files beside the database: SQLite's write-ahead log and its index, and
# the writers' lock file (SQLiteWriters).
COMPANIONS = ('-wal', '-shm', '-writers')
PRIVATE_FILE_MODE = 0o600


def create_database_file(engine: Engine) -> None:
    """Make a new SQLite database file readable and writable by its owner
    only, before SQLite would make it with the umask's permissions (0644,
    usually): it holds hashes, audit-worthy rows and the encrypted signing
    keys. SQLite gives its -wal and -shm files the database file's
    permissions. An existing file open to other users is said in one log
    line, and left as it is: its permissions are its owner's choice."""
    database = database_file(engine)
    if database is None:
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        return
    except FileExistsError:
        pass
    except OSError:
        return  # no folder for it: SQLite says what is wrong when it opens it
    open_to_others = []
    for path in (database, *(database + suffix for suffix in COMPANIONS)):
        with contextlib.suppress(OSError):
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077:
                open_to_others.append(f'{path} ({mode:04o})')
    if open_to_others:
        log.warning('SQLite files other users can open: %s; the server leaves their permissions alone: '
                    'chmod 600 them', ', '.join(open_to_others))


@event.listens_for(Engine, 'connect')
def configure_connection(dbapi_connection, connection_record) -> None:
    """WAL lets readers and one writer work at once across processes; the busy
    timeout makes a second writer wait instead of failing with "database is
    locked"; SQLite leaves foreign keys (and so ON DELETE CASCADE) off unless
    asked; secure_delete overwrites what is deleted or replaced (a private key
    encrypted or retired) instead of leaving it in the file's free space,
    which some builds of SQLite do by default, not all."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    for pragma in ('journal_mode=WAL', 'synchronous=NORMAL', 'busy_timeout=10000', 'foreign_keys=ON',
                   'secure_delete=ON', f'journal_size_limit={JOURNAL_SIZE_LIMIT}'):
        dbapi_connection.execute(f'PRAGMA {pragma}').close()
    remember_file(dbapi_connection.execute('PRAGMA database_list').fetchone()[2])  # (seq, name, file)


# The database file each process opened, by (device, inode), from when the
# app starts (or its first connection, for a file not there yet): a file
# deleted or replaced under a running server is noticed, not written blindly.
# A process forked from one that knows the file knows it too.
_opened_files: dict[str, tuple[int, int]] = {}


def remember_file(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            _opened_files.setdefault(os.path.abspath(path), (stat.st_dev, stat.st_ino))


def check_file(engine: Engine) -> None:
    """Raise OperationalError (a 503) if the file at the configured path is
    no longer the one this process opened: deleted, moved or replaced."""
    database = database_file(engine)
    opened = database and _opened_files.get(os.path.abspath(database))
    if not opened:
        return
    try:
        stat = os.stat(database)
        same = (stat.st_dev, stat.st_ino) == opened
    except OSError:
        same = False
    if not same:
        raise OperationalError('check the SQLite database file', None, sqlite3.OperationalError(
            f'{database} was deleted or replaced while the server ran; restart it once the file is right'))


def database_file(engine: Engine) -> str | None:
    """The path of a SQLite database file, or None (another database, or in memory)."""
    database = engine.url.database
    if engine.dialect.name != 'sqlite' or not database or database.startswith((':', 'file:')):
        return None
    return database


class SQLiteWriters:
    """Writers to one SQLite file take turns, across threads and processes,
    and a thread copies the write-ahead log back into the file.

    SQLite lets one connection write at a time. A writer that finds the lock
    taken polls it, sleeping 1, 2, 5, 10 ms... in between (its busy handler),
    while a token insert holds the lock for some 40 µs: with two gunicorn
    workers issuing tokens, an eighth of the CPU sat idle in those sleeps.
    Queued on an advisory lock on a file beside the database instead (and on a
    thread lock, since one process's threads share that file), the next writer
    starts the moment the lock is free. Only the token insert, the one write
    on the request hot path, queues here; other writes wait SQLite's way.

    SQLite also copies the log back into the database (a checkpoint) in
    whichever commit takes the log past 1,000 pages: a few milliseconds and
    two fsyncs inside a token request, during its turn, so the other writers
    waited too. Connections that take turns here leave that to a thread of
    their process: once a second it copies what it can while writers go on
    (PASSIVE), then takes a turn to copy the little written meanwhile and
    have the log start over (RESTART). Without that turn the log never
    starts over under steady writes.
    """

    CHECKPOINT_INTERVAL = 1.0  # seconds: the log holds about a second of writes

    def __init__(self):
        self._thread_lock = threading.Lock()
        self._files: dict = {}  # (database file, process id) -> open lock file
        self._checkpointing: set = set()  # (database file, process id) with a checkpoint thread

    def turn(self, connection: Connection):
        """A context in which `connection` is the only writer to its SQLite file."""
        check_file(connection.engine)  # never acknowledge a write into a deleted file
        database = database_file(connection.engine)
        if fcntl is None or database is None:
            return nullcontext()
        if not connection.info.get('checkpoints_in_thread'):  # once per database connection
            connection.exec_driver_sql('PRAGMA wal_autocheckpoint=0')
            connection.info['checkpoints_in_thread'] = True
        return self._queued(database, checkpoints=True)

    def exclusive(self, engine: Engine):
        """A context in which no other writer that queues here writes: for schema changes."""
        database = database_file(engine)
        return nullcontext() if fcntl is None or database is None else self._queued(database)

    @contextmanager
    def _queued(self, database: str, checkpoints: bool = False):
        with self._thread_lock:
            # A file opened before a fork would be shared with the parent,
            # and its lock with it; threads do not survive a fork at all:
            # each process opens its own file and starts its own thread.
            key = (database, os.getpid())
            if key not in self._files:
                try:
                    # Kept open for the process; its owner's only, as the database is.
                    self._files[key] = os.fdopen(os.open(database + '-writers', os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                                         PRIVATE_FILE_MODE), 'a')
                except OSError:
                    # No folder to put it in: SQLite will say what is wrong in a moment.
                    yield
                    return
            if checkpoints and key not in self._checkpointing:
                self._checkpointing.add(key)
                threading.Thread(target=self._checkpoint_forever, args=(database,),
                                 name='sqlite-checkpoints', daemon=True).start()
            lock_file = self._files[key]
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _checkpoint_forever(self, database: str) -> None:
        try:
            # mode=rw: a database deleted meanwhile is not created again. A
            # short busy timeout: RESTART waits for readers during a turn.
            connection = sqlite3.connect(f'file:{quote(database)}?mode=rw', uri=True, timeout=0.05)
            connection.execute(f'PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}').close()
        except sqlite3.Error as error:
            log.warning('SQLite checkpoints of %s cannot start: %s', database, error)
            return
        failing = held_up = False
        while True:
            time.sleep(self.CHECKPOINT_INTERVAL)
            try:
                connection.execute('PRAGMA wal_checkpoint(PASSIVE)').fetchall()
                with self._queued(database):
                    busy, _, _ = connection.execute('PRAGMA wal_checkpoint(RESTART)').fetchone()
                failing = False
            except sqlite3.Error as error:
                if not failing:  # once per run of failures, not once a second
                    log.warning('SQLite checkpoint of %s failed: %s', database, error)
                failing = True
                continue
            # A reader in a long transaction keeps the log from starting over:
            # said once when it starts and once when it ends.
            if busy and not held_up:
                log.warning('SQLite checkpoint of %s is held up by a reader; the log grows until it ends', database)
            elif held_up and not busy:
                log.warning('SQLite checkpoint of %s completes again', database)
            held_up = bool(busy)


sqlite_writers = SQLiteWriters()


def empty_the_log(engine: Engine) -> None:
    """After a secret was overwritten in the database (secure_delete), copy
    the write-ahead log into it and cut the log to nothing: the log's older
    pages may still hold the secret's old text, until rewritten. It waits
    for readers (the busy timeout); if some still read, it says so."""
    if database_file(engine) is None:
        return
    with engine.connect() as connection:
        busy, _, _ = connection.exec_driver_sql('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()
    if busy:
        log.warning('SQLite could not empty its log: it may hold a replaced private key until it is rewritten')
