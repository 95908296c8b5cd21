"""What each signing algorithm costs a JWT access token, with the library
the server uses (joserfc): microseconds to sign one and to verify one, and
the token's length. It is why ES256 is the default (docs/jwt.md: "Keys and
their rotation").

    .venv/bin/python bench/jose_algorithms.py
"""
from __future__ import annotations

import time

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

CLAIMS = {'iss': 'https://auth.example.com', 'exp': 2_000_000_000, 'iat': 1_900_000_000,
          'jti': 'Q2Yp1n0m3x8V0kq1fX7wAg', 'sub': 'billing-service', 'client_id': 'billing-service',
          'aud': 'https://auth.example.com/api', 'scope': 'read write'}
KEYS = {'ES256': lambda: ECKey.generate_key('P-256', private=True),
        'RS256': lambda: RSAKey.generate_key(2048, private=True)}


def per_call(function, seconds: float = 1.0) -> float:
    """Microseconds per call: the best of three runs of about `seconds` / 3 each."""
    best = float('inf')
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            function()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main() -> None:
    figures = {}
    for alg, make_key in KEYS.items():
        key = make_key()
        header = {'typ': 'at+jwt', 'alg': alg, 'kid': 'bench'}
        token = jwt.encode(header, CLAIMS, key, algorithms=[alg])
        figures[alg] = (per_call(lambda: jwt.encode(header, CLAIMS, key, algorithms=[alg])),  # noqa: B023
                        per_call(lambda: jwt.decode(token, key, algorithms=[alg])),  # noqa: B023
                        len(token))
    print('| algorithm | sign µs | verify µs | token length |')
    print('|---|---|---|---|')
    for alg, (sign, verify, length) in figures.items():
        print(f'| {alg} | {sign:.0f} | {verify:.0f} | {length} |')
    es, rs = figures['ES256'], figures['RS256']
    print(f'\nRS256 / ES256: signing {rs[0] / es[0]:.1f}x the time, verifying {rs[1] / es[1]:.1f}x, '
          f'tokens {rs[2] / es[2]:.1f}x as long')


if __name__ == '__main__':
    main()
