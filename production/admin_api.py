"""The admin API: manage clients over HTTP, for CI pipelines and
infrastructure-as-code, without a shell on the server.

    POST   /admin/clients                         register (201; the secret, once)
    GET    /admin/clients?limit=N&after=CLIENT_ID a page of clients, in client_id order
    GET    /admin/clients/CLIENT_ID               show
    PATCH  /admin/clients/CLIENT_ID               change client_name, scope, ...
    DELETE /admin/clients/CLIENT_ID               delete, with its tokens and items (204)
    POST   /admin/clients/CLIENT_ID/disable       refuse it, revoke its live tokens
    POST   /admin/clients/CLIENT_ID/enable
    POST   /admin/clients/CLIENT_ID/rotate-secret {"grace": SECONDS}; the new secret, once
    POST   /admin/clients/CLIENT_ID/revoke-tokens revoke its live tokens

Fields carry RFC 7591's names (client_name, scope, grant_types,
token_endpoint_auth_method, jwks) and RFC 9449's (dpop_bound_access_tokens);
metadata it does not know is ignored, as RFC 7591 §2 says. Each route needs a token with the `admin` scope, which no
client has unless given (`create-client NAME --scope admin`). The operations
are production/client_admin.py's, the ones the command line runs.

The list comes a page at a time: `{"clients": [...], "next": "/admin/clients?
after=CLIENT_ID&limit=N"}`, `limit` from 1 to 1000 (100 by default), `after`
the last client_id of the page before; `next` is there while more follow.
A client deleted or added meanwhile never makes a page repeat or skip another.
"""
from __future__ import annotations

import json
import re

from flask import Blueprint, request, url_for
from oauthlib.oauth2.rfc6749 import errors

from models import Client, storable
from production import client_admin

# An answer that carries a client secret is never cached, as a token
# response is not (RFC 6749 §5.1).
NOT_CACHED = {'Cache-Control': 'no-store', 'Pragma': 'no-cache'}
PAGE_LIMIT, PAGE_MAX_LIMIT = 100, 1000
CLIENT_ID_MAX_LENGTH = Client.__table__.c.client_id.type.length


class InvalidClientMetadataError(errors.OAuth2Error):
    error = 'invalid_client_metadata'  # RFC 7591 §3.2.2
    status_code = 400


class UnknownClientError(errors.OAuth2Error):
    error = 'invalid_request'
    status_code = 404
    description = 'No client with this client_id.'


def init_app(app, oauth) -> None:
    """The routes, each behind `@oauth.require_oauth('admin')`."""
    admin = Blueprint('admin', __name__, url_prefix='/admin/clients')
    require_admin = oauth.require_oauth('admin')
    for rule, view, methods in ROUTES:
        admin.add_url_rule(rule, view_func=require_admin(view), methods=methods)
    app.register_blueprint(admin)


def actor() -> str:
    return request.oauth.client.client_id  # the admin client, in the audit line


def body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise errors.InvalidRequestError(description='Send a JSON object (Content-Type: application/json).')
    return data


def existing(client_id: str) -> Client:
    client = client_admin.find(client_id)
    if client is None:
        raise UnknownClientError()
    return client


def invalid_metadata(error: client_admin.InvalidMetadata):
    return InvalidClientMetadataError(description=str(error))


def registration(client: Client, live_tokens: int | None = None) -> dict:
    """The client as RFC 7591 §3.2.1 names its fields, and what this server adds."""
    shown = client_admin.describe(client, live_tokens)
    return {'client_id': client.client_id, 'client_name': client.name, 'scope': client.scope,
            'grant_types': client.allowed_grant_types,
            'token_endpoint_auth_method': client.token_endpoint_auth_method,
            **({'jwks': json.loads(client.jwks)} if client.jwks else {}),
            'client_id_issued_at': int(client.created_at.timestamp()),
            'resources': shown['resources'], 'token_lifetime': client.token_lifetime,
            'token_format': client.token_format, 'dpop_bound_access_tokens': client.dpop_bound_access_tokens,
            'disabled': client.disabled, 'live_tokens': shown['live_tokens'],
            'previous_secret_valid_until': shown['previous_secret_valid_until']}


def grant_types_allow_tokens(grant_types) -> bool:
    if not isinstance(grant_types, list) or not set(grant_types) <= {'client_credentials'}:
        raise client_admin.InvalidMetadata('grant_types', '"grant_types" must be ["client_credentials"] or [] '
                                                          '(a client that only revokes or introspects)')
    return bool(grant_types)


