"""What a real deployment adds to the tutorial's server, one concern a module.

server.py joins each of them with one line; read it first.

    settings           defaults, then FLASK_* and DATABASE_URL from the environment, each checked at start; the issuer
    database           Flask-SQLAlchemy's `db`, a connection per request, migrations
    sqlite             SQLite's files (their owner's only), settings, writers' queue and log checkpoints
    validator          Flask-OAuthlib's request validator, corrected to the RFCs
    provider           Flask-OAuthlib's OAuth2Provider, corrected and extended
    access_tokens      opaque or JWT access tokens (RFC 9068), made at the token endpoint
    signing_keys       the JWT signing keys in the database (encrypted), their rotation and the JWKS
    audiences          which API a token is for (RFC 8707 resources)
    client_assertions  private_key_jwt client authentication (RFC 7523)
    bruteforce         limits on failed client authentication (RFC 6749 §2.3.1), and on tokens a client gets
    housekeeping       expired tokens and rate-limit counters deleted as the server runs
    replay             each jti accepted once (client assertions, DPoP proofs), by every worker
    dpop               DPoP (RFC 9449): tokens bound to a key the client holds
    audit              one JSON line per security event
    headers            request ids, security headers, trusted proxies
    errors             every error as JSON with its RFC error code
    client_admin       each client operation, for the CLI and the admin API alike
    admin_api          /admin/clients: clients managed over HTTP (the admin scope)
    cli                flask --app server create-client, list-clients, ...
    metrics            GET /metrics for Prometheus
"""
