"""gunicorn's settings for this server: `gunicorn -c gunicorn.conf.py server:app`
(gunicorn also reads it unasked when started in this folder; with --chdir
from elsewhere, give -c with its path). Command-line options override them.
The app refuses to start under gunicorn without them (production/settings.py).

FLASK_OAUTH2_ISSUER must be set (in the environment, or with --env): the
server names itself by it, never by a request's Host header
(docs/deploying.md: "The issuer"). Without it gunicorn stops at start with one line.

Forwarded headers are believed in one place only, the app, as
FLASK_TRUSTED_PROXIES says (production/headers.py). gunicorn by default
believes X-Forwarded-Proto from 127.0.0.1 itself, so a caller on the same
host could make a request look as if it came over https; here it believes
nothing.
"""
forwarded_allow_ips = ''
secure_scheme_headers = {}

import os as _os  # noqa: E402 - gunicorn reads this module's public names as settings

_os.environ['OAUTH_SERVER_GUNICORN_CONF'] = __file__  # the app checks that this file was read

# Access log lines (when --access-logfile is given) show the path without its
# query string: a token sent in a URL is refused, and must not be logged
# either. The referrer, which may carry another site's query, is left out too.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'

# Prometheus' multiprocess mode (production/metrics.py): every worker writes
# its figures to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them up.
# Set here, before the workers are forked, so that each inherits it; without
# it each worker would report only its own share. The folder is emptied
# before the workers start and a dead worker's live gauge file is dropped
# (child_exit), as the library's documentation asks; one made here is
# removed at exit. A dead worker's counter and histogram files stay, or the
# totals would drop: the folder gains two files (64 KiB each, mostly sparse)
# a worker started, so with --max-requests N about two every N requests a
# worker, until the next start empties it.
import shutil as _shutil  # noqa: E402
import tempfile as _tempfile  # noqa: E402

_made_metrics_dir = not _os.environ.get('PROMETHEUS_MULTIPROC_DIR')
if _made_metrics_dir:
    _os.environ['PROMETHEUS_MULTIPROC_DIR'] = _tempfile.mkdtemp(prefix='oauth-metrics-')


def on_starting(server):
    try:
        _check_settings()
    except SystemExit:
        on_exit(server)  # the metrics folder made above
        raise
    folder = _os.environ['PROMETHEUS_MULTIPROC_DIR']
    _os.makedirs(folder, exist_ok=True)
    for name in _os.listdir(folder):
        if name.endswith('.db'):
            _os.remove(_os.path.join(folder, name))


def _check_settings():
    # Every setting is checked here, in the master, before any worker starts
    # (here, not when this file is read: --env settings are in the
    # environment by now): a bad one stops gunicorn with one line
    # (production/settings.py). Left to the workers, each would fail alike,
    # and gunicorn's master, halting on the first, can trip over the next
    # with a traceback of its own.
    if not _os.environ.get('FLASK_OAUTH2_ISSUER'):
        raise SystemExit('gunicorn.conf.py: FLASK_OAUTH2_ISSUER is not set: set it to the URL clients reach '
                         'this server at (e.g. https://auth.example.com)')
    from production.settings import check_environment
    check_environment()


def post_worker_init(worker):
    from production.metrics import GUNICORN_WORKERS  # imported by the app, in this worker, by now
    GUNICORN_WORKERS.set(1)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _made_metrics_dir:
        _shutil.rmtree(_os.environ['PROMETHEUS_MULTIPROC_DIR'], ignore_errors=True)
