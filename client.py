"""A machine client for the client-credentials server, built on `requests`.

As a script it does what the tutorial's client does, then uses the token:

    python client.py                  # demo client: token, then GET /api/me
    python client.py items            # GET /api/items   (scope read)
    python client.py add-item "Pens"  # POST /api/items  (scope write)
    python client.py introspect TOKEN # what the server knows of a token
    python client.py revoke           # revoke the token this run holds
    python client.py token            # print the token response itself
    python client.py register NAME    # register a client (needs the `admin` scope)
    python client.py make-key key.pem > jwks.json
                                      # a key pair for private_key_jwt (RFC 7523)
    python client.py --client-id ID --private-key key.pem
                                      # authenticate with it: no secret at all
    python client.py --resource https://billing.example/api token
                                      # a token for another API (RFC 8707)
    python client.py --dpop           # a DPoP-bound token (RFC 9449): bound to a key
                                      # made for this run; --dpop-key key.pem keeps one
    python client.py --dpop-key key.pem proof GET http://127.0.0.1:5000/api/me --access-token TOKEN
                                      # print a DPoP proof of one request (for curl)

As a module it gives other code a `requests` auth object (or a session) that
gets, caches and renews the token itself:

    from client import ApiClient
    api = ApiClient('http://127.0.0.1:5000', 'my-id', 'my-secret')
    api.get('/api/items')
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from functools import cached_property
from urllib.parse import quote_plus, urljoin, urlsplit, urlunsplit

import requests

DEFAULT_SERVER = 'http://127.0.0.1:5000'
DEFAULT_CLIENT_ID = 'demo-client'
DEFAULT_CLIENT_SECRET = 'demo-secret'  # noqa: S105 - the documented local demo credential
TIMEOUT = 10  # seconds to connect, and again to read; no call waits for ever
RENEW_BEFORE = 30  # seconds before expiry at which a cached token is replaced
METADATA_PATH = '.well-known/oauth-authorization-server'  # RFC 8414 §3
ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'  # RFC 7523 §2.2
ASSERTION_LIFETIME = 60  # seconds: an assertion is made for one request
DEFAULT_ENDPOINTS = {'token_endpoint': 'oauth/token', 'revocation_endpoint': 'oauth/revoke',
                     'introspection_endpoint': 'oauth/introspect'}


ERROR_HINTS = {  # for servers that give no error_description
    'invalid_client': 'the server rejected the client id or secret',
    'invalid_client (private_key_jwt)': 'the server rejected the client id or its signed assertion '
                                        '(is this public key registered for it, under this kid?)',
    'invalid_scope': 'this client may not ask for that scope (see --scope)',
    'unauthorized_client': 'this client may not get tokens',
    'invalid_dpop_proof': 'the server refused the DPoP proof',
}


class ClientError(Exception):
    """Anything that stops the client: one line, fit for a terminal."""


class OAuthError(ClientError):
    """An error answer from the server (RFC 6749 §5.2, RFC 6750 §3)."""

    def __init__(self, status: int, error: str, description: str | None = None, hint: str | None = None):
        self.status, self.error, self.description = status, error, description
        hint = ERROR_HINTS.get(hint) or ERROR_HINTS.get(error, f'HTTP {status}')
        super().__init__(f'{error}: {description or hint}')


def json_answer(response: requests.Response, hint: str | None = None) -> dict:
    """The JSON object in `response`, or ClientError; error answers raise
    OAuthError (`hint`: which of ERROR_HINTS to use without a description)."""
    try:
        body = response.json()
    except ValueError:
        raise ClientError(f'{response.url} answered HTTP {response.status_code} '
                          f'with {response.headers.get("Content-Type") or "no content type"}, not JSON') from None
    if not isinstance(body, dict):
        raise ClientError(f'{response.url} answered JSON that is not an object')
    if response.status_code == 404:
        raise ClientError(f'{response.url} does not exist (HTTP 404): is --server the authorization server?')
    if response.status_code >= 400:
        raise OAuthError(response.status_code, str(body.get('error') or f'HTTP {response.status_code}'),
                         body.get('error_description'), hint)
    return body


class PrivateKey:
    """A client's private key: for private_key_jwt (RFC 7523 §2.2) it signs a
    fresh, short-lived assertion for each token request, so no secret ever
    travels; for DPoP (RFC 9449) it signs a proof for each request, so that
    the tokens bound to it are useless to anyone without it."""

    def __init__(self, pem: str | bytes, key_id: str | None = None):
        # Imported here: a client with a secret needs neither library.
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from joserfc.jwk import ECKey, OKPKey, RSAKey
        pem = pem.encode() if isinstance(pem, str) else pem
        try:
            loaded = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ClientError('the private key is not an unencrypted PEM private key') from None
        if isinstance(loaded, rsa.RSAPrivateKey):
            self.alg, key_class = 'RS256', RSAKey
        elif isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name == 'secp256r1':
            self.alg, key_class = 'ES256', ECKey
        elif isinstance(loaded, ed25519.Ed25519PrivateKey):
            self.alg, key_class = 'Ed25519', OKPKey
        else:
            raise ClientError('the private key must be RSA, EC P-256 or Ed25519')
        self.key = key_class.import_key(pem)
        # make-key registers the RFC 7638 thumbprint as the kid.
        self.key_id = key_id or self.key.thumbprint()

    def assertion(self, client_id: str, audience: str) -> str:
        """A client assertion as RFC 7523 §3 lays it out, for one request."""
        from joserfc import jwt
        now = int(time.time())
        claims = {'iss': client_id, 'sub': client_id, 'aud': audience, 'iat': now,
                  'exp': now + ASSERTION_LIFETIME, 'jti': secrets.token_urlsafe(16)}
        return jwt.encode({'alg': self.alg, 'kid': self.key_id}, claims, self.key, algorithms=[self.alg])

    @cached_property
    def public_jwk(self) -> dict:
        return self.key.as_dict(private=False)

    def dpop_proof(self, method: str, url: str, access_token: str | None = None, nonce: str | None = None) -> str:
        """A DPoP proof (RFC 9449 §4.2) for one request: its method and URL
        (without query and fragment), a new jti, the time; `ath` binds it to
        the access token it comes with, `nonce` is the server's (§8, §9)."""
        from joserfc import jwt
        parts = urlsplit(url)
        claims = {'jti': secrets.token_urlsafe(16), 'htm': method,
                  'htu': urlunsplit((parts.scheme, parts.netloc, parts.path, '', '')), 'iat': int(time.time())}
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode('ascii')).digest()
            claims['ath'] = base64.urlsafe_b64encode(digest).rstrip(b'=').decode()
        if nonce is not None:
            claims['nonce'] = nonce
        header = {'typ': 'dpop+jwt', 'alg': self.alg, 'jwk': self.public_jwk}
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])

    @staticmethod
    def generate(alg: str = 'ES256') -> tuple[str, dict]:
        """A new key pair: (private key as PEM, public JWK Set to register)."""
        from joserfc.jwk import ECKey, OKPKey, RSAKey
        key = {'ES256': lambda: ECKey.generate_key('P-256'), 'RS256': lambda: RSAKey.generate_key(2048),
               'Ed25519': lambda: OKPKey.generate_key('Ed25519')}[alg]()
        public = key.as_dict(private=False, kid=key.thumbprint(), alg=alg, use='sig')
        return key.as_pem(private=True).decode('ascii'), {'keys': [public]}


