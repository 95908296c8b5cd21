"""gunicorn's settings for this server: `gunicorn server:app`, run from this
folder, reads them (command-line options still override them).

Forwarded headers are believed in one place only, the app, as
FLASK_TRUSTED_PROXIES says (production/headers.py). gunicorn by default
believes X-Forwarded-Proto from 127.0.0.1 itself, so a caller on the same
host could change the issuer the server names; here it believes nothing.
"""
forwarded_allow_ips = ''
secure_scheme_headers = {}

# Access log lines (when --access-logfile is given) show the path without its
# query string: a token sent in a URL is refused, and must not be logged
# either. The referrer, which may carry another site's query, is left out too.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
