"""The benchmark's baseline: the same two endpoints with no OAuth library.

Plain Flask and SQLAlchemy Core on the project's tables and database settings,
doing the least any correct server must: look the client up and check its
secret hash in constant time, store the new token's SHA-256, and for the API
find the token by its hash with its client in one query and check expiry,
revocation and the client's state. No error handling beyond a status code.

On SQLite it sets the same pragmas as models.py. For its token inserts
models.py also queues writers on a lock file and checkpoints in a thread
(turning SQLite's checkpoints inside commits off on those connections): that
is the project's work, not a setting, so here SQLite does both its own way,
as it does for any plain Flask app.

    DATABASE_URL=... gunicorn -w 2 --chdir bench baseline:app
"""
import hashlib
import os
import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Flask, jsonify, request
from werkzeug.security import check_password_hash

app = Flask(__name__)
engine = sa.create_engine(os.environ['DATABASE_URL'])

if engine.dialect.name == 'sqlite':
    @sa.event.listens_for(engine, 'connect')
    def sqlite_settings(connection, _):  # as models.py (see above)
        for pragma in ('journal_mode=WAL', 'synchronous=NORMAL', 'busy_timeout=10000', 'foreign_keys=ON'):
            connection.execute(f'PRAGMA {pragma}')

FIND_CLIENT = sa.text('SELECT id, secret_hash, scope, token_lifetime, disabled FROM clients WHERE client_id = :id')
INSERT_TOKEN = sa.text('INSERT INTO tokens (access_token_hash, client_pk, scope, issued_at, expires) '
                       'VALUES (:hash, :client, :scope, :now, :expires)')
FIND_TOKEN = sa.text('SELECT t.expires, t.revoked_at, t.scope, c.client_id, c.name, c.disabled '
                     'FROM tokens t JOIN clients c ON c.id = t.client_pk WHERE t.access_token_hash = :hash'
                     ).columns(expires=sa.DateTime, revoked_at=sa.DateTime, disabled=sa.Boolean)


@app.post('/oauth/token')
def token():
    client_id, secret = request.form.get('client_id'), request.form.get('client_secret')
    if request.authorization and request.authorization.type == 'basic':
        client_id, secret = request.authorization.username, request.authorization.password
    with engine.begin() as connection:
        client = connection.execute(FIND_CLIENT, {'id': client_id}).first()
        if client is None or client.disabled or not check_password_hash(client.secret_hash, secret or ''):
            return jsonify(error='invalid_client'), 401
        access_token, lifetime = secrets.token_urlsafe(30), client.token_lifetime or 3600
        now = datetime.now(UTC).replace(tzinfo=None)
        connection.execute(INSERT_TOKEN, {'hash': hashlib.sha256(access_token.encode()).hexdigest(),
                                          'client': client.id, 'scope': client.scope, 'now': now,
                                          'expires': now + timedelta(seconds=lifetime)})
    body = {'access_token': access_token, 'token_type': 'Bearer', 'expires_in': lifetime, 'scope': client.scope}
    return jsonify(body), 200, {'Cache-Control': 'no-store'}


@app.get('/api/me')
def me():
    scheme, _, access_token = (request.headers.get('Authorization') or '').partition(' ')
    with engine.connect() as connection:
        row = connection.execute(FIND_TOKEN, {'hash': hashlib.sha256(access_token.encode()).hexdigest()}).first()
    if scheme.lower() != 'bearer' or row is None or row.revoked_at is not None or row.disabled \
            or row.expires <= datetime.now(UTC).replace(tzinfo=None):
        return jsonify(error='invalid_token'), 401
    return jsonify(client_id=row.client_id, name=row.name, scope=row.scope)