class ClientCredentials(requests.auth.AuthBase):
    """A `requests` auth object for the client credentials grant (RFC 6749 §4.4).

    It fetches a token on first use, reuses it until shortly before it
    expires, and when an API answers 401 invalid_token (a revoked token, say)
    fetches one new token and retries that request once. It authenticates
    with its secret, or, given `private_key` (PEM), with private_key_jwt.

    Given `dpop_key` (a PEM private key, or 'new' for one made for this
    object), its tokens are DPoP-bound (RFC 9449): it sends a proof signed
    with that key with the token request and with every API call, sends the
    token as `Authorization: DPoP`, and refuses a token that is not bound
    (RFC 9449 §5: the protection was asked for). When a server asks for a
    nonce (use_dpop_nonce) it retries once with it, and remembers the last
    nonce each server (origin) gave.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str | None = None, scope: str | None = None,
                 auth_method: str = 'post', timeout: float = TIMEOUT, session: requests.Session | None = None,
                 resource: str | list[str] | None = None, private_key: str | bytes | None = None,
                 key_id: str | None = None, dpop_key: str | bytes | None = None):
        if auth_method not in ('post', 'basic'):
            raise ValueError("auth_method is 'post' or 'basic'")
        if private_key is None and client_secret is None:
            raise ValueError('give client_secret or private_key')
        self.private_key = None if private_key is None else PrivateKey(private_key, key_id)
        if dpop_key == 'new':  # an ephemeral P-256 key: it lives as long as this object
            dpop_key = PrivateKey.generate('ES256')[0]
        self.dpop = None if dpop_key is None else PrivateKey(dpop_key)
        self.nonces: dict[str, str] = {}  # origin -> the last DPoP-Nonce it sent
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.scope, self.auth_method, self.timeout = scope, auth_method, timeout
        # RFC 8707: the API(s) the token is for; none means all the client may have.
        self.resource = [resource] if isinstance(resource, str) else list(resource or [])
        self.session = session or requests.Session()
        self.token: dict | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def post_as_client(self, url: str, data: dict, dpop: bool = False) -> dict:
        """POST a form to an endpoint that authenticates the client: the token,
        revocation and introspection endpoints; with `dpop`, a DPoP proof too."""
        hint = 'invalid_client (private_key_jwt)' if self.private_key is not None else None
        for attempt in (1, 2):
            form, auth, headers = dict(data), None, {}
            if self.private_key is not None:  # private_key_jwt: a new assertion each time
                form.update(client_assertion_type=ASSERTION_TYPE,
                            client_assertion=self.private_key.assertion(self.client_id, self.token_url))
            elif self.auth_method == 'basic':
                # RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
                auth = requests.auth.HTTPBasicAuth(quote_plus(self.client_id), quote_plus(self.client_secret))
            else:  # client_secret_post, as in the tutorial
                form.update(client_id=self.client_id, client_secret=self.client_secret)
            if dpop:
                headers['DPoP'] = self.dpop.dpop_proof('POST', url, nonce=self.nonces.get(origin(url)))
            response = self.session.post(url, data=form, auth=auth, headers=headers, timeout=self.timeout)
            if not (dpop and self._asks_for_nonce(response) and attempt == 1):
                return json_answer(response, hint)
            response.close()  # RFC 9449 §8: once more, with the nonce it gave
        raise AssertionError('unreachable')

    def _asks_for_nonce(self, response: requests.Response) -> bool:
        """Remember the DPoP-Nonce a server sent (RFC 9449 §8.2); True if it
        refused the request for want of it (§8: 400 at a token endpoint, §9:
        401 at an API)."""
        nonce = response.headers.get('DPoP-Nonce')
        if nonce is None:
            return False
        self.nonces[origin(response.url)] = nonce
        if response.status_code == 401:
            return 'use_dpop_nonce' in response.headers.get('WWW-Authenticate', '')
        try:
            return response.status_code == 400 and response.json().get('error') == 'use_dpop_nonce'
        except (ValueError, AttributeError):
            return False

    def fetch_token(self) -> dict:
        """Ask the token endpoint for a new token and cache it."""
        data = {'grant_type': 'client_credentials'}
        if self.scope:
            data['scope'] = self.scope
        if self.resource:
            data['resource'] = self.resource  # requests repeats the parameter, once per value
        token = self.post_as_client(self.token_url, data, dpop=self.dpop is not None)
        token_type = 'DPoP' if self.dpop else 'Bearer'
        if not isinstance(token.get('access_token'), str) or \
                str(token.get('token_type', '')).lower() != token_type.lower():
            # RFC 9449 §5: a client that asked for a DPoP-bound token discards any other.
            hint = f' (its token_type: {token.get("token_type")!r}; does it support DPoP?)' if self.dpop else ''
            raise ClientError(f'{self.token_url} did not answer with a {token_type} token{hint}')
        expires_in = token.get('expires_in')
        lifetime = expires_in if isinstance(expires_in, (int, float)) and expires_in > 0 else None
        # No expires_in: keep the token until an API call says it is invalid.
        self._renew_at = float('inf') if lifetime is None else \
            time.monotonic() + lifetime - min(RENEW_BEFORE, lifetime / 2)
        self.token = token
        return token

    @property
    def access_token(self) -> str:
        with self._lock:
            if self.token is None or time.monotonic() >= self._renew_at:
                self.fetch_token()
            return self.token['access_token']

    def forget(self, access_token: str | None = None) -> None:
        """Drop the cached token (only if it is still `access_token`, when given)."""
        with self._lock:
            if self.token is not None and access_token in (None, self.token['access_token']):
                self.token = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.authorize(request, self.access_token)
        request.register_hook('response', self._retry_once)
        return request

    def authorize(self, request: requests.PreparedRequest, access_token: str) -> None:
        """The token as a Bearer token, or with the DPoP scheme and a proof
        of this request naming it (RFC 9449 §7.1)."""
        if self.dpop is None:
            request.headers['Authorization'] = f'Bearer {access_token}'
            return
        request.headers['Authorization'] = f'DPoP {access_token}'
        request.headers['DPoP'] = self.dpop.dpop_proof(request.method, request.url, access_token,
                                                       self.nonces.get(origin(request.url)))

    def _retry_once(self, response: requests.Response, **kwargs) -> requests.Response:
        # RFC 6750 §3.1: invalid_token means "get a new token and retry";
        # RFC 9449 §9: use_dpop_nonce, "retry with the nonce given".
        challenge = response.headers.get('WWW-Authenticate', '')
        rejected = response.request.headers['Authorization'].partition(' ')[2]
        if self.dpop is not None and self._asks_for_nonce(response):
            access_token = rejected
        elif response.status_code == 401 and 'invalid_token' in challenge:
            self.forget(rejected)
            access_token = self.access_token
        else:
            return response
        response.close()
        retry = response.request.copy()
        self.authorize(retry, access_token)
        # Sent on the connection directly, so this hook does not run again.
        second = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


def origin(url: str) -> str:
    """Whose nonce to send (RFC 9449 §9: a nonce is for the server that gave it)."""
    parts = urlsplit(url)
    return f'{parts.scheme}://{parts.netloc}'.lower()


class ApiClient:
    """A session on one server: every call authenticated, timed out and checked.

    Given only the server's base URL, it reads the endpoints from the server's
    metadata (RFC 8414) on first use, and falls back to the default paths.
    """

    def __init__(self, server: str, client_id: str, client_secret: str | None = None, scope: str | None = None,
                 auth_method: str = 'post', timeout: float = TIMEOUT, resource: str | list[str] | None = None,
                 private_key: str | bytes | None = None, key_id: str | None = None,
                 dpop_key: str | bytes | None = None):
        self.server = server.rstrip('/') + '/'
        self.timeout = timeout
        self.session = requests.Session()
        self.client_id, self.client_secret = client_id, client_secret
        self.scope, self.auth_method, self.resource = scope, auth_method, resource
        self.private_key, self.key_id, self.dpop_key = private_key, key_id, dpop_key

    @cached_property
    def metadata(self) -> dict:
        """The server's metadata, or {} when it has none we may use."""
        response = self.session.get(urljoin(self.server, METADATA_PATH), timeout=self.timeout)
        try:
            metadata = response.json() if response.status_code == 200 else {}
        except ValueError:
            return {}
        # RFC 8414 §3.3: metadata naming another issuer MUST NOT be used.
        if not isinstance(metadata, dict) or \
                str(metadata.get('issuer', '')).rstrip('/') != self.server.rstrip('/'):
            return {}
        return metadata

    def endpoint(self, name: str) -> str:
        url = self.metadata.get(name)
        return url if isinstance(url, str) and url else urljoin(self.server, DEFAULT_ENDPOINTS[name])

    @cached_property
    def auth(self) -> ClientCredentials:
        return ClientCredentials(self.endpoint('token_endpoint'), self.client_id, self.client_secret,
                                 self.scope, self.auth_method, self.timeout, self.session, self.resource,
                                 self.private_key, self.key_id, self.dpop_key)

    def call(self, operation, *args, **kwargs):
        """Run one operation against the server; transport failures become one-line ClientErrors."""
        try:
            return operation(*args, **kwargs)
        except requests.Timeout:
            raise ClientError(f'{self.server} did not answer within {self.timeout} s') from None
        except requests.exceptions.SSLError:
            raise ClientError(f'the TLS handshake with {self.server} failed: does it serve HTTPS? '
                              '(python server.py serves plain http://)') from None
        except requests.ConnectionError:
            raise ClientError(f'cannot connect to {self.server} (is the server running?)') from None
        except requests.RequestException as error:
            raise ClientError(f'request to {self.server} failed: {type(error).__name__}') from None

    def request(self, method: str, path: str, **kwargs) -> dict:
        kwargs.setdefault('timeout', self.timeout)
        url = urljoin(self.server, path.lstrip('/'))
        return self.call(lambda: json_answer(self.session.request(method, url, auth=self.auth, **kwargs)))

    def get(self, path: str, **kwargs) -> dict:
        return self.request('GET', path, **kwargs)

    def post(self, path: str, **kwargs) -> dict:
        return self.request('POST', path, **kwargs)

    def me(self) -> dict:
        return self.get('/api/me')

    def register(self, client_name: str, **metadata) -> dict:
        """Register a client through the admin API (this client needs the
        `admin` scope); the answer holds the new client's secret, once."""
        return self.post('/admin/clients', json={'client_name': client_name, **metadata})

    def token(self) -> dict:
        """A new token response from the token endpoint (RFC 6749 §5.1)."""
        return self.call(lambda: self.auth.fetch_token())  # `auth` reads the metadata: inside the call

    def list_items(self) -> dict:
        return self.get('/api/items')

    def create_item(self, name: str) -> dict:
        return self.post('/api/items', json={'name': name})

    def revoke(self, token: str | None = None) -> None:
        """Revoke `token`, or the token this client holds (RFC 7009). The
        server answers the same whether it knew the token or not (§2.2):
        either way, it accepts it no more."""
        def revoke():
            target = token or self.auth.access_token
            self.auth.post_as_client(self.endpoint('revocation_endpoint'),
                                     {'token': target, 'token_type_hint': 'access_token'})
            self.auth.forget(target)
        self.call(revoke)

    def introspect(self, token: str) -> dict:
        """What the server says of `token` (RFC 7662): {"active": false} unless
        it is live and this client may see it."""
        return self.call(lambda: self.auth.post_as_client(
            self.endpoint('introspection_endpoint'), {'token': token, 'token_type_hint': 'access_token'}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description='Get a token with the client credentials grant and call the API.')
    parser.add_argument('--server', default=env('OAUTH_SERVER', DEFAULT_SERVER),
                        help='server base URL (env OAUTH_SERVER; default %(default)s)')
    parser.add_argument('--client-id', default=env('OAUTH_CLIENT_ID', DEFAULT_CLIENT_ID),
                        help='client id (env OAUTH_CLIENT_ID; default: the demo client)')
    parser.add_argument('--client-secret', default=env('OAUTH_CLIENT_SECRET', DEFAULT_CLIENT_SECRET),
                        help='client secret (env OAUTH_CLIENT_SECRET; default: the demo secret)')
    parser.add_argument('--scope', help='scopes to ask for, space-separated (default: all the client has)')
    parser.add_argument('--auth-method', choices=('post', 'basic'), default='post',
                        help='client_secret_post (form fields, as the tutorial) or client_secret_basic')
    parser.add_argument('--resource', action='append', metavar='URI',
                        help='an API the token is for (RFC 8707); repeat for several')
    parser.add_argument('--private-key', metavar='FILE',
                        help='authenticate with private_key_jwt, signing with this PEM key (no secret needed)')
    parser.add_argument('--key-id', metavar='KID', help="the key's kid as registered (default: its thumbprint)")
    dpop = parser.add_mutually_exclusive_group()
    dpop.add_argument('--dpop', action='store_true',
                      help='get a DPoP-bound token (RFC 9449), bound to a key made for this run')
    dpop.add_argument('--dpop-key', metavar='FILE',
                      help='get a DPoP-bound token, bound to this PEM private key (make one with make-key FILE)')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.add_parser('me', help='show who the token belongs to (the default)')
    commands.add_parser('token', help='print a new token response (the access token included)')
    commands.add_parser('items', help="list this client's items")
    add = commands.add_parser('add-item', help='create an item')
    add.add_argument('name')
    revoke = commands.add_parser('revoke', help='revoke TOKEN, or the token this run gets')
    revoke.add_argument('token', nargs='?')
    introspect = commands.add_parser('introspect', help='ask the server about TOKEN')
    introspect.add_argument('token')
    register = commands.add_parser('register', help='register a client through the admin API and print it, '
                                                    'its secret included (needs the admin scope)')
    register.add_argument('name')
    register.add_argument('--client-scope', default='read write', metavar='SCOPE',
                          help="the new client's scopes (default: %(default)s)")
    register.add_argument('--jwks', metavar='FILE', help='its public keys: a private_key_jwt client, no secret')
    make_key = commands.add_parser('make-key', help='write a new private key to FILE and print its public JWK Set, '
                                                    'to register with create-client --jwks')
    make_key.add_argument('file', metavar='FILE')
    make_key.add_argument('--alg', choices=('ES256', 'RS256', 'Ed25519'), default='ES256')
    proof = commands.add_parser('proof', help='print a DPoP proof of one request, signed with --dpop-key FILE')
    proof.add_argument('method', metavar='METHOD')
    proof.add_argument('url', metavar='URL')
    proof.add_argument('--access-token', metavar='TOKEN', help='the token the request carries (its hash: ath)')
    proof.add_argument('--nonce', help="the server's DPoP-Nonce")
    args = parser.parse_args(argv)
    if urlsplit(args.server).scheme not in ('http', 'https') or not urlsplit(args.server).hostname:
        parser.error(f'--server must be an http(s) URL, not {args.server!r}')
    return args


def read_jwks(path: str | None) -> dict:
    """The registration fields for a private_key_jwt client with the JWK Set at `path`."""
    if path is None:
        return {}
    try:
        with open(path, encoding='utf-8') as file:
            return {'token_endpoint_auth_method': 'private_key_jwt', 'jwks': json.load(file)}
    except OSError as error:
        raise ClientError(f'cannot read {path}: {error.strerror}') from None
    except ValueError:
        raise ClientError(f'{path} is not JSON') from None


def make_key(path: str, alg: str) -> dict:
    """Write a new private key to `path`, readable by its owner only, and
    return the public JWK Set to register. An existing file is kept."""
    private_pem, jwks = PrivateKey.generate(alg)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise ClientError(f'cannot create {path}: {error.strerror}') from None
    with os.fdopen(descriptor, 'w') as file:
        file.write(private_pem)
    return jwks


def read_key(path: str | None) -> bytes | None:
    """The PEM key at `path` (None for none); ClientError if it cannot be read."""
    if path is None:
        return None
    try:
        with open(path, 'rb') as file:
            return file.read(100_000)
    except OSError as error:
        raise ClientError(f'cannot read {path}: {error.strerror}') from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == 'make-key':
        try:
            print(json.dumps(make_key(args.file, args.alg), indent=2))
        except ClientError as error:
            print(f'client.py: {error}', file=sys.stderr)
            return 1
        return 0
    try:
        private_key, dpop_key = read_key(args.private_key), read_key(args.dpop_key)
        if args.command == 'proof':
            if dpop_key is None:
                raise ClientError('proof needs the key to sign with: --dpop-key FILE (make one with make-key FILE)')
            print(PrivateKey(dpop_key).dpop_proof(args.method, args.url, args.access_token, args.nonce))
            return 0
    except ClientError as error:
        print(f'client.py: {error}', file=sys.stderr)
        return 1
    host = urlsplit(args.server).hostname
    if urlsplit(args.server).scheme == 'http' and host not in ('127.0.0.1', 'localhost', '::1'):
        # RFC 6749 §2.3.1: client credentials travel only over TLS.
        print(f'client.py: warning: sending credentials to {host} without HTTPS', file=sys.stderr)
    try:
        api = ApiClient(args.server, args.client_id, args.client_secret, args.scope, args.auth_method,
                        resource=args.resource, private_key=private_key, key_id=args.key_id,
                        dpop_key='new' if args.dpop else dpop_key)
        if args.command == 'token':
            result = api.token()
        elif args.command == 'register':
            result = api.register(args.name, scope=args.client_scope, **read_jwks(args.jwks))
        elif args.command == 'items':
            result = api.list_items()
        elif args.command == 'add-item':
            result = api.create_item(args.name)
        elif args.command == 'revoke':
            api.revoke(args.token)
            # RFC 7009 §2.2: the server answers the same for a token it never issued.
            result = ('Revoked: the server accepts this token no more, if it knew it at all '
                      '(RFC 7009: the answer is the same for a token it never issued).')
        elif args.command == 'introspect':
            result = api.introspect(args.token)
        else:
            result = api.me()
    except ClientError as error:
        print(f'client.py: {error}', file=sys.stderr)
        return 1
    try:
        print(result if isinstance(result, str) else json.dumps(result, indent=2), flush=True)
    except BrokenPipeError:
        # The reader left early (`client.py | head -2`): not an error. Point
        # stdout at nothing so that Python's exit does not fail flushing it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == '__main__':
    sys.exit(main())
