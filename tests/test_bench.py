"""The benchmark runs end to end, as the README runs it, on SQLite and on a
throwaway PostgreSQL (a short run; its figures are not judged here: speed is
read from the benchmark's own report, never asserted in tests)."""
import json
import os
import shutil

import pytest
from conftest import DATABASE_URL, run_python


@pytest.mark.skipif(DATABASE_URL.startswith('postgresql'), reason='the first pass ran it, on both databases')
def test_the_benchmark_runs_on_both_databases_and_reports(postgres, tmp_path):
    # `postgres` (unused) makes the test skip where PostgreSQL cannot start, and fail under CI.
    if not shutil.which('wrk') and os.geteuid() != 0:
        if os.environ.get('CI') == 'true':
            pytest.fail('wrk is not installed and cannot be installed without root')
        pytest.skip('wrk is not installed (apt-get install wrk)')
    output = tmp_path / 'bench.json'
    result = run_python('bench/run.py', '--duration', '1', '--rounds', '2', '--connections', '4', '--tokens', '60000',
                        '--output', str(output), env={'DATABASE_URL': ''}, timeout=600)  # not the suite's database
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert [measured['database'] for measured in report['databases']] == ['sqlite', 'postgresql']
    for measured in report['databases']:
        assert f'\n{measured["database"]}: ' in result.stdout
        assert measured['tokens_large'] >= 60_000 > measured['tokens_small']  # the second pass: a bigger table
        assert [row['endpoint'] for row in measured['summary']] == [
            'POST /oauth/token (form)', 'POST /oauth/token (Basic)', 'GET /api/me']
        assert len(measured['runs']) == 36  # 3 endpoints x 3 apps x 2 table sizes x 2 rounds
        assert {run['app'] for run in measured['runs']} == {'project', 'baseline', 'authlib'}
        assert all(row['ratio_to_baseline'] > 0 and row['ratio_to_authlib'] > 0 for row in measured['summary'])
        assert all(run['rps'] > 0 and run['errors'] == 0 for run in measured['runs'])
        formats = measured['token_formats']
        assert [row['endpoint'] for row in formats['summary']] == ['POST /oauth/token (form)', 'GET /api/me']
        assert len(formats['runs']) == 8  # 2 endpoints x 2 formats x 2 rounds
        assert all(run['rps'] > 0 and run['errors'] == 0 for run in formats['runs'])
        assert all(row['ratio_jwt_to_opaque'] > 0 for row in formats['summary'])
        metrics = measured['metrics']
        assert len(metrics['runs']) == 8 and all(run['rps'] > 0 and run['errors'] == 0 for run in metrics['runs'])
        assert all(row['ratio_metrics_on_to_metrics_off'] > 0 for row in metrics['summary'])
    assert result.stdout.count('| GET /api/me |') == 6  # the apps', the formats' and the metrics' tables, twice
