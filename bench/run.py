"""Throughput of the authorization server against a no-framework baseline
and an Authlib peer.

    .venv/bin/python bench/run.py                       # SQLite and a throwaway PostgreSQL
    .venv/bin/python bench/run.py --databases sqlite    # SQLite only
    DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/run.py

Serves the project (server:app), the baseline (bench/baseline.py: Flask and
SQLAlchemy Core, no OAuth library) and the Authlib peer (bench/authlib_peer.py:
the same job as Authlib's documentation shows it) with gunicorn, 2 sync
workers each, on 127.0.0.1, and drives each endpoint with wrk for a fixed
time: POST /oauth/token (form and Basic credentials) and GET /api/me. Each
endpoint is measured in rounds, the three apps taking turns, and each figure
is the median of its rounds, so that a moment of noise on the machine lands
on no app alone. On the small table it also sets side by side, taking
turns, the project's two token formats (opaque and JWT) and the project
with its Prometheus metrics on and off: the token endpoint and GET /api/me.
Then it bulk-seeds the tokens table to about a million rows and measures
again. It prints a table per database and writes every run to
bench/latest.json. With DATABASE_URL set it uses (and fills) that database
only: give it an empty one.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def ensure_wrk() -> str:
    found = shutil.which('wrk')
    if found:
        return found
    if os.geteuid() == 0 and shutil.which('apt-get'):
        print('installing wrk (apt-get install wrk) ...', file=sys.stderr)
        subprocess.run(['apt-get', 'update', '-qq'], check=False, capture_output=True)
        subprocess.run(['apt-get', 'install', '-y', '-qq', 'wrk'], check=False, capture_output=True)
        found = shutil.which('wrk')
    if not found:
        sys.exit('bench: wrk is needed: install it (Debian/Ubuntu: sudo apt-get install wrk)')
    return found


class Gunicorn:
    def __init__(self, app: str, env: dict, log: Path, chdir: Path = ROOT):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        with open(log, 'a') as out:
            self.process = subprocess.Popen(
                [PYTHON, '-m', 'gunicorn', '-w', '2', '-b', f'127.0.0.1:{self.port}', '--chdir', str(chdir), app],
                cwd=ROOT, env={**os.environ, 'FLASK_OAUTH2_ISSUER': self.url, **env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)  # the project's gunicorn.conf.py requires an issuer
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        sys.exit(f'bench: {app} did not start; see {log}')

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def lua(method: str, headers: dict, body: str = '') -> str:
    lines = [f'wrk.method = "{method}"', f'wrk.body = "{body}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return '\n'.join(lines) + '\n'


DURATION_UNITS = {'us': 1e-3, 'ms': 1.0, 's': 1e3}


def run_wrk(wrk: str, url: str, script: str, args, workdir: Path) -> dict:
    path = workdir / f'request-{len(list(workdir.glob("*.lua")))}.lua'
    path.write_text(script)
    out = subprocess.run([wrk, f'-t{args.threads}', f'-c{args.connections}', f'-d{args.duration}s', '--latency',
                          '-s', str(path), url], capture_output=True, text=True, timeout=args.duration + 60).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    percentiles = {p: float(v) * DURATION_UNITS[unit]
                   for p, v, unit in re.findall(r'^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$', out, re.M)}
    errors = sum(int(n) for n in re.findall(r'Non-2xx or 3xx responses:\s+(\d+)', out))
    errors += sum(int(n) for n in re.findall(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)',
                                            out)[0]) if 'Socket errors' in out else 0
    return {'rps': rps, 'p50_ms': percentiles.get('50'), 'p99_ms': percentiles.get('99'), 'errors': errors}


def post_form(url: str, form: dict, headers: dict | None = None) -> dict:
    import requests
    answer = requests.post(url, data=form, headers=headers or {}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def seed_tokens(database_url: str, client_pk: int, target: int) -> int:
    """Bulk-insert live tokens for the bench client until the table holds `target` rows."""
    import sqlalchemy as sa
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        have = connection.execute(sa.text('SELECT count(*) FROM tokens')).scalar_one()
    now = datetime.now(UTC).replace(tzinfo=None)
    expires = now + timedelta(days=1)
    insert = sa.text('INSERT INTO tokens (access_token_hash, client_pk, scope, issued_at, expires) '
                     'VALUES (:hash, :client, :scope, :now, :expires)')
    batch = 50_000
    for start in range(have, target, batch):
        rows = [{'hash': hashlib.sha256(f'seed-{n}-{secrets.token_hex(4)}'.encode()).hexdigest(),
                 'client': client_pk, 'scope': 'read write', 'now': now, 'expires': expires}
                for n in range(start, min(start + batch, target))]
        with engine.begin() as connection:
            connection.execute(insert, rows)
    with engine.begin() as connection:
        total = connection.execute(sa.text('SELECT count(*) FROM tokens')).scalar_one()
    engine.dispose()
    return total


def database_count(database_url: str, sql: str, **params):
    import sqlalchemy as sa
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar_one()
    finally:
        engine.dispose()


ENDPOINTS = ['POST /oauth/token (form)', 'POST /oauth/token (Basic)', 'GET /api/me']
SIDE_BY_SIDE_ENDPOINTS = ['POST /oauth/token (form)', 'GET /api/me']


def create_client(env: dict, *options: str) -> tuple[str, str]:
    created = subprocess.run([PYTHON, '-m', 'flask', '--app', 'server', 'create-client', 'bench', '--json', *options],
                             cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    client = json.loads(created.stdout)
    return client['client_id'], client['client_secret']


def side_by_side(variants: dict, args, wrk: str, workdir: Path, kind: str) -> dict:
    """Two variants of the project, taking turns on each endpoint of
    SIDE_BY_SIDE_ENDPOINTS: {name: (server, (client_id, secret))}, the reference
    first. The median round of each, and the second's ratio to the first."""
    form_type = {'Content-Type': 'application/x-www-form-urlencoded'}
    runs = []
    for endpoint in SIDE_BY_SIDE_ENDPOINTS:
        scripts = {}
        for name, (server, (client_id, secret)) in variants.items():
            form = f'grant_type=client_credentials&client_id={client_id}&client_secret={secret}'
            if endpoint.startswith('POST'):
                scripts[name] = (server.url + '/oauth/token', lua('POST', form_type, form))
            else:
                token = post_form(f'{server.url}/oauth/token', dict(
                    grant_type='client_credentials', client_id=client_id, client_secret=secret))['access_token']
                scripts[name] = (server.url + '/api/me', lua('GET', {'Authorization': f'Bearer {token}'}))
        for round_number in range(1, args.rounds + 1):
            for name, (url, script) in scripts.items():
                figures = run_wrk(wrk, url, script, args, workdir)
                runs.append({'variant': name, 'endpoint': endpoint, 'round': round_number, **figures})
                print(f'{kind:10} small {name:11} {endpoint:26} round {round_number}  '
                      f'{figures["rps"]:8.0f} req/s', file=sys.stderr, flush=True)
    reference, candidate = variants
    summary = []
    for endpoint in SIDE_BY_SIDE_ENDPOINTS:
        median = {}
        for name in variants:
            rounds = sorted((r for r in runs if (r['variant'], r['endpoint']) == (name, endpoint)),
                            key=lambda r: r['rps'])
            median[name] = rounds[len(rounds) // 2]
        summary.append({'endpoint': endpoint, f'{reference}_rps': median[reference]['rps'],
                        f'{candidate}_rps': median[candidate]['rps'],
                        f'{candidate}_p50_ms': median[candidate]['p50_ms'],
                        f'{candidate}_p99_ms': median[candidate]['p99_ms'],
                        f'ratio_{candidate}_to_{reference}': round(median[candidate]['rps'] /
                                                                   median[reference]['rps'], 3)})
    return {'summary': summary, 'runs': runs}


def measure(database_url: str, args, wrk: str, workdir: Path) -> dict:
    """Every endpoint of the three apps on one database, with a small tokens
    table and then with args.tokens rows."""
    # One client asks for thousands of tokens a second here: far past the
    # per-client issuance limit a real client should meet.
    # gunicorn makes no JWT signing key without a passphrase.
    env = {'DATABASE_URL': database_url, 'FLASK_AUDIT_LOG_FILE': str(workdir / 'audit.log'),
           'FLASK_TOKENS_PER_CLIENT': '"100000000 per minute"', 'FLASK_SIGNING_KEY_PASSPHRASE': 'the benchmark'}
    # The command runs the project's migrations first: the schema all three apps use.
    client_id, secret = create_client(env)
    jwt_client = create_client(env, '--token-format', 'jwt')
    form = f'grant_type=client_credentials&client_id={client_id}&client_secret={secret}'
    basic = base64.b64encode(f'{client_id}:{secret}'.encode()).decode()
    form_type = {'Content-Type': 'application/x-www-form-urlencoded'}
    kind = database_url.split(':', 1)[0].split('+')[0]

    servers, metrics_off = {}, None
    results, rows, formats, metrics = [], {}, {}, {}
    try:
        servers['project'] = Gunicorn('server:app', env, workdir / 'project.log')
        servers['baseline'] = Gunicorn('baseline:app', env, workdir / 'baseline.log', chdir=ROOT / 'bench')
        servers['authlib'] = Gunicorn('authlib_peer:app', env, workdir / 'authlib.log', chdir=ROOT / 'bench')
        # The project once more, with its Prometheus metrics turned off: their cost.
        metrics_off = Gunicorn('server:app', {**env, 'FLASK_METRICS_ENABLED': 'false'}, workdir / 'project-off.log')
        for phase in ('small', 'large'):
            if phase == 'large':
                client_pk = database_count(database_url, 'SELECT id FROM clients WHERE client_id = :id', id=client_id)
                print(f'{kind}: seeding the tokens table to {args.tokens:,} rows ...', file=sys.stderr, flush=True)
                seed_tokens(database_url, client_pk, args.tokens)
            tokens = {name: post_form(f'{server.url}/oauth/token', dict(
                grant_type='client_credentials', client_id=client_id, client_secret=secret))['access_token']
                for name, server in servers.items()}
            token_form = lua('POST', form_type, form)
            token_basic = lua('POST', {**form_type, 'Authorization': f'Basic {basic}'}, 'grant_type=client_credentials')
            cases = [  # endpoint, path, the wrk script for each app
                ('POST /oauth/token (form)', '/oauth/token', dict.fromkeys(servers, token_form)),
                ('POST /oauth/token (Basic)', '/oauth/token', dict.fromkeys(servers, token_basic)),
                ('GET /api/me', '/api/me', {name: lua('GET', {'Authorization': f'Bearer {token}'})
                                            for name, token in tokens.items()}),
            ]
            for endpoint, path, scripts in cases:
                for round_number in range(1, args.rounds + 1):
                    for app_name, server in servers.items():
                        figures = run_wrk(wrk, server.url + path, scripts[app_name], args, workdir)
                        results.append({'phase': phase, 'app': app_name, 'endpoint': endpoint,
                                        'round': round_number, **figures})
                        print(f'{kind:10} {phase:5} {app_name:8} {endpoint:26} round {round_number}  '
                              f'{figures["rps"]:8.0f} req/s', file=sys.stderr, flush=True)
            if phase == 'small':
                project = servers['project']
                formats = side_by_side({'opaque': (project, (client_id, secret)), 'jwt': (project, jwt_client)},
                                       args, wrk, workdir, kind)
                metrics = side_by_side({'metrics_off': (metrics_off, (client_id, secret)),
                                        'metrics_on': (project, (client_id, secret))}, args, wrk, workdir, kind)
            rows[phase] = database_count(database_url, 'SELECT count(*) FROM tokens')
    finally:
        for server in [*servers.values(), *([metrics_off] if metrics_off else [])]:
            server.stop()

    def figure(phase, app_name, endpoint):
        """The median round (by req/s) of one app on one endpoint."""
        rounds = sorted((r for r in results if (r['phase'], r['app'], r['endpoint']) == (phase, app_name, endpoint)),
                        key=lambda r: r['rps'])
        return rounds[len(rounds) // 2]

    summary = []
    for endpoint in ENDPOINTS:
        row = {'endpoint': endpoint}
        for phase, suffix in (('small', ''), ('large', '_large')):
            figures = {app_name: figure(phase, app_name, endpoint) for app_name in servers}
            for app_name, measured in figures.items():
                row[f'{app_name}_rps{suffix}'] = measured['rps']
                if phase == 'small':
                    row[f'{app_name}_p50_ms'], row[f'{app_name}_p99_ms'] = measured['p50_ms'], measured['p99_ms']
            for other in ('baseline', 'authlib'):
                row[f'ratio_to_{other}{suffix}'] = round(figures['project']['rps'] / figures[other]['rps'], 3)
        row['ratio_large_to_small'] = round(row['project_rps_large'] / row['project_rps'], 3)
        summary.append(row)
    return {'database': kind, 'tokens_small': rows['small'], 'tokens_large': rows['large'],
            'summary': summary, 'runs': results, 'token_formats': formats, 'metrics': metrics}


def print_table(measured: dict) -> None:
    large = f'{measured["tokens_large"]:,}'
    print(f'\n{measured["database"]}: {measured["tokens_small"]:,} then {large} tokens stored')
    print(f'| endpoint | project req/s (p50 / p99 ms) | baseline req/s | Authlib req/s '
          f'| project / baseline | project / Authlib | at {large} tokens: project / baseline, / Authlib '
          f'| project at {large} / small table |')
    print('|---|---|---|---|---|---|---|---|')
    for s in measured['summary']:
        print(f'| {s["endpoint"]} | {s["project_rps"]:,.0f} ({s["project_p50_ms"]:.2f} / {s["project_p99_ms"]:.2f}) '
              f'| {s["baseline_rps"]:,.0f} | {s["authlib_rps"]:,.0f} '
              f'| {s["ratio_to_baseline"]:.2f}x | {s["ratio_to_authlib"]:.2f}x '
              f'| {s["ratio_to_baseline_large"]:.2f}x, {s["ratio_to_authlib_large"]:.2f}x '
              f'| {s["ratio_large_to_small"]:.2f}x |')
    print(f'\n{measured["database"]}: the project\'s token formats (ES256 JWTs), small table')
    print('| endpoint | opaque req/s | JWT req/s (p50 / p99 ms) | JWT / opaque |')
    print('|---|---|---|---|')
    for s in measured['token_formats']['summary']:
        print(f'| {s["endpoint"]} | {s["opaque_rps"]:,.0f} | {s["jwt_rps"]:,.0f} '
              f'({s["jwt_p50_ms"]:.2f} / {s["jwt_p99_ms"]:.2f}) | {s["ratio_jwt_to_opaque"]:.2f}x |')
    print(f'\n{measured["database"]}: the cost of the Prometheus metrics, small table')
    print('| endpoint | metrics off req/s | metrics on req/s | on / off |')
    print('|---|---|---|---|')
    for s in measured['metrics']['summary']:
        print(f'| {s["endpoint"]} | {s["metrics_off_rps"]:,.0f} | {s["metrics_on_rps"]:,.0f} '
              f'| {s["ratio_metrics_on_to_metrics_off"]:.2f}x |')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--databases', default='sqlite,postgresql',
                        help='comma-separated: sqlite (a temporary file) and postgresql (a throwaway server on '
                             'loopback, as the tests start it); ignored when DATABASE_URL is set')
    parser.add_argument('--duration', type=int, default=5, help='seconds per measurement (default 5)')
    parser.add_argument('--rounds', type=int, default=3, help='measurements of each endpoint and app (default 3)')
    parser.add_argument('--connections', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2, help="wrk's threads")
    parser.add_argument('--tokens', type=int, default=1_000_000, help='rows in the tokens table for the second pass')
    parser.add_argument('--output', default=str(ROOT / 'bench' / 'latest.json'))
    args = parser.parse_args()
    wrk = ensure_wrk()

    workdir = Path(tempfile.mkdtemp(prefix='oauth-bench-'))
    measured = []
    try:
        if os.environ.get('DATABASE_URL'):
            measured.append(measure(os.environ['DATABASE_URL'], args, wrk, workdir))
        for kind in () if os.environ.get('DATABASE_URL') else args.databases.split(','):
            if kind == 'sqlite':
                measured.append(measure(f'sqlite:///{workdir}/bench.sqlite', args, wrk, workdir))
            elif kind == 'postgresql':
                sys.path.insert(0, str(ROOT / 'tests'))
                from pgserver import PostgresUnavailable, ThrowawayPostgres
                postgres = ThrowawayPostgres()
                try:
                    postgres.start()
                    measured.append(measure(postgres.create_database('bench'), args, wrk, workdir))
                except PostgresUnavailable as error:
                    sys.exit(f'bench: PostgreSQL did not start: {error} (or run with --databases sqlite)')
                finally:
                    postgres.stop()
            else:
                sys.exit(f'bench: unknown database {kind!r}: use sqlite, postgresql or both')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    machine = {'cpus': os.cpu_count(), 'processor': platform.processor() or platform.machine(),
               'python': platform.python_version(), 'system': platform.platform()}
    report = {'date': datetime.now(UTC).isoformat(timespec='seconds'), 'machine': machine,
              'settings': {'gunicorn_workers': 2, 'wrk_threads': args.threads, 'connections': args.connections,
                           'duration_s': args.duration, 'rounds': args.rounds, 'tokens': args.tokens},
              'databases': measured}
    Path(args.output).write_text(json.dumps(report, indent=2) + '\n')
    errors = sum(run['errors'] for database in measured
                 for run in database['runs'] + database['token_formats']['runs'] + database['metrics']['runs'])

    print(f'{machine["cpus"]} CPUs, Python {machine["python"]}; gunicorn 2 workers, '
          f'wrk {args.threads} threads x {args.connections} connections x {args.duration} s, '
          f'median of {args.rounds} rounds, the three apps taking turns')
    for database in measured:
        print_table(database)
    print(f'\nfigures written to {args.output}' + (f'; {errors} failed requests!' if errors else ''))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
