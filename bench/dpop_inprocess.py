"""What DPoP costs a request, measured in this process: bearer against DPoP
at the token endpoint and at GET /api/me, with opaque and JWT tokens.

    .venv/bin/python bench/dpop_inprocess.py              # SQLite in a temporary folder
    .venv/bin/python bench/dpop_inprocess.py --profile    # and where a DPoP request's time goes
    DATABASE_URL=postgresql://... .venv/bin/python bench/dpop_inprocess.py   # an empty database of yours

Each request is a WSGI call on the app, its environ built beforehand and
each DPoP proof signed beforehand (a client's work, not the server's), so
the figures are the server's time alone: no network, no HTTP parsing, no
client. Bearer and DPoP take turns, round after round, and each figure is
the median of the rounds. The issue's target: a DPoP request costs at most
1.5 times the bearer request it replaces.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISSUER = 'http://localhost'


def setup_environment() -> str:
    folder = tempfile.mkdtemp(prefix='dpop-bench-')
    os.environ.setdefault('DATABASE_URL', f'sqlite:///{folder}/bench.sqlite')
    os.environ['FLASK_OAUTH2_ISSUER'] = ISSUER
    os.environ['FLASK_TOKENS_PER_CLIENT'] = '"100000000 per minute"'  # the load is one client's
    os.environ['FLASK_AUDIT_LOG_FILE'] = os.devnull  # written, as always, but not to the terminal
    os.environ.setdefault('FLASK_SIGNING_KEY_PASSPHRASE', 'bench passphrase')
    sys.path.insert(0, str(ROOT))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=400, help='requests in a round (default %(default)s)')
    parser.add_argument('--rounds', type=int, default=7, help='rounds of each kind (default %(default)s)')
    parser.add_argument('--profile', action='store_true', help='profile DPoP requests and print the top functions')
    args = parser.parse_args()
    setup_environment()

    from werkzeug.test import EnvironBuilder

    import server
    from client import PrivateKey
    from models import Client, db
    from production.database import upgrade_schema

    app = server.app
    with app.app_context():
        upgrade_schema()
        clients = {}
        for token_format in ('opaque', 'jwt'):
            client, secret = Client.create(f'bench-{token_format}', 'read write')
            client.token_format = token_format
            clients[token_format] = (client.client_id, secret)
        db.session.commit()
    key = PrivateKey(PrivateKey.generate('ES256')[0])
    form = {token_format: {'grant_type': 'client_credentials', 'client_id': client_id, 'client_secret': secret}
            for token_format, (client_id, secret) in clients.items()}

    def environ(method, path, headers, data=None):
        return EnvironBuilder(path=path, method=method, base_url=ISSUER, headers=headers, data=data).get_environ()

    def call(built):
        answer = {}

        def start_response(status, headers, exc_info=None):
            answer['status'] = status
        body = b''.join(app(built, start_response))
        return answer['status'], body

    def token(token_format, dpop):
        headers = {'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token')} if dpop else {}
        status, body = call(environ('POST', '/oauth/token', headers, form[token_format]))
        if not status.startswith('200'):
            raise SystemExit(f'bench: no token: {status} {body[:200]!r}')
        return json.loads(body)['access_token']

    tokens = {(token_format, dpop): token(token_format, dpop) for token_format in clients for dpop in (False, True)}

    def requests_for(endpoint, token_format, dpop, count):
        """The environs of `count` requests, each DPoP one with a proof of its own."""
        built = []
        for _ in range(count):
            if endpoint == 'token':
                headers = {'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token')} if dpop else {}
                built.append(environ('POST', '/oauth/token', headers, form[token_format]))
            else:
                access_token = tokens[(token_format, dpop)]
                headers = ({'Authorization': f'DPoP {access_token}',
                            'DPoP': key.dpop_proof('GET', f'{ISSUER}/api/me', access_token)} if dpop
                           else {'Authorization': f'Bearer {access_token}'})
                built.append(environ('GET', '/api/me', headers))
        return built

    def timed(built):
        started = time.perf_counter()
        for one in built:
            status, body = call(one)
            if not status.startswith('200'):
                raise SystemExit(f'bench: a request failed: {status} {body[:200]!r}')
        return (time.perf_counter() - started) / len(built) * 1e6  # µs a request

    kinds = [(endpoint, token_format) for endpoint in ('token', 'me') for token_format in ('opaque', 'jwt')]
    results = {(endpoint, token_format, dpop): [] for endpoint, token_format in kinds for dpop in (False, True)}
    for endpoint, token_format in kinds:
        timed(requests_for(endpoint, token_format, False, 50))  # warm up
        timed(requests_for(endpoint, token_format, True, 50))
        for _ in range(args.rounds):
            for dpop in (False, True):
                results[(endpoint, token_format, dpop)].append(
                    timed(requests_for(endpoint, token_format, dpop, args.requests)))

    database = os.environ['DATABASE_URL'].split(':')[0]
    print(f'DPoP against bearer, in process, {database}: µs a request, median of {args.rounds} rounds of '
          f'{args.requests}')
    print('| endpoint | token | bearer µs | DPoP µs | DPoP / bearer |')
    print('|---|---|---|---|---|')
    names = {'token': 'POST /oauth/token', 'me': 'GET /api/me'}
    for endpoint, token_format in kinds:
        bearer = statistics.median(results[(endpoint, token_format, False)])
        dpop = statistics.median(results[(endpoint, token_format, True)])
        print(f'| {names[endpoint]} | {token_format} | {bearer:.0f} | {dpop:.0f} | {dpop / bearer:.2f} |')

    if args.profile:
        for endpoint in ('me', 'token'):
            built = requests_for(endpoint, 'opaque', True, args.requests)
            profiler = cProfile.Profile()
            profiler.enable()
            timed(built)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats('cumulative')
            stats.print_stats(r'dpop\.py|replay\.py|validator\.py:\d+\(validate_bearer_token|execute_one|sqlite\.py|'
                              r'jws\.py|ec\.ECPublicKey|access_token$|wsgi_app')
            print(f'\nProfile of {args.requests} DPoP requests to {names[endpoint]} (opaque), cumulative '
                  '(times are inflated by the profiler; compare them with each other):')
            print('\n'.join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
