"""Managing clients: each operation once, for the command line
(production/cli.py) and the admin API (production/admin_api.py) alike.

Each one checks its input (InvalidMetadata names the field, with RFC 7591's
name), changes the database, commits, and writes its audit line with the
actor: `cli`, or the admin client's id.
"""
from __future__ import annotations

import json

from flask import current_app

from models import Client, Token, check_name, db, scope_to_list
from production import audit
from production.audiences import check_resource
from production.client_assertions import check_jwks

MAX_TOKEN_LIFETIME = 366 * 24 * 3600
MAX_GRACE = 30 * 24 * 3600
MAX_RESOURCES = 20
RESOURCES_MAX_LENGTH = Client.__table__.c.resources.type.length  # what the column holds, space-separated
TOKEN_FORMATS = ('opaque', 'jwt')
AUTH_METHODS = ('client_secret_basic', 'private_key_jwt')
UNCHANGED = object()  # an update leaves the field as it is


class InvalidMetadata(ValueError):
    """A value a client field cannot take (RFC 7591 §3.2.2 invalid_client_metadata)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def checked(field: str, check, value):
    try:
        return check(value)
    except InvalidMetadata:
        raise
    except (ValueError, TypeError) as error:
        raise InvalidMetadata(field, str(error)) from None


def check_scope(scope) -> str:
    if not isinstance(scope, str):
        raise ValueError('"scope" must be a string of space-separated scopes')
    supported = current_app.config['OAUTH2_SCOPES_SUPPORTED']
    unknown = set(scope_to_list(scope)) - set(supported)
    if unknown:
        raise ValueError(f'unknown scope {sorted(unknown)[0]!r}; supported: ' + ' '.join(supported))
    return ' '.join(scope_to_list(scope))


def check_lifetime(seconds) -> int | None:
    """Seconds; 0 or None mean the server's default."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_TOKEN_LIFETIME:
        raise ValueError(f'"token_lifetime" must be a whole number of seconds from 0 to {MAX_TOKEN_LIFETIME}')
    return seconds or None


def check_format(token_format) -> str | None:
    """'opaque' or 'jwt'; None (or 'default') means the server's ACCESS_TOKEN_FORMAT."""
    if token_format in (None, 'default'):
        return None
    if token_format not in TOKEN_FORMATS:
        raise ValueError('"token_format" must be "opaque", "jwt" or null (the server default)')
    return token_format


def check_resources(resources) -> list[str]:
    """At most MAX_RESOURCES URIs, RESOURCES_MAX_LENGTH characters in all as
    stored (each token copies its audience from them): checked here, so that
    every database gives the same answer."""
    if not isinstance(resources, (list, tuple)) or not all(isinstance(uri, str) for uri in resources):
        raise ValueError('"resources" must be a list of absolute URIs')
    if len(resources) > MAX_RESOURCES:
        raise ValueError(f'"resources" must list at most {MAX_RESOURCES} URIs')
    uris = [check_resource(uri) for uri in dict.fromkeys(resources)]
    if len(' '.join(uris)) > RESOURCES_MAX_LENGTH:
        raise ValueError(f'"resources" must be at most {RESOURCES_MAX_LENGTH} characters in all (a space between two)')
    return uris


def check_jwks_value(jwks) -> str:
    """A JWK Set given as JSON text (a --jwks file) or as an object (the API's "jwks")."""
    return check_jwks(jwks if isinstance(jwks, str) else json.dumps(jwks))[0]


def stored_resources(resources) -> str:
    return ' '.join(check_resources(resources))


def check_dpop_bound(value) -> bool:
    """RFC 9449 §5.2 dpop_bound_access_tokens: a JSON boolean."""
    if not isinstance(value, bool):
        raise ValueError('"dpop_bound_access_tokens" must be true or false')
    return value


# What a client's fields may be set to: the attribute, its RFC 7591 name
# (for InvalidMetadata), and the check that returns the value as stored.
FIELDS = {'name': ('client_name', check_name), 'scope': ('scope', check_scope),
          'token_lifetime': ('token_lifetime', check_lifetime), 'token_format': ('token_format', check_format),
          'resources': ('resources', stored_resources), 'jwks': ('jwks', check_jwks_value),
          'dpop_bound_access_tokens': ('dpop_bound_access_tokens', check_dpop_bound)}


def checked_fields(values: dict) -> dict:
    """Every value checked before anything changes: as stored, by attribute."""
    return {attribute: checked(*FIELDS[attribute], value) for attribute, value in values.items()}


def find(client_id: str) -> Client | None:
    return Client.find(client_id)


def describe(client: Client, live_tokens: int | None = None) -> dict:
    """A client as `show-client` and the admin API show it: never a secret."""
    if live_tokens is None:
        live_tokens = Token.live_counts(Token.client_pk == client.id).get(client.id, 0)
    grace_ends = client.previous_secret_expires
    return {**client.to_dict(), 'live_tokens': live_tokens,
            'previous_secret_valid_until': grace_ends and grace_ends.isoformat()}


