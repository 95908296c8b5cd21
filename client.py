"""A machine client for the client-credentials server, built on `requests`.

As a script it does what the tutorial's client does, then uses the token:

    python client.py                  # demo client: token, then GET /api/me
    python client.py items            # GET /api/items   (scope read)
    python client.py add-item "Pens"  # POST /api/items  (scope write)

As a module it gives other code a `requests` auth object (or a session) that
gets, caches and renews the token itself:

    from client import ApiClient
    api = ApiClient('http://127.0.0.1:5000', 'my-id', 'my-secret')
    api.get('/api/items')
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from urllib.parse import quote_plus, urljoin, urlsplit

import requests

DEFAULT_SERVER = 'http://127.0.0.1:5000'
DEFAULT_CLIENT_ID = 'demo-client'
DEFAULT_CLIENT_SECRET = 'demo-secret'
TIMEOUT = 10  # seconds to connect, and again to read; no call waits for ever
RENEW_BEFORE = 30  # seconds before expiry at which a cached token is replaced


class ClientError(Exception):
    """Anything that stops the client: one line, fit for a terminal."""


class OAuthError(ClientError):
    """An error answer from the server (RFC 6749 §5.2, RFC 6750 §3)."""

    HINTS = {'invalid_client': 'the server rejected the client id or secret'}

    def __init__(self, status: int, error: str, description: str | None = None):
        self.status, self.error, self.description = status, error, description
        super().__init__(f'{error}: {description or self.HINTS.get(error, f"HTTP {status}")}')


def json_answer(response: requests.Response) -> dict:
    """The JSON object in `response`, or ClientError; error answers raise OAuthError."""
    try:
        body = response.json()
    except ValueError:
        raise ClientError(f'{response.url} answered HTTP {response.status_code} '
                          f'with {response.headers.get("Content-Type") or "no content type"}, not JSON')
    if not isinstance(body, dict):
        raise ClientError(f'{response.url} answered JSON that is not an object')
    if response.status_code >= 400:
        raise OAuthError(response.status_code, str(body.get('error') or f'HTTP {response.status_code}'),
                         body.get('error_description'))
    return body


class ClientCredentials(requests.auth.AuthBase):
    """A `requests` auth object for the client credentials grant (RFC 6749 §4.4).

    It fetches a token on first use, reuses it until shortly before it
    expires, and when an API answers 401 invalid_token (a revoked token, say)
    fetches one new token and retries that request once.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str | None = None,
                 auth_method: str = 'post', timeout: float = TIMEOUT, session: requests.Session | None = None):
        if auth_method not in ('post', 'basic'):
            raise ValueError("auth_method is 'post' or 'basic'")
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.scope, self.auth_method, self.timeout = scope, auth_method, timeout
        self.session = session or requests.Session()
        self.token: dict | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def fetch_token(self) -> dict:
        """Ask the token endpoint for a new token and cache it."""
        data = {'grant_type': 'client_credentials'}
        if self.scope:
            data['scope'] = self.scope
        auth = None
        if self.auth_method == 'basic':
            # RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
            auth = requests.auth.HTTPBasicAuth(quote_plus(self.client_id), quote_plus(self.client_secret))
        else:  # client_secret_post, as in the tutorial
            data.update(client_id=self.client_id, client_secret=self.client_secret)
        response = self.session.post(self.token_url, data=data, auth=auth, timeout=self.timeout)
        token = json_answer(response)
        if not isinstance(token.get('access_token'), str) or \
                str(token.get('token_type', '')).lower() != 'bearer':
            raise ClientError(f'{self.token_url} did not answer with a Bearer token')
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
        request.headers['Authorization'] = f'Bearer {self.access_token}'
        request.register_hook('response', self._retry_on_invalid_token)
        return request

    def _retry_on_invalid_token(self, response: requests.Response, **kwargs) -> requests.Response:
        # RFC 6750 §3.1: invalid_token means "get a new token and retry".
        challenge = response.headers.get('WWW-Authenticate', '')
        if response.status_code != 401 or 'invalid_token' not in challenge:
            return response
        rejected = response.request.headers['Authorization'].removeprefix('Bearer ')
        self.forget(rejected)
        response.close()
        retry = response.request.copy()
        retry.headers['Authorization'] = f'Bearer {self.access_token}'
        # Sent on the connection directly, so this hook does not run again.
        second = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


class ApiClient:
    """A session on one server: every call authenticated, timed out and checked."""

    def __init__(self, server: str, client_id: str, client_secret: str, scope: str | None = None,
                 auth_method: str = 'post', timeout: float = TIMEOUT):
        self.server = server.rstrip('/') + '/'
        self.timeout = timeout
        self.session = requests.Session()
        self.auth = ClientCredentials(urljoin(self.server, 'oauth/token'), client_id, client_secret,
                                      scope, auth_method, timeout, self.session)

    def request(self, method: str, path: str, **kwargs) -> dict:
        kwargs.setdefault('timeout', self.timeout)
        try:
            response = self.session.request(method, urljoin(self.server, path.lstrip('/')),
                                            auth=self.auth, **kwargs)
        except requests.Timeout:
            raise ClientError(f'{self.server} did not answer within {self.timeout} s')
        except requests.ConnectionError:
            raise ClientError(f'cannot connect to {self.server} (is the server running?)')
        except requests.RequestException as error:
            raise ClientError(f'request to {self.server} failed: {type(error).__name__}')
        return json_answer(response)

    def get(self, path: str, **kwargs) -> dict:
        return self.request('GET', path, **kwargs)

    def post(self, path: str, **kwargs) -> dict:
        return self.request('POST', path, **kwargs)

    def me(self) -> dict:
        return self.get('/api/me')

    def list_items(self) -> dict:
        return self.get('/api/items')

    def create_item(self, name: str) -> dict:
        return self.post('/api/items', json={'name': name})


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
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.add_parser('me', help='show who the token belongs to (the default)')
    commands.add_parser('items', help="list this client's items")
    add = commands.add_parser('add-item', help='create an item')
    add.add_argument('name')
    args = parser.parse_args(argv)
    if urlsplit(args.server).scheme not in ('http', 'https') or not urlsplit(args.server).hostname:
        parser.error(f'--server must be an http(s) URL, not {args.server!r}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = urlsplit(args.server).hostname
    if urlsplit(args.server).scheme == 'http' and host not in ('127.0.0.1', 'localhost', '::1'):
        # RFC 6749 §2.3.1: client credentials travel only over TLS.
        print(f'client.py: warning: sending credentials to {host} without HTTPS', file=sys.stderr)
    api = ApiClient(args.server, args.client_id, args.client_secret, args.scope, args.auth_method)
    try:
        if args.command == 'items':
            result = api.list_items()
        elif args.command == 'add-item':
            result = api.create_item(args.name)
        else:
            result = api.me()
    except ClientError as error:
        print(f'client.py: {error}', file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
