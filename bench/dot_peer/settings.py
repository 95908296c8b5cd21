"""Django settings of the benchmark's django-oauth-toolkit peer: the setup of
DOT's documentation (its token view, a ProtectedResourceView) for the client
credentials grant, on a database of its own named by DATABASE_URL (SQLite
or PostgreSQL), with the project's database settings where Django has them.

    DATABASE_URL=sqlite:///dot.sqlite python manage.py migrate
    DATABASE_URL=... gunicorn -w 2 wsgi:application
"""
import os
from urllib.parse import unquote, urlsplit

from django.conf import global_settings

SECRET_KEY = os.environ['DJANGO_SECRET_KEY']  # bench/run.py makes one per run
DEBUG = False
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
USE_TZ = True
TIME_ZONE = 'UTC'
ROOT_URLCONF = 'urls'
INSTALLED_APPS = ['django.contrib.auth', 'django.contrib.contenttypes', 'oauth2_provider']
# An API's middleware: security headers (nosniff, referrer policy), as the project sends.
MIDDLEWARE = ['django.middleware.security.SecurityMiddleware', 'django.middleware.common.CommonMiddleware']

url = urlsplit(os.environ['DATABASE_URL'])
if url.scheme.startswith('sqlite'):
    DATABASES = {'default': {
        'ENGINE': 'django.db.backends.sqlite3', 'NAME': unquote(url.path[1:]), 'CONN_MAX_AGE': None,
        'OPTIONS': {
            # The project's pragmas (production/sqlite.py); Django turns foreign keys on itself.
            'init_command': 'PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; '
                            'PRAGMA journal_size_limit=67108864;',
            # Django's documented remedy for "database is locked" under concurrent writers.
            'transaction_mode': 'IMMEDIATE'}}}
else:
    # A connection kept per worker and checked before use, as the project's pool does.
    DATABASES = {'default': {
        'ENGINE': 'django.db.backends.postgresql', 'NAME': unquote(url.path[1:]),
        'USER': unquote(url.username or ''), 'PASSWORD': unquote(url.password or ''),
        'HOST': url.hostname or '', 'PORT': url.port or '', 'CONN_MAX_AGE': None, 'CONN_HEALTH_CHECKS': True}}

# Client secrets are hashed by Django's password hashers. Its default,
# PBKDF2-SHA256 at 1,000,000 rounds, costs about a second of CPU per token
# request; the one-round hasher (hashers.py) matches the project's one keyed
# round. CLIENT_SECRET_HASHER picks the hasher of applications created from
# now on; a stored secret is checked with the hasher its hash names.
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, 'hashers.OneRoundPBKDF2PasswordHasher']
OAUTH2_PROVIDER = {
    'CLIENT_SECRET_HASHER': os.environ.get('DOT_CLIENT_SECRET_HASHER', 'default'),
    'ACCESS_TOKEN_EXPIRE_SECONDS': 3600,  # the project's lifetime
    'SCOPES': {'read': 'Read', 'write': 'Write'},
    # RFC 9700: tokens stored only as their SHA-256, as the project stores them.
    'COMPLIANT_BCP_RFC9700_TOKEN_STORAGE': True,
}