def clients_page(after: str | None, limit: int) -> tuple[list[tuple[Client, int]], bool]:
    """Up to `limit` clients in client_id order, those after the client id
    `after` (which need not exist any more), each with how many live tokens
    it has, and whether more follow: two queries, however long the page."""
    query = db.select(Client).order_by(Client.client_id).limit(limit + 1)
    if after is not None:
        query = query.where(Client.client_id > after)
    clients = db.session.scalars(query).all()
    clients, more = clients[:limit], len(clients) > limit
    live = Token.live_counts(Token.client_pk.in_([client.id for client in clients])) if clients else {}
    return [(client, live.get(client.id, 0)) for client in clients], more


def create(name, *, scope='read write', token_lifetime=None, token_format=None, resources=(),
           auth_method='client_secret_basic', jwks=None, may_get_tokens=True, dpop_bound_access_tokens=False,
           actor='cli') -> tuple[Client, str | None]:
    """Register a client; return it with its secret in clear (None for a
    private_key_jwt client, which has none). `jwks` is the JWK Set, as text.
    A client with dpop_bound_access_tokens gets tokens only with a DPoP proof."""
    values = checked_fields({'name': name, 'scope': scope, 'token_lifetime': token_lifetime,
                             'token_format': token_format, 'resources': resources,
                             'dpop_bound_access_tokens': dpop_bound_access_tokens})
    if auth_method not in AUTH_METHODS:
        raise InvalidMetadata('token_endpoint_auth_method', '"token_endpoint_auth_method" must be one of: '
                              + ', '.join(AUTH_METHODS))
    if (auth_method == 'private_key_jwt') != (jwks is not None):
        raise InvalidMetadata('jwks', 'private_key_jwt and a JWK Set of public keys ("jwks") go together')
    if jwks is not None:
        jwks = checked_fields({'jwks': jwks})['jwks']
    client, client_secret = Client.create(values['name'], values['scope'],
                                          grant_types='client_credentials' if may_get_tokens else '')
    client.token_lifetime, client.token_format = values['token_lifetime'], values['token_format']
    client.resources, client.dpop_bound_access_tokens = values['resources'], values['dpop_bound_access_tokens']
    if jwks is not None:
        client.use_keys(jwks)
        client_secret = None
    db.session.commit()
    audit.event('client_created', client.client_id, actor=actor, scope=client.scope,
                token_endpoint_auth_method=client.token_endpoint_auth_method, key_ids=client.key_ids,
                dpop_bound_access_tokens=client.dpop_bound_access_tokens)
    return client, client_secret


def update(client: Client, *, name=UNCHANGED, scope=UNCHANGED, token_lifetime=UNCHANGED, token_format=UNCHANGED,
           resources=UNCHANGED, jwks=UNCHANGED, dpop_bound_access_tokens=UNCHANGED, actor='cli') -> Client:
    """Change what is given. Narrowing the scope narrows live tokens; they
    keep the format, audience and DPoP binding they were issued with."""
    if jwks is not UNCHANGED and not client.uses_private_key_jwt:
        raise InvalidMetadata('jwks', f'{client.client_id} authenticates with a secret; keys ("jwks") are for '
                                      'a client registered with private_key_jwt')
    given = {'name': name, 'scope': scope, 'token_lifetime': token_lifetime, 'token_format': token_format,
             'resources': resources, 'jwks': jwks, 'dpop_bound_access_tokens': dpop_bound_access_tokens}
    changes = checked_fields({attribute: value for attribute, value in given.items() if value is not UNCHANGED})
    for attribute, value in changes.items():
        if attribute == 'scope':
            client.set_scope(value)  # narrows live tokens too
        else:
            setattr(client, attribute, value)
    db.session.commit()
    audit.event('client_updated', client.client_id, actor=actor, scope=client.scope,
                token_lifetime=client.token_lifetime, token_format=client.token_format,
                resources=client.resources.split(), key_ids=client.key_ids,
                dpop_bound_access_tokens=client.dpop_bound_access_tokens)
    return client


def disable(client: Client, actor='cli') -> int:
    """Refuse its credentials and revoke its live tokens; how many."""
    revoked = client.disable()
    db.session.commit()
    audit.event('client_disabled', client.client_id, actor=actor, tokens_revoked=revoked)
    return revoked


def enable(client: Client, actor='cli') -> None:
    client.disabled = False
    db.session.commit()
    audit.event('client_enabled', client.client_id, actor=actor)


def rotate_secret(client: Client, grace: int = 0, actor='cli') -> str:
    """A new secret, in clear (the only time it exists); the old one works `grace` seconds more."""
    if client.uses_private_key_jwt:
        raise InvalidMetadata('token_endpoint_auth_method',
                              f'{client.client_id} has keys, not a secret: change them with update-client --jwks FILE')
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE:
        raise InvalidMetadata('grace', f'"grace" must be a whole number of seconds from 0 to {MAX_GRACE}')
    client_secret = client.rotate_secret(grace)
    db.session.commit()
    audit.event('secret_rotated', client.client_id, actor=actor, grace=grace)
    return client_secret


def revoke_tokens(client: Client, actor='cli') -> int:
    """Revoke every live token of the client (it stays enabled); how many."""
    revoked = Token.revoke_where(Token.client_pk == client.id)
    db.session.commit()
    audit.event('tokens_revoked', client.client_id, actor=actor, tokens_revoked=revoked)
    return revoked


def delete(client: Client, actor='cli') -> None:
    """Delete the client with its tokens and items."""
    client_id = client.client_id
    db.session.delete(client)
    db.session.commit()
    audit.event('client_deleted', client_id, actor=actor)
