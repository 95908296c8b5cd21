"""The benchmark's Authlib peer: the same job done the way Authlib's
documentation shows (Flask OAuth 2.0 server: AuthorizationServer with the
client credentials grant, ResourceProtector with a bearer token validator,
Flask-SQLAlchemy models implementing ClientMixin and TokenMixin).

It runs on the project's tables and database settings, so its models map
those tables: the secret is checked against its salted hash in constant time,
and tokens are stored and looked up by their SHA-256, as the project does.
The one query of a protected request joins the token's client (as the
project's does) rather than loading it lazily in a second query.

    DATABASE_URL=... gunicorn -w 2 --chdir bench authlib_peer:app
"""
import hashlib
import os
from datetime import UTC, datetime, timedelta

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash

app = Flask(__name__)
app.config['SQLALCHEMY_DATABASE_URI'] = os.environ['DATABASE_URL']
if not app.config['SQLALCHEMY_DATABASE_URI'].startswith('sqlite'):
    app.config['SQLALCHEMY_ENGINE_OPTIONS'] = {'pool_pre_ping': True}  # as the project
app.config['OAUTH2_TOKEN_EXPIRES_IN'] = {'client_credentials': 3600}  # the project's lifetime
db = SQLAlchemy(app, session_options={'expire_on_commit': False})

if app.config['SQLALCHEMY_DATABASE_URI'].startswith('sqlite'):
    with app.app_context():
        @event.listens_for(db.engine, 'connect')
        def sqlite_settings(connection, _):  # as production/sqlite.py
            for pragma in ('journal_mode=WAL', 'synchronous=NORMAL', 'busy_timeout=10000', 'foreign_keys=ON'):
                connection.execute(f'PRAGMA {pragma}')


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


class Client(db.Model, ClientMixin):
    __tablename__ = 'clients'
    id = db.Column(db.Integer, primary_key=True)
    client_id = db.Column(db.String(64), unique=True)
    name = db.Column(db.String(200))
    secret_hash = db.Column(db.String(256))
    scope = db.Column(db.String(1000))
    grant_types = db.Column(db.String(200))
    token_lifetime = db.Column(db.Integer)
    disabled = db.Column(db.Boolean)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        if not scope:
            return self.scope
        allowed = set(self.scope.split())
        return ' '.join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return not self.disabled and check_password_hash(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ('client_secret_basic', 'client_secret_post')

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types.split()


class Token(db.Model, TokenMixin):
    __tablename__ = 'tokens'
    id = db.Column(db.Integer, primary_key=True)
    access_token_hash = db.Column(db.String(64), unique=True)
    client_pk = db.Column(db.Integer, db.ForeignKey('clients.id'))
    scope = db.Column(db.String(1000))
    issued_at = db.Column(db.DateTime)
    expires = db.Column(db.DateTime)
    revoked_at = db.Column(db.DateTime)
    client = db.relationship(Client)

    def check_client(self, client):
        return self.client_pk == client.id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return int((self.expires - self.issued_at).total_seconds())

    def is_expired(self):
        return self.expires <= datetime.now(UTC).replace(tzinfo=None)

    def is_revoked(self):
        return self.revoked_at is not None or self.client.disabled


def query_client(client_id):
    return Client.query.filter_by(client_id=client_id).first()


def save_token(token, request):
    now = datetime.now(UTC).replace(tzinfo=None)
    db.session.add(Token(access_token_hash=sha256(token['access_token']), client_pk=request.client.id,
                         scope=token.get('scope', ''), issued_at=now,
                         expires=now + timedelta(seconds=token['expires_in'])))
    db.session.commit()


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ('client_secret_basic', 'client_secret_post')  # as the project


authorization = AuthorizationServer(app, query_client=query_client, save_token=save_token)
authorization.register_grant(ClientCredentialsGrant)


class HashedBearerTokenValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        return Token.query.options(joinedload(Token.client)).filter_by(
            access_token_hash=sha256(token_string)).first()


require_oauth = ResourceProtector()
require_oauth.register_token_validator(HashedBearerTokenValidator())


@app.route('/oauth/token', methods=['POST'])
def issue_token():
    return authorization.create_token_response()


@app.route('/api/me')
@require_oauth()
def me():
    client = current_token.client
    return jsonify(client_id=client.client_id, name=client.name, scope=current_token.scope)

