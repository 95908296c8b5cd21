"""The benchmark runs end to end, as docs/performance.md runs it: on SQLite in
the suite's SQLite pass, on a throwaway PostgreSQL of its own in the
PostgreSQL pass (a short run; its figures are not judged here: speed is read
from the benchmark's own report, never asserted in tests)."""
import json
import os
import shutil

import pytest
from conftest import DATABASE_URL, run_python

APPS = ['project', 'granian', 'baseline', 'authlib', 'dot', 'hello']
ENDPOINTS = ['POST /oauth/token (form)', 'POST /oauth/token (Basic)', 'GET /api/me']


@pytest.fixture(scope='module')
def bench_tools():
    """wrk, and the DOT peer's and granian's environments, which the benchmark
    makes with pip from PyPI on first use. Where they cannot be had the test
    skips, except under CI=true, where that fails."""
    if not shutil.which('wrk') and os.geteuid() != 0:
        if os.environ.get('CI') == 'true':
            pytest.fail('wrk is not installed and cannot be installed without root')
        pytest.skip('wrk is not installed (apt-get install wrk)')
    prepared = run_python('bench/run.py', '--prepare', timeout=900)
    if prepared.returncode != 0:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'the benchmark could not make its environments: {prepared.stderr[-2000:]}')
        pytest.skip(f'the benchmark could not make its environments: {prepared.stderr.strip()[-300:]}')


# The pass's database kind; the benchmark makes a database of that kind of its own.
KIND = 'postgresql' if DATABASE_URL.startswith('postgresql') else 'sqlite'


def test_the_benchmark_runs_on_this_pass_database_kind_and_reports(bench_tools, tmp_path):
    output = tmp_path / 'bench.json'
    result = run_python('bench/run.py', '--databases', KIND, '--duration', '1', '--rounds', '1', '--connections', '4',
                        '--tokens', '20000', '--side-tables', '--output', str(output),
                        env={'DATABASE_URL': ''},  # not the suite's database
                        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert list(report['apps']) == APPS
    assert report['settings']['versions']['django-oauth-toolkit'] and report['settings']['versions']['granian']
    assert [measured['database'] for measured in report['databases']] == [KIND]
    for measured in report['databases']:
        assert f'\n{measured["database"]}: ' in result.stdout
        assert measured['tokens_large'] >= 20_000 > measured['tokens_small'] > 0  # the second pass: a bigger table

        # Every round of every app on every endpoint is kept, with its latency.
        runs = measured['runs']
        assert sorted((run['phase'], run['app'], run['endpoint'], run['round']) for run in runs) == sorted([
            *(('small', app, endpoint, 1) for app in APPS for endpoint in ENDPOINTS),
            *(('large', app, 'GET /api/me', 1) for app in ('project', 'baseline', 'authlib')),  # at 20,000 tokens
            ('small', 'dot_default_hasher', 'POST /oauth/token (form)', 1)])
        assert all(run['rps'] > 0 and run['errors'] == 0 and 0 < run['p50_ms'] <= run['p99_ms'] for run in runs)

        # The median rounds: every app and endpoint on the small table, GET /api/me on the large one.
        assert [(row['phase'], row['endpoint']) for row in measured['summary']] == [
            *(('small', endpoint) for endpoint in ENDPOINTS), ('large', 'GET /api/me')]
        for row in measured['summary']:
            assert list(row['apps']) == (APPS if row['phase'] == 'small' else ['project', 'baseline', 'authlib'])
            assert all(figures['rps'] > 0 and figures['p99_ms'] > 0 for figures in row['apps'].values())
        assert measured['dot_default_hasher']['rps'] > 0

        # Each app's workers' memory, read from /proc before they stopped.
        assert list(measured['rss_mib']) == APPS
        for rss in measured['rss_mib'].values():
            assert rss['workers'] == 2 and 10 < rss['mean_mib'] <= rss['max_mib'] < 1000

        # DPoP against bearer: each endpoint and token format, the two taking
        # turns, each DPoP request with a proof of its own (none ran short).
        dpop = measured['dpop']
        rows = [(row['endpoint'], row['token_format']) for row in dpop['summary']]
        assert rows == [(endpoint, token_format) for endpoint in ('POST /oauth/token (form)', 'GET /api/me')
                        for token_format in ('opaque', 'jwt')]
        assert sorted((run['endpoint'], run['token_format'], run['variant']) for run in dpop['runs']) == sorted(
            (endpoint, token_format, variant) for endpoint, token_format in rows for variant in ('bearer', 'dpop'))
        assert all(run['rps'] > 0 and run['errors'] == 0 and 0 < run['p50_ms'] <= run['p99_ms'] for run in dpop['runs'])
        assert all(run['proofs_short'] == 0 for run in dpop['runs'] if run['variant'] == 'dpop')
        for row in dpop['summary']:
            assert row['p50 DPoP / bearer'] == round(row['dpop']['p50_ms'] / row['bearer']['p50_ms'], 3)
            assert row['req/s bearer / DPoP'] == round(row['bearer']['rps'] / row['dpop']['rps'], 3)
        printed = result.stdout.split(f'\n{measured["database"]}: DPoP against bearer')[1].split('\n\n')[0]
        assert [line.split(' | ')[:2] for line in printed.splitlines()[3:]] == [
            [f'| {endpoint}', token_format] for endpoint, token_format in rows]

        # Each target, met or not, with its value; and printed.
        targets = measured['targets']
        assert len(targets) == 3 * 3 + 1 + 1 + 3 + 4  # peers and baseline x 3 endpoints, 1M tokens, RSS, granian, DPoP
        assert all(isinstance(target['met'], bool) and target['value'] is not None for target in targets)
        assert sum(1 for target in targets if target['target'].startswith('granian / gunicorn')) == 3
        assert sum(1 for target in targets if target['target'].startswith('DPoP / bearer')) == 4
        printed = result.stdout.split(f'\n{measured["database"]}: targets\n')[1].split('\n\n')[0].splitlines()
        assert len(printed) == len(targets) and all(line.startswith(('- met: ', '- NOT MET: ')) for line in printed)

        for table, variants in (('token_formats', ('opaque', 'jwt')), ('metrics', ('metrics_off', 'metrics_on'))):
            assert len(measured[table]['runs']) == 2 * 2  # 2 endpoints x 2 variants
            assert {run['variant'] for run in measured[table]['runs']} == set(variants)
            assert all(run['rps'] > 0 and run['errors'] == 0 for run in measured[table]['runs'])
    # The apps' table, the ratios and the DPoP table (opaque, JWT), per database.
    assert result.stdout.count('| GET /api/me |') == 1 + 1 + 2
    met = sum(target['met'] for measured in report['databases'] for target in measured['targets'])
    assert report['targets_met'] == {'met': met, 'of': 18}
    assert f'targets met: {met} of 18' in result.stdout
