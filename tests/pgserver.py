"""A throwaway PostgreSQL server on loopback, for the test suite.

    python tests/pgserver.py COMMAND ARGS...

starts a fresh server in a temporary directory on a free 127.0.0.1 port, runs
COMMAND with TEST_DATABASE_URL pointing at an empty database in it, stops the
server and exits with COMMAND's status. The deployment tests use the same
class as a fixture.

PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` user (runuser). Without PostgreSQL it says so in one line and
exits 0, except under CI=true, where that is a failure.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile


class PostgresUnavailable(Exception):
    pass


def find_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'))), None)
    if not found:
        raise PostgresUnavailable(f'{name} not found (install the PostgreSQL server)')
    return found


class ThrowawayPostgres:
    """One PostgreSQL server with trust authentication on 127.0.0.1 only."""

    def __init__(self):
        self.directory = self.port = None

    def _run(self, *command: str) -> None:
        if os.geteuid() == 0:
            command = ('runuser', '-u', 'postgres', '--', *command)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()
            raise PostgresUnavailable(f'{os.path.basename(command[-1] if command[0] == "runuser" else command[0])}'
                                      f' failed: {last[-1] if last else result.returncode}')

    def start(self) -> ThrowawayPostgres:
        initdb = find_binary('initdb')
        find_binary('pg_ctl')  # needed by resume(): missing, it is better said now
        self.directory = tempfile.mkdtemp(prefix='oauth-pg-')
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam('postgres')
            except KeyError:
                raise PostgresUnavailable('running as root and there is no postgres user') from None
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        data = os.path.join(self.directory, 'data')
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        self._run(initdb, '-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync')
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again, after pause()), on the same port and data."""
        # fsync off: a test server's data need not survive the machine.
        options = f'-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off'
        self._run(find_binary('pg_ctl'), '-D', os.path.join(self.directory, 'data'),
                  '-l', os.path.join(self.directory, 'log'), '-o', options, '-w', 'start')

    def pause(self) -> None:
        """Stop the server as an outage would (connections cut), keeping its data."""
        self._run(find_binary('pg_ctl'), '-D', os.path.join(self.directory, 'data'), '-m', 'immediate', '-w', 'stop')

    def url(self, database: str = 'postgres') -> str:
        return f'postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}'

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(f'host=127.0.0.1 port={self.port} user=postgres dbname=postgres',
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.directory is None:
            return
        with contextlib.suppress(PostgresUnavailable):
            self.pause()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


def main(argv: list[str]) -> int:
    if not argv:
        print('usage: python tests/pgserver.py COMMAND [ARGS...]', file=sys.stderr)
        return 2
    server = ThrowawayPostgres()
    try:
        server.start()
        url = server.create_database('oauth_test')
    except PostgresUnavailable as error:
        server.stop()
        if os.environ.get('CI') == 'true':
            print(f'pgserver: PostgreSQL did not start: {error}', file=sys.stderr)
            return 1
        print(f'pgserver: skipping the PostgreSQL run: {error}', file=sys.stderr)
        return 0
    try:
        print(f'pgserver: PostgreSQL on 127.0.0.1:{server.port}', file=sys.stderr, flush=True)
        return subprocess.run(argv, env={**os.environ, 'TEST_DATABASE_URL': url}).returncode
    finally:
        server.stop()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