def create_client():
    data = body()
    try:
        client, client_secret = client_admin.create(
            data.get('client_name'), scope=data.get('scope', 'read write'),
            token_lifetime=data.get('token_lifetime'), token_format=data.get('token_format'),
            resources=data.get('resources', []),
            auth_method=data.get('token_endpoint_auth_method', 'client_secret_basic'), jwks=data.get('jwks'),
            may_get_tokens=grant_types_allow_tokens(data.get('grant_types', ['client_credentials'])),
            dpop_bound_access_tokens=data.get('dpop_bound_access_tokens', False), actor=actor())
    except client_admin.InvalidMetadata as error:
        raise invalid_metadata(error) from None
    answer = registration(client)
    if client_secret is not None:  # RFC 7591 §3.2.1; 0: it does not expire
        answer.update(client_secret=client_secret, client_secret_expires_at=0)
    return answer, 201, NOT_CACHED


def page_limit(value: str | None) -> int:
    if value is None:
        return PAGE_LIMIT
    if not re.fullmatch('[0-9]{1,4}', value) or not 1 <= int(value) <= PAGE_MAX_LIMIT:
        raise errors.InvalidRequestError(description=f'"limit" must be a whole number from 1 to {PAGE_MAX_LIMIT}.')
    return int(value)


def page_after(value: str | None) -> str | None:
    if value is not None and not (storable(value) and len(value) <= CLIENT_ID_MAX_LENGTH):
        raise errors.InvalidRequestError(description='"after" must be a client_id: the last one of the page before.')
    return value


def list_clients():
    limit, after = page_limit(request.args.get('limit')), page_after(request.args.get('after'))
    page, more = client_admin.clients_page(after, limit)
    answer = {'clients': [registration(client, live_tokens) for client, live_tokens in page]}
    if more:  # a path, not a URL: nothing here comes from the request's Host
        answer['next'] = url_for('admin.list_clients', after=page[-1][0].client_id, limit=limit)
    return answer


def show_client(client_id):
    return registration(existing(client_id))


UPDATABLE = {'client_name': 'name', 'scope': 'scope', 'token_lifetime': 'token_lifetime',
             'token_format': 'token_format', 'resources': 'resources', 'jwks': 'jwks',
             'dpop_bound_access_tokens': 'dpop_bound_access_tokens'}


def update_client(client_id):
    client, data = existing(client_id), body()
    changes = {UPDATABLE[field]: value for field, value in data.items() if field in UPDATABLE}
    try:
        client_admin.update(client, actor=actor(), **changes)
    except client_admin.InvalidMetadata as error:
        raise invalid_metadata(error) from None
    return registration(client)


def delete_client(client_id):
    client_admin.delete(existing(client_id), actor=actor())
    return '', 204


def disable_client(client_id):
    client = existing(client_id)
    revoked = client_admin.disable(client, actor=actor())
    return {**registration(client), 'tokens_revoked': revoked}


def enable_client(client_id):
    client = existing(client_id)
    client_admin.enable(client, actor=actor())
    return registration(client)


def rotate_secret(client_id):
    client = existing(client_id)
    grace = body().get('grace', 0) if request.data else 0
    try:
        client_secret = client_admin.rotate_secret(client, grace, actor=actor())
    except client_admin.InvalidMetadata as error:
        raise invalid_metadata(error) from None
    return {'client_id': client.client_id, 'client_secret': client_secret, 'client_secret_expires_at': 0,
            'previous_secret_valid_for': grace}, NOT_CACHED


def revoke_tokens(client_id):
    client = existing(client_id)
    return {'client_id': client.client_id, 'tokens_revoked': client_admin.revoke_tokens(client, actor=actor())}


ROUTES = [
    ('', create_client, ['POST']),
    ('', list_clients, ['GET']),
    ('/<client_id>', show_client, ['GET']),
    ('/<client_id>', update_client, ['PATCH']),
    ('/<client_id>', delete_client, ['DELETE']),
    ('/<client_id>/disable', disable_client, ['POST']),
    ('/<client_id>/enable', enable_client, ['POST']),
    ('/<client_id>/rotate-secret', rotate_secret, ['POST']),
    ('/<client_id>/revoke-tokens', revoke_tokens, ['POST']),
]
