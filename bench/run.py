"""Throughput, latency and memory of the authorization server beside its
peers, an equal-duty baseline and a ceiling, in one run.

    .venv/bin/python bench/run.py                       # SQLite and a throwaway PostgreSQL
    .venv/bin/python bench/run.py --databases sqlite    # SQLite only
    .venv/bin/python bench/run.py --duration 10 --rounds 5
    DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --prepare             # only make the environments below

It serves, each with 2 workers on 127.0.0.1:
- project: the project (server:app) under gunicorn (sync workers), as deployed;
- granian: the project under granian's WSGI interface, its defaults otherwise;
- baseline: the equal-duty baseline (bench/baseline.py): the project's
  statements, checks, audit line and brute-force counters, plain Flask and
  SQLAlchemy Core, no OAuth library;
- authlib: the Authlib peer (bench/authlib_peer.py);
- dot: the django-oauth-toolkit peer (bench/dot_peer/), its client secret
  hashed with one round as the project's is; its default hasher (PBKDF2 at
  1,000,000 rounds) is measured once per database, briefly (2 connections);
- hello: a hello-world Flask app (bench/hello.py), the ceiling.
All but the DOT peer (which has a database of its own of the same kind) use
the project's tables. wrk drives POST /oauth/token (form and Basic
credentials) and GET /api/me for a fixed time. Each endpoint is measured in
rounds, the apps taking turns, so that a moment of noise on the machine lands
on no app alone; tables show the median round (req/s, p50 and p99 latency),
bench/latest.json keeps every round; before its first round each app has
--warmup seconds on the endpoint, unmeasured. GET /api/me is measured first,
on a tokens table holding a handful of rows, and again at the end on the
apps sharing the project's tables, after the tokens table is bulk-seeded to
--tokens rows. Then each app's worker memory (RSS) is read.
Before that, the project's DPoP row (RFC 9449), on a project server of its
own (so that the workers whose memory is compared serve what every app
serves): its token endpoint (form) and GET /api/me with opaque and JWT
tokens, the bearer request and the DPoP-bound one taking turns. A DPoP proof is good once and for a minute:
before each DPoP run, --dpop-rate proofs for each of its seconds are signed
with client.py's PrivateKey and written to files, one per wrk thread, which
a wrk script sends in turn; a run that uses them up fails, never reusing one.
The targets the project has set itself are printed, met or not.

The DOT peer and granian run from virtual environments of their own, made
here under bench/results/ on first use from bench/dot_peer/requirements.txt
and bench/requirements.txt (pip, from PyPI), and made again when those files
change; --dot-python and --granian-python name ready ones instead.
With DATABASE_URL set it uses (and fills) that database only, the DOT peer
too (its tables are named apart): give it an empty one.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / 'bench'
RESULTS = BENCH / 'results'
PYTHON = sys.executable
WORKERS = 2

APPS = {  # name: what it is, in the order of the tables
    'project': 'the project under gunicorn',
    'granian': 'the project under granian (WSGI)',
    'baseline': 'the equal-duty baseline (bench/baseline.py)',
    'authlib': 'the Authlib peer (bench/authlib_peer.py)',
    'dot': 'the django-oauth-toolkit peer, one-round secret hash (bench/dot_peer/)',
    'hello': 'a hello-world Flask app, the ceiling (bench/hello.py)',
}
LARGE_TABLE_APPS = ('project', 'baseline', 'authlib')  # measured again at --tokens rows: the project's tables
ENDPOINTS = ['POST /oauth/token (form)', 'POST /oauth/token (Basic)', 'GET /api/me']
DPOP_ENDPOINTS = ['POST /oauth/token (form)', 'GET /api/me']  # each with bearer and DPoP, opaque and JWT
DPOP_PROOF_MAX_AGE = 60  # seconds a proof is accepted after its iat: the server's FLASK_DPOP_PROOF_MAX_AGE
SLOW_HASHER_SECONDS, SLOW_HASHER_CONNECTIONS = 5, 2
TARGETS = {  # the project's own goals (issue 26)
    'peer': 1.3,  # project / each peer (Authlib, DOT with the one-round hash), every endpoint
    'baseline': 0.8,  # project / the equal-duty baseline, every endpoint
    'large_table': 0.9,  # GET /api/me at --tokens rows / on the small table
    'rss_over_authlib_mib': 10,  # a project worker's RSS at most the Authlib peer's plus this
    'granian': 1.2,  # granian / gunicorn, every endpoint: then documented as an option
    'dpop': 1.5,  # a DPoP request's p50 latency / the bearer request's, at most (issue 23)
}


# --- Tools and environments -------------------------------------------------


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


def environment(name: str, requirements: Path, *included: Path) -> str:
    """The Python of bench/results/<name>-venv with `requirements` installed
    (the files it includes named in `included`): made on first use, and again
    when any of those files changes."""
    venv = RESULTS / f'{name}-venv'
    python = venv / 'bin' / 'python'
    stamp = venv / 'installed-requirements.sha256'
    wanted = hashlib.sha256(b''.join(path.read_bytes() for path in (requirements, *included))).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    print(f'bench: making {venv} from {requirements.relative_to(ROOT)} (pip, once) ...', file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / f'{name}-venv.log'
    with open(log, 'w') as out:
        try:
            made = subprocess.run([PYTHON, '-m', 'venv', str(venv)], stdout=out, stderr=subprocess.STDOUT)
            if made.returncode == 0:
                made = subprocess.run([str(python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
                                       '-r', str(requirements)], stdout=out, stderr=subprocess.STDOUT, timeout=900)
        except subprocess.TimeoutExpired:
            sys.exit(f'bench: pip took more than 15 minutes to install {requirements.relative_to(ROOT)} (see {log})')
    if made.returncode != 0:
        last = log.read_text().strip().splitlines()[-1:] or ['no output']
        sys.exit(f'bench: could not install {requirements.relative_to(ROOT)} into {venv}: {last[0]} (see {log})')
    stamp.write_text(wanted)
    return str(python)


def dot_python(args) -> str:
    return args.dot_python or environment('dot', BENCH / 'dot_peer' / 'requirements.txt')


def granian_python(args) -> str:
    # The server's own requirements and granian: the project runs there as it does here.
    return args.granian_python or environment('granian', BENCH / 'requirements.txt', ROOT / 'requirements.txt')


def version(python: str, *distributions: str) -> dict:
    script = 'import sys\nfrom importlib.metadata import version\nfor name in sys.argv[1:]: print(version(name))'
    found = subprocess.run([python, '-c', script, *distributions], capture_output=True, text=True, check=True)
    return dict(zip(distributions, found.stdout.split(), strict=True))


# --- Servers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Server:
    """One app served on a free port of 127.0.0.1 by `python -m <server>`;
    its output goes to a log file in the run's folder."""

    def __init__(self, name: str, python: str, server: str, app: str, cwd: Path, env: dict, workdir: Path):
        self.name, self.port = name, free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = workdir / f'{name}.log'
        if server == 'gunicorn':
            options = ['-w', str(WORKERS), '-b', f'127.0.0.1:{self.port}',
                       '--control-socket', str(workdir / f'{name}.ctl')]  # not the shared one in ~/.gunicorn
        else:
            options = ['--interface', 'wsgi', '--workers', str(WORKERS), '--host', '127.0.0.1',
                       '--port', str(self.port), '--no-access-log']
        with open(self.log, 'a') as out:
            self.process = subprocess.Popen(
                [python, '-m', server, *options, app], cwd=cwd, env={**os.environ, **env(self.url)},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        sys.exit(f'bench: {self.name} did not start; see {self.log}:\n{self.log.read_text()[-2000:]}')

    def worker_rss_mib(self) -> list[float]:
        """The resident memory of each worker: the server's child processes."""
        rss = []
        for stat in Path('/proc').glob('[0-9]*/stat'):
            try:
                parent = int(stat.read_text().rpartition(')')[2].split()[1])  # after "pid (name) state"
                if parent == self.process.pid:
                    status = (stat.parent / 'status').read_text()
                    rss.append(int(re.search(r'^VmRSS:\s+(\d+) kB', status, re.M).group(1)) / 1024)
            except (OSError, AttributeError):  # gone meanwhile
                continue
        return rss

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass


# --- wrk --------------------------------------------------------------------


def lua(method: str, headers: dict, body: str = '') -> str:
    lines = [f'wrk.method = "{method}"', f'wrk.body = "{body}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return '\n'.join(lines) + '\n'


# Each request with a DPoP proof of its own, never one used before: each wrk
# thread reads its own file of proofs (PROOFS .. its number) and sends them
# in turn. A thread that has used its last one stops, and done() prints how
# many requests went without one: the run is reported as failed, not
# quietly made of reused proofs. (wrk's own example scripts show setup,
# init, request, done and wrk.thread.)
PROOF_LUA = """
local threads = {}
function setup(thread)
   thread:set("proofs_file", PROOFS .. #threads)
   table.insert(threads, thread)
end
function init(args)
   proofs, sent, short = {}, 0, 0
   for line in io.lines(proofs_file) do proofs[#proofs + 1] = line end
end
function request()
   sent = sent + 1
   if sent > #proofs then
      short = short + 1
      wrk.thread:stop()
      wrk.headers["DPoP"] = nil  -- refused by the server, if it is sent at all
   else
      wrk.headers["DPoP"] = proofs[sent]
   end
   return wrk.format()
end
function done(summary, latency, requests)
   local short = 0
   for _, thread in ipairs(threads) do short = short + thread:get("short") end
   io.write(string.format("DPoP proofs short: %d\\n", short))
end
"""


class ProofScript:
    """The wrk script `request` (lua()'s) with a new DPoP proof on every
    request (RFC 9449 §4.2: a proof is used once, and within
    DPOP_PROOF_MAX_AGE of its iat). Called with a run's length, it signs
    seconds x `rate` proofs then and there, with the client's key (client.py's
    PrivateKey), for `method` and `url` (and `access_token`'s hash, ath),
    splits them among wrk's threads and gives the script that sends them."""

    numbers = itertools.count()  # one set of files per script

    def __init__(self, request: str, key, method: str, url: str, access_token: str | None = None,
                 *, rate: int, threads: int, workdir: Path):
        self.key, self.method, self.url, self.access_token = key, method, url, access_token
        self.rate, self.threads = rate, threads
        self.prefix = workdir / f'proofs-{next(self.numbers)}-'
        self.head = request + f'PROOFS = "{self.prefix}"\n'

    def __call__(self, seconds: int) -> str:
        count = -(-seconds * self.rate // self.threads)  # per thread, rounded up
        for thread in range(self.threads):
            proofs = (self.key.dpop_proof(self.method, self.url, self.access_token) for _ in range(count))
            Path(f'{self.prefix}{thread}').write_text(''.join(f'{proof}\n' for proof in proofs))
        return self.head + PROOF_LUA


DURATION_UNITS = {'us': 1e-3, 'ms': 1.0, 's': 1e3}


def run_wrk(url: str, script: str, args, workdir: Path, seconds: int | None = None,
            connections: int | None = None) -> dict:
    """req/s, p50 and p99 latency (ms) and failed requests of one wrk run."""
    seconds, connections = seconds or args.duration, connections or args.connections
    threads = min(args.threads, connections)
    path = workdir / f'request-{len(list(workdir.glob("*.lua")))}.lua'
    path.write_text(script(seconds) if callable(script) else script)  # a ProofScript signs its proofs now
    # wrk's own timeout (2 s) would count the slow hasher's answers as errors.
    out = subprocess.run([args.wrk, f'-t{threads}', f'-c{connections}', f'-d{seconds}s', '--timeout', '30s',
                          '--latency', '-s', str(path), url],
                         capture_output=True, text=True, timeout=seconds + 90).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    percentiles = {p: round(float(v) * DURATION_UNITS[unit], 3)
                   for p, v, unit in re.findall(r'^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$', out, re.M)}
    errors = sum(int(n) for n in re.findall(r'Non-2xx or 3xx responses:\s+(\d+)', out))
    errors += sum(int(n) for n in re.findall(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)',
                                            out)[0]) if 'Socket errors' in out else 0
    figures = {'rps': rps, 'p50_ms': percentiles.get('50'), 'p99_ms': percentiles.get('99'), 'errors': errors}
    short = re.search(r'^DPoP proofs short: (\d+)$', out, re.M)
    if short:  # a ProofScript's run: requests that found no proof left are failures too
        figures['proofs_short'] = int(short.group(1))
        figures['errors'] += figures['proofs_short']
    return figures


# --- Databases and clients --------------------------------------------------


def post_form(url: str, form: dict, headers: dict | None = None) -> dict:
    import requests
    deadline = time.monotonic() + 60
    while True:  # a worker may still be loading the app
        try:
            answer = requests.post(url, data=form, headers=headers, timeout=30)
            answer.raise_for_status()
            return answer.json()
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
    engine.dispose()
    return database_count(database_url, 'SELECT count(*) FROM tokens')


def database_count(database_url: str, sql: str, **params):
    import sqlalchemy as sa
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar_one()
    finally:
        engine.dispose()


def run_command(argv: list[str], cwd: Path, env: dict) -> str:
    """A set-up command's output; if it fails, the benchmark stops with what it said."""
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f'bench: {" ".join(argv[1:4])} ... failed:\n{(done.stderr or done.stdout)[-2000:]}')
    return done.stdout


def create_client(env: dict, *options: str) -> tuple[str, str]:
    """A client of the project (its migrations run first: the schema the apps on its tables use)."""
    client = json.loads(run_command([PYTHON, '-m', 'flask', '--app', 'server', 'create-client', 'bench', '--json',
                                     *options], ROOT, env))
    return client['client_id'], client['client_secret']


def create_dot_applications(python: str, env: dict) -> dict:
    """DOT's tables (its migrations) and two confidential client-credentials
    applications made with its createapplication command: one whose secret
    is hashed with the one-round hasher, one with DOT's default. Their
    (client_id, secret) by hasher."""
    manage = [python, 'manage.py']
    run_command([*manage, 'migrate', '--verbosity', '0'], BENCH / 'dot_peer', env)
    applications = {}
    for hasher in ('pbkdf2_sha256_one_round', 'default'):
        client_id, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        # --option=value: a random value may start with "-", which would pass for an option.
        run_command([*manage, 'createapplication', 'confidential', 'client-credentials', '--name', 'bench',
                     f'--client-id={client_id}', f'--client-secret={secret}'], BENCH / 'dot_peer',
                    {**env, 'DOT_CLIENT_SECRET_HASHER': hasher})
        applications[hasher] = (client_id, secret)
    return applications


# --- One database -----------------------------------------------------------


def wrk_scripts(endpoint: str, apps: dict) -> dict:
    """{name: (url, wrk script)} for one endpoint, from {name: (base URL, (client_id, secret))}.
    For GET /api/me each app first issues the token the script sends."""
    form_type = {'Content-Type': 'application/x-www-form-urlencoded'}
    found = {}
    for name, (url, (client_id, secret)) in apps.items():
        if endpoint == 'GET /api/me':
            access_token = post_form(f'{url}/oauth/token', dict(
                grant_type='client_credentials', client_id=client_id, client_secret=secret))['access_token']
            found[name] = (f'{url}/api/me', lua('GET', {'Authorization': f'Bearer {access_token}'}))
        elif endpoint == 'POST /oauth/token (Basic)':
            basic = base64.b64encode(f'{client_id}:{secret}'.encode()).decode()
            found[name] = (f'{url}/oauth/token', lua('POST', {**form_type, 'Authorization': f'Basic {basic}'},
                                                     'grant_type=client_credentials'))
        else:
            found[name] = (f'{url}/oauth/token', lua('POST', form_type, f'grant_type=client_credentials&'
                                                     f'client_id={client_id}&client_secret={secret}'))
    return found


def warm_up(scripts: dict, args, workdir: Path) -> None:
    """--warmup seconds of each script, unmeasured: its code loaded, its pools filled."""
    for url, script in scripts.values() if args.warmup else ():
        run_wrk(url, script, args, workdir, seconds=args.warmup)


def take_turns(scripts: dict, args, workdir: Path, runs: list, key: str, **record) -> None:
    """args.rounds rounds of each script in turn; each run appended to `runs`
    as record + {key: the script's name, 'round': n} + its figures."""
    for round_number in range(1, args.rounds + 1):
        for name, (url, script) in scripts.items():
            figures = run_wrk(url, script, args, workdir)
            runs.append({**record, key: name, 'round': round_number, **figures})
            print(*record.values(), name, f'round {round_number}', f'{figures["rps"]:.0f} req/s',
                  f'p99 {figures["p99_ms"]} ms', sep='  ', file=sys.stderr, flush=True)


def median_round(runs: list[dict], **match) -> dict:
    """The median round (by req/s) of the runs matching `match`."""
    rounds = sorted((run for run in runs if all(run[key] == value for key, value in match.items())),
                    key=lambda run: run['rps'])
    return rounds[len(rounds) // 2]


def median_figures(runs: list[dict], **match) -> dict:
    """req/s, p50 and p99 latency and failed requests of the median round."""
    median = median_round(runs, **match)
    return {key: median[key] for key in ('rps', 'p50_ms', 'p99_ms', 'errors')}


def measure(database_url: str, dot_database_url: str, args, workdir: Path) -> dict:
    """Every app and endpoint on one database: the small tokens table, then args.tokens rows."""
    kind = database_url.split(':', 1)[0].split('+')[0]
    # One client asks for thousands of tokens a second here: far past the
    # per-client issuance limit a real client should meet.
    # gunicorn makes no JWT signing key without a passphrase.
    env = {'DATABASE_URL': database_url, 'FLASK_AUDIT_LOG_FILE': str(workdir / f'audit-{kind}.log'),
           'FLASK_TOKENS_PER_CLIENT': '"100000000 per minute"', 'FLASK_SIGNING_KEY_PASSPHRASE': 'the benchmark'}
    dot_env = {'DATABASE_URL': dot_database_url, 'DJANGO_SECRET_KEY': secrets.token_urlsafe(50)}
    client_id, secret = create_client(env)
    dot_clients = create_dot_applications(args.dot_python, dot_env)
    credentials = {name: (client_id, secret) for name in APPS}
    credentials['dot'] = dot_clients['pbkdf2_sha256_one_round']

    metrics_dir = workdir / f'granian-metrics-{kind}'
    metrics_dir.mkdir()
    started = {
        # The issuer as production sets it (FLASK_OAUTH2_ISSUER); gunicorn.conf.py
        # sets PROMETHEUS_MULTIPROC_DIR for gunicorn, here for granian.
        'project': (PYTHON, 'gunicorn', 'server:app', ROOT, lambda url: {**env, 'FLASK_OAUTH2_ISSUER': url}),
        'granian': (args.granian_python, 'granian', 'server:app', ROOT,
                    lambda url: {**env, 'FLASK_OAUTH2_ISSUER': url, 'PROMETHEUS_MULTIPROC_DIR': str(metrics_dir)}),
        'baseline': (PYTHON, 'gunicorn', 'baseline:app', BENCH, lambda url: {**env, 'FLASK_OAUTH2_ISSUER': url}),
        'authlib': (PYTHON, 'gunicorn', 'authlib_peer:app', BENCH, lambda url: env),
        'dot': (args.dot_python, 'gunicorn', 'wsgi:application', BENCH / 'dot_peer', lambda url: dot_env),
        'hello': (PYTHON, 'gunicorn', 'hello:app', BENCH, lambda url: {}),
    }
    # The DPoP row on a project server of its own: the workers above, whose
    # memory is compared, serve what every app serves (and load no JWT or DPoP code).
    started['project_dpop'] = started['project']
    if args.side_tables:  # the project once more, with its Prometheus metrics off
        started['metrics_off'] = (PYTHON, 'gunicorn', 'server:app', ROOT, lambda url: {
            **env, 'FLASK_OAUTH2_ISSUER': url, 'FLASK_METRICS_ENABLED': 'false'})
    servers = {}
    runs, tokens, rss, dpop, side = [], {}, {}, {}, {}
    try:
        for name, (python, server, app, cwd, app_env) in started.items():
            servers[name] = Server(f'{name}-{kind}', python, server, app, cwd, app_env, workdir)
        for server in servers.values():
            server.wait()

        def scripts(endpoint: str, names, clients: dict = credentials) -> dict:
            return wrk_scripts(endpoint, {name: (servers[name].url, clients[name]) for name in names})

        # GET /api/me first, while the tokens table holds a handful of rows.
        for endpoint in ('GET /api/me', 'POST /oauth/token (form)', 'POST /oauth/token (Basic)'):
            measured = scripts(endpoint, APPS)
            warm_up(measured, args, workdir)
            take_turns(measured, args, workdir, runs, 'app', database=kind, phase='small', endpoint=endpoint)
            tokens.setdefault('small', database_count(database_url, 'SELECT count(*) FROM tokens'))

        # DOT's default hasher: about a second of CPU per request, so two
        # connections (one a worker) and a few seconds, once.
        url, script = scripts('POST /oauth/token (form)', ['dot'], {'dot': dot_clients['default']})['dot']
        slow = run_wrk(url, script, args, workdir, seconds=SLOW_HASHER_SECONDS, connections=SLOW_HASHER_CONNECTIONS)
        runs.append({'database': kind, 'phase': 'small', 'endpoint': 'POST /oauth/token (form)',
                     'app': 'dot_default_hasher', 'round': 1, **slow})

        jwt_client = create_client(env, '--token-format', 'jwt')
        dpop = dpop_table(servers['project_dpop'], {'opaque': (client_id, secret), 'jwt': jwt_client}, args,
                          workdir, kind)
        if args.side_tables:
            side = side_tables(servers, (client_id, secret), jwt_client, args, workdir, kind)

        client_pk = database_count(database_url, 'SELECT id FROM clients WHERE client_id = :id', id=client_id)
        print(f'{kind}: seeding the tokens table to {args.tokens:,} rows ...', file=sys.stderr, flush=True)
        tokens['large'] = seed_tokens(database_url, client_pk, args.tokens)
        take_turns(scripts('GET /api/me', LARGE_TABLE_APPS), args, workdir, runs, 'app', database=kind,
                   phase='large', endpoint='GET /api/me')

        for name, server in servers.items():
            workers = server.worker_rss_mib()
            rss[name] = {'workers': len(workers), 'max_mib': round(max(workers), 1) if workers else None,
                         'mean_mib': round(statistics.mean(workers), 1) if workers else None}
    finally:
        for server in servers.values():
            server.stop()

    summary = []
    for phase, endpoints, names in (('small', ENDPOINTS, APPS), ('large', ['GET /api/me'], LARGE_TABLE_APPS)):
        for endpoint in endpoints:
            figures = {name: median_figures(runs, phase=phase, app=name, endpoint=endpoint) for name in names}
            rps = {name: figures[name]['rps'] for name in names}
            if phase == 'small':
                ratios = {'project / authlib': ratio(rps['project'], rps['authlib']),
                          'project / dot': ratio(rps['project'], rps['dot']),
                          'project / baseline': ratio(rps['project'], rps['baseline']),
                          'project / hello': ratio(rps['project'], rps['hello']),
                          'granian / project': ratio(rps['granian'], rps['project'])}
            else:
                ratios = {f'{name} / {name} on the small table': ratio(rps[name], median_round(
                    runs, phase='small', app=name, endpoint=endpoint)['rps']) for name in names}
            summary.append({'phase': phase, 'endpoint': endpoint, 'apps': figures, 'ratios': ratios})
    measured = {'database': kind, 'tokens_small': tokens['small'], 'tokens_large': tokens['large'],
                'summary': summary, 'dot_default_hasher': {**slow, 'seconds': SLOW_HASHER_SECONDS,
                                                           'connections': SLOW_HASHER_CONNECTIONS},
                'rss_mib': {name: rss[name] for name in APPS}, 'runs': runs, 'dpop': dpop, **side}
    measured['targets'] = targets(measured)
    return measured


def dpop_table(server: Server, clients: dict, args, workdir: Path, kind: str) -> dict:
    """DPoP-bound against bearer (RFC 9449): the project's token endpoint
    (form) and GET /api/me, with an opaque and a JWT client, the bearer
    request and the DPoP one taking turns. Every DPoP request carries a
    proof of its own (ProofScript), signed with one ES256 key, the key the
    API's token is bound to. The target: a DPoP request costs at most
    TARGETS['dpop'] times the bearer request it replaces."""
    sys.path.insert(0, str(ROOT))
    from client import PrivateKey
    client_key = PrivateKey(PrivateKey.generate('ES256')[0])
    threads = min(args.threads, args.connections)
    runs, summary = [], []
    for endpoint in DPOP_ENDPOINTS:
        for token_format, credentials in clients.items():
            url, bearer = wrk_scripts(endpoint, {'bearer': (server.url, credentials)})['bearer']
            if endpoint == 'GET /api/me':  # a token bound to the key, sent as DPoP
                client_id, secret = credentials
                access_token = post_form(f'{server.url}/oauth/token', dict(
                    grant_type='client_credentials', client_id=client_id, client_secret=secret),
                    {'DPoP': client_key.dpop_proof('POST', f'{server.url}/oauth/token')})['access_token']
                dpop = ProofScript(lua('GET', {'Authorization': f'DPoP {access_token}'}), client_key, 'GET', url,
                                   access_token, rate=args.dpop_rate, threads=threads, workdir=workdir)
            else:  # the bearer token request, with a proof
                dpop = ProofScript(bearer, client_key, 'POST', url, rate=args.dpop_rate, threads=threads,
                                   workdir=workdir)
            variants = {'bearer': (url, bearer), 'dpop': (url, dpop)}
            warm_up(variants, args, workdir)
            take_turns(variants, args, workdir, runs, 'variant', database=kind, endpoint=endpoint,
                       token_format=token_format)
            figures = {name: median_figures(runs, endpoint=endpoint, token_format=token_format, variant=name)
                       for name in variants}
            summary.append({'endpoint': endpoint, 'token_format': token_format, **figures,
                            'p50 DPoP / bearer': ratio(figures['dpop']['p50_ms'], figures['bearer']['p50_ms']),
                            'req/s bearer / DPoP': ratio(figures['bearer']['rps'], figures['dpop']['rps'])})
    return {'summary': summary, 'runs': runs, 'proof_key': client_key.alg, 'proofs_per_second': args.dpop_rate}


def side_tables(servers: dict, opaque_client, jwt_client, args, workdir: Path, kind: str) -> dict:
    """--side-tables: the project's two token formats (opaque, ES256 JWT) and
    its Prometheus metrics off and on, each pair taking turns on the token
    endpoint (form) and GET /api/me."""
    pairs = {'token_formats': {'opaque': (servers['project'].url, opaque_client),
                               'jwt': (servers['project'].url, jwt_client)},
             'metrics': {'metrics_off': (servers['metrics_off'].url, opaque_client),
                         'metrics_on': (servers['project'].url, opaque_client)}}
    tables = {}
    for table, variants in pairs.items():
        runs, summary = [], []
        for endpoint in ('POST /oauth/token (form)', 'GET /api/me'):
            take_turns(wrk_scripts(endpoint, variants), args, workdir, runs, 'variant', database=kind,
                       endpoint=endpoint)
            rps = {name: median_round(runs, variant=name, endpoint=endpoint)['rps'] for name in variants}
            reference, candidate = variants
            summary.append({'endpoint': endpoint, **{f'{name}_rps': value for name, value in rps.items()},
                            'ratio': ratio(rps[candidate], rps[reference])})
        tables[table] = {'summary': summary, 'runs': runs}
    return tables


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def targets(measured: dict) -> list[dict]:
    """Each of the project's targets on this database: its value and whether it is met."""
    def target(text, endpoint, value, threshold, at_most=False):
        met = value is not None and (value <= threshold if at_most else value >= threshold)
        return {'target': text, 'endpoint': endpoint, 'value': value, 'met': met}

    small = [row for row in measured['summary'] if row['phase'] == 'small']
    large = next(row for row in measured['summary'] if row['phase'] == 'large')
    found = []
    for row in small:
        for name, label in (('authlib', 'Authlib peer'), ('dot', 'DOT peer (one-round hash)')):
            found.append(target(f'project / {label} >= {TARGETS["peer"]}x', row['endpoint'],
                                row['ratios'][f'project / {name}'], TARGETS['peer']))
        found.append(target(f'project / equal-duty baseline >= {TARGETS["baseline"]}x', row['endpoint'],
                            row['ratios']['project / baseline'], TARGETS['baseline']))
    found.append(target(f'project at {measured["tokens_large"]:,} tokens / small table >= {TARGETS["large_table"]}x',
                        large['endpoint'], large['ratios']['project / project on the small table'],
                        TARGETS['large_table']))
    project, authlib = measured['rss_mib']['project']['max_mib'], measured['rss_mib']['authlib']['max_mib']
    found.append(target(f"a project worker's RSS - an Authlib worker's <= {TARGETS['rss_over_authlib_mib']} MiB",
                        None, round(project - authlib, 1) if project and authlib else None,
                        TARGETS['rss_over_authlib_mib'], at_most=True))
    for row in small:
        found.append(target(f'granian / gunicorn >= {TARGETS["granian"]}x', row['endpoint'],
                            row['ratios']['granian / project'], TARGETS['granian']))
    for row in measured['dpop']['summary']:
        found.append(target(f'DPoP / bearer p50 latency <= {TARGETS["dpop"]}x', f'{row["endpoint"]}, '
                            f'{row["token_format"]} token', row['p50 DPoP / bearer'], TARGETS['dpop'], at_most=True))
    return found


# --- Report -----------------------------------------------------------------


def cell(figures: dict) -> str:
    return f'{figures["rps"]:,.0f} ({figures["p50_ms"] or 0:.1f} / {figures["p99_ms"] or 0:.1f})'


def print_tables(measured: dict) -> None:
    database = measured['database']
    small = [row for row in measured['summary'] if row['phase'] == 'small']
    print(f'\n{database}: req/s (p50 / p99 latency, ms), median round; GET /api/me on '
          f'{measured["tokens_small"]:,} tokens')
    print('| endpoint | ' + ' | '.join(APPS) + ' |')
    print('|---' * (len(APPS) + 1) + '|')
    for row in small:
        print(f'| {row["endpoint"]} | ' + ' | '.join(cell(row['apps'][name]) for name in APPS) + ' |')

    print(f'\n{database}: ratios')
    print('| endpoint | project / Authlib | project / DOT | project / baseline | project / hello (ceiling) '
          '| granian / gunicorn |')
    print('|---|---|---|---|---|---|')
    for row in small:
        print(f'| {row["endpoint"]} | ' + ' | '.join(f'{value}x' for value in row['ratios'].values()) + ' |')

    large = next(row for row in measured['summary'] if row['phase'] == 'large')
    print(f'\n{database}: GET /api/me at {measured["tokens_large"]:,} tokens / on {measured["tokens_small"]:,}')
    print('| app | req/s (p50 / p99 ms) | / small table |')
    print('|---|---|---|')
    for name in LARGE_TABLE_APPS:
        print(f'| {name} | {cell(large["apps"][name])} | {large["ratios"][f"{name} / {name} on the small table"]}x |')

    dpop = measured['dpop']
    print(f'\n{database}: DPoP against bearer, the project under gunicorn (req/s, p50 / p99 ms; '
          f'a new {dpop["proof_key"]} proof each request)')
    print('| endpoint | token | bearer | DPoP | p50 DPoP / bearer | req/s bearer / DPoP |')
    print('|---|---|---|---|---|---|')
    for row in dpop['summary']:
        print(f'| {row["endpoint"]} | {row["token_format"]} | {cell(row["bearer"])} | {cell(row["dpop"])} '
              f'| {row["p50 DPoP / bearer"]}x | {row["req/s bearer / DPoP"]}x |')

    slow = measured['dot_default_hasher']
    print(f'\n{database}: the DOT peer with its default secret hasher (PBKDF2-SHA256, 1,000,000 rounds): '
          f'{slow["rps"]:,.1f} req/s ({slow["p50_ms"] or 0:.0f} / {slow["p99_ms"] or 0:.0f} ms) on '
          f'POST /oauth/token (form), {slow["connections"]} connections for {slow["seconds"]} s')

    print(f'\n{database}: worker memory after the run (RSS, MiB)')
    print('| app | workers | max | mean |')
    print('|---|---|---|---|')
    for name, rss in measured['rss_mib'].items():
        print(f'| {name} | {rss["workers"]} | {rss["max_mib"]} | {rss["mean_mib"]} |')

    for table, title in (('token_formats', "the project's token formats (ES256 JWT / opaque)"),
                         ('metrics', 'the Prometheus metrics (on / off)')):
        if table in measured:
            print(f'\n{database}: {title}')
            for row in measured[table]['summary']:
                print(f'- {row["endpoint"]}: ' + ', '.join(f'{key} {value:,.0f}' for key, value in row.items()
                                                            if key.endswith('_rps')) + f': {row["ratio"]}x')

    print(f'\n{database}: targets')
    for target in measured['targets']:
        where = f' on {target["endpoint"]}' if target['endpoint'] else ''
        print(f'- {"met" if target["met"] else "NOT MET"}: {target["target"]}{where}: {target["value"]}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--databases', default='sqlite,postgresql',
                        help='comma-separated: sqlite (temporary files) and postgresql (a throwaway server on '
                             'loopback, as the tests start it); ignored when DATABASE_URL is set')
    parser.add_argument('--duration', type=int, default=5, help='seconds per measurement (default 5)')
    parser.add_argument('--rounds', type=int, default=3, help='measurements of each endpoint and app (default 3)')
    parser.add_argument('--connections', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2, help="wrk's threads")
    parser.add_argument('--warmup', type=int, default=1, help='unmeasured seconds on each app and endpoint first')
    parser.add_argument('--tokens', type=int, default=1_000_000, help='rows in the tokens table for the second pass')
    parser.add_argument('--dpop-rate', type=int, default=5000,
                        help='DPoP proofs signed for each second of a DPoP run (default 5000): more than the '
                             'project answers; a run that uses them all up fails')
    parser.add_argument('--side-tables', action='store_true',
                        help="also the project's token formats (JWT / opaque) and metrics (on / off) side by side")
    parser.add_argument('--dot-python', help="the Python of a ready environment with bench/dot_peer/requirements.txt")
    parser.add_argument('--granian-python', help='the Python of a ready environment with bench/requirements.txt')
    parser.add_argument('--prepare', action='store_true', help='make the environments above, then stop')
    parser.add_argument('--output', default=str(BENCH / 'latest.json'))
    args = parser.parse_args()
    if args.duration * 1.5 > DPOP_PROOF_MAX_AGE:
        parser.error(f'--duration at most {DPOP_PROOF_MAX_AGE // 1.5:.0f} s: a DPoP proof is good for '
                     f'{DPOP_PROOF_MAX_AGE} s after it is signed, and the proofs of a run are signed before it starts')
    args.wrk = ensure_wrk()
    args.dot_python, args.granian_python = dot_python(args), granian_python(args)
    if args.prepare:
        print(f'wrk: {args.wrk}\nDOT peer: {args.dot_python}\ngranian: {args.granian_python}')
        return 0

    workdir = Path(tempfile.mkdtemp(prefix='oauth-bench-'))
    measured = []
    try:
        if os.environ.get('DATABASE_URL'):
            measured.append(measure(os.environ['DATABASE_URL'], os.environ['DATABASE_URL'], args, workdir))
        for kind in () if os.environ.get('DATABASE_URL') else args.databases.split(','):
            if kind == 'sqlite':
                measured.append(measure(f'sqlite:///{workdir}/bench.sqlite', f'sqlite:///{workdir}/dot.sqlite',
                                        args, workdir))
            elif kind == 'postgresql':
                sys.path.insert(0, str(ROOT / 'tests'))
                from pgserver import PostgresUnavailable, ThrowawayPostgres
                postgres = ThrowawayPostgres()
                try:
                    postgres.start()
                    measured.append(measure(postgres.create_database('bench'), postgres.create_database('dot'),
                                            args, workdir))
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
    all_targets = [target for database in measured for target in database['targets']]
    report = {
        'date': datetime.now(UTC).isoformat(timespec='seconds'), 'machine': machine,
        'settings': {'workers': WORKERS, 'wrk_threads': args.threads, 'connections': args.connections,
                     'duration_s': args.duration, 'rounds': args.rounds, 'warmup_s': args.warmup,
                     'tokens': args.tokens,
                     'versions': {**version(PYTHON, 'Flask', 'gunicorn', 'Authlib', 'SQLAlchemy'),
                                  **version(args.granian_python, 'granian'),
                                  **version(args.dot_python, 'Django', 'django-oauth-toolkit')},
                     'dot_secret_hashers': {'dot': 'pbkdf2_sha256_one_round: PBKDF2-SHA256, 1 round',
                                            'dot_default_hasher': "Django's default: PBKDF2-SHA256, 1,000,000 rounds"}},
        'apps': APPS, 'target_thresholds': TARGETS,
        'targets_met': {'met': sum(target['met'] for target in all_targets), 'of': len(all_targets)},
        'databases': measured}
    Path(args.output).write_text(json.dumps(report, indent=2) + '\n')
    errors = sum(run['errors'] for database in measured for run in database['runs'])
    errors += sum(run['errors'] for database in measured for table in ('dpop', 'token_formats', 'metrics')
                  for run in database.get(table, {}).get('runs', []))
    short = sum(run.get('proofs_short', 0) for database in measured for run in database['dpop']['runs'])

    print(f'{machine["cpus"]} CPUs, Python {machine["python"]}; {WORKERS} workers each, '
          f'wrk {args.threads} threads x {args.connections} connections x {args.duration} s, '
          f'median of {args.rounds} rounds, the apps taking turns')
    for name, description in APPS.items():
        print(f'- {name}: {description}')
    for database in measured:
        print_tables(database)
    print(f'\ntargets met: {report["targets_met"]["met"]} of {report["targets_met"]["of"]}')
    print(f'figures written to {args.output}' + (f'; {errors} failed requests!' if errors else ''))
    if short:
        print(f'{short} DPoP requests found no proof left: run again with a --dpop-rate above the DPoP req/s')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
