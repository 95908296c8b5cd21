"""The benchmark's ceiling: what gunicorn and Flask alone allow. The two
endpoints answer fixed JSON of the project's answers' size, with no
database, no checks and no logging.

    gunicorn -w 2 --chdir bench hello:app
"""
from flask import Flask, jsonify

app = Flask(__name__)


@app.post('/oauth/token')
def token():
    return jsonify(access_token='x' * 43, token_type='Bearer', expires_in=3600, scope='read write')  # noqa: S106


@app.get('/api/me')
def me():
    return jsonify(client_id='x' * 22, name='bench', scope='read write')
