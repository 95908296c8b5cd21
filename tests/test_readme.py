"""The README's examples, run as a reader would run them, in order, against
`python server.py`: each `curl -i` block's answer must match the answer the
README shows after it (status line, every header shown, the body's fields),
so that the README cannot drift from what the server says."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, free_port, wait_for_port

FENCE = re.compile(r'```(\w*)\n(.*?)```', re.S)
# Values that differ from run to run: compared by type, not by value.
VARYING = {'access_token', 'exp', 'iat', 'id', 'created_at', 'client_id'}


def examples():
    """(command, expected answer) for each sh block directly followed by a
    text block that starts with an HTTP status line, in README order; and
    every sh block, so that the variables they set exist for the next."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('\n## Endpoints'):text.index('\n## Managing clients')]
    blocks = [(match.group(1), match.group(2), match.start(), match.end()) for match in FENCE.finditer(section)]
    for (kind, body, _, end), following in zip(blocks, [*blocks[1:], None], strict=True):
        if kind != 'sh':
            continue
        expected = None
        if following and following[0] == 'text' and not section[end:following[2]].strip() \
                and following[1].startswith('HTTP/1.1 '):
            expected = following[1]
        yield body, expected


def parse_answer(raw: str) -> tuple[str, dict, str]:
    """(status line, headers, body) of an HTTP answer as curl -i prints it, or as the README shows it."""
    head, _, body = raw.replace('\r\n', '\n').partition('\n\n')
    status, *lines = head.strip().splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(':')
        headers[name.strip().lower()] = value.strip()
    return status.strip(), headers, body.strip()


def same_shape(shown, actual, key=None):
    if isinstance(shown, dict):
        return isinstance(actual, dict) and shown.keys() == actual.keys() and all(
            same_shape(value, actual[name], name) for name, value in shown.items())
    if isinstance(shown, list):
        return isinstance(actual, list) and all(same_shape(shown[0], item) for item in actual) if shown else True
    if key in VARYING:
        return type(shown) is type(actual)
    return shown == actual


@pytest.fixture
def readme_server(tmp_path):
    """python server.py with its demo client, on a fresh database of its own."""
    port = free_port()
    log = open(tmp_path / 'server.log', 'w')  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, 'server.py', '--port', str(port)], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, 'DATABASE_URL': f'sqlite:///{tmp_path}/readme.sqlite'})
    try:
        wait_for_port(port, process, timeout=60)
        yield f'http://127.0.0.1:{port}'
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()


def test_the_readme_examples_answer_as_the_readme_shows(readme_server, tmp_path):
    if shutil.which('curl') is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('curl is not installed')
        pytest.skip('the README uses curl (apt-get install curl)')
    pairs = list(examples())
    assert sum(expected is not None for _, expected in pairs) >= 14  # the examples were found
    # One shell runs every block in order, as a reader pasting them would;
    # a marker line separates the blocks' outputs.
    script = 'set -u\n' + ''.join(f'echo; echo "@@@ {number}"\n{command}\n'
                                   for number, (command, _) in enumerate(pairs))
    script = script.replace('http://127.0.0.1:5000', readme_server)
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = re.split(r'^@@@ \d+\n', result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(pairs)
    for (command, expected), output in zip(pairs, outputs, strict=True):
        if expected is None:
            continue
        shown_status, shown_headers, shown_body = parse_answer(expected)
        status, headers, body = parse_answer(output)
        assert status == shown_status, (command, output)
        for name, value in shown_headers.items():
            assert headers.get(name) == value, (command, name, output)
        if shown_body:
            assert same_shape(json.loads(shown_body), json.loads(body)), (command, shown_body, body)
