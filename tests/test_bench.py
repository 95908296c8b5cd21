"""The benchmark runs end to end (a short run; its figures are not judged here:
speed is read from the benchmark's own report, never asserted in tests)."""
import json
import os
import shutil
import uuid

import pytest
from conftest import run_python


@pytest.fixture(params=['sqlite', 'postgresql'])
def bench_database(request, tmp_path):
    if request.param == 'sqlite':
        return f'sqlite:///{tmp_path}/bench.sqlite'
    return request.getfixturevalue('postgres').create_database(f'bench_{uuid.uuid4().hex[:12]}')


def test_the_benchmark_runs_and_reports(bench_database, tmp_path):
    if not shutil.which('wrk') and os.geteuid() != 0:
        if os.environ.get('CI') == 'true':
            pytest.fail('wrk is not installed and cannot be installed without root')
        pytest.skip('wrk is not installed (apt-get install wrk)')
    output = tmp_path / 'bench.json'
    result = run_python('bench/run.py', '--duration', '1', '--rounds', '2', '--connections', '4', '--tokens', '20000',
                        '--output', str(output), env={'DATABASE_URL': bench_database}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '| GET /api/me |' in result.stdout
    report = json.loads(output.read_text())
    settings = report['settings']
    assert settings['tokens_large'] >= 20_000 > settings['tokens_small']  # the second pass ran on a bigger table
    assert [row['endpoint'] for row in report['summary']] == [
        'POST /oauth/token (form)', 'POST /oauth/token (Basic)', 'GET /api/me']
    assert len(report['runs']) == 36  # 3 endpoints x 3 apps x 2 table sizes x 2 rounds
    assert {run['app'] for run in report['runs']} == {'project', 'baseline', 'authlib'}
    assert all(row['ratio_to_baseline'] > 0 and row['ratio_to_authlib'] > 0 for row in report['summary'])
    assert all(run['rps'] > 0 and run['errors'] == 0 for run in report['runs'])
    assert report['machine']['database'] == bench_database.split(':')[0].split('+')[0]
