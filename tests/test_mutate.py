"""The mutation audit (tests/mutate.py) counts only what it should: a
mutant is killed by a named test failing on an assertion, after a control
run that passes; a broken control, a syntax error and a timeout kill nothing."""
import io

import pytest
from conftest import DATABASE_URL
from mutate import Mutation, audit

# The audit runs its own pytest on its own SQLite database: once is enough.
pytestmark = pytest.mark.skipif(DATABASE_URL.startswith('postgresql'),
                                reason="the audit's own checks run in the SQLite pass")

GUARDED = ('tests/test_rules.py::test_a_64_character_request_id_is_kept_and_a_65_character_one_replaced',)
REQUEST_ID_LINE = "        incoming = environ.get('HTTP_X_REQUEST_ID', '')"


def run_audit(monkeypatch, tmp_path, mutation, database_url=None, **kwargs):
    """(exit code, printed lines) of the audit of one mutation."""
    if database_url:
        monkeypatch.setenv('TEST_DATABASE_URL', database_url)
    else:
        monkeypatch.delenv('TEST_DATABASE_URL', raising=False)
    printed = io.StringIO()
    code = audit([mutation], tmp_path / 'report', out=printed, **kwargs)
    return code, printed.getvalue().splitlines()


def test_a_mutant_is_killed_by_a_named_test_failing_on_an_assertion(monkeypatch, tmp_path):
    # The control for the refusals below: the same test, a real break.
    mutation = Mutation('request ids never kept', 'production/headers.py', REQUEST_ID_LINE,
                        "        incoming = ''", GUARDED)
    code, lines = run_audit(monkeypatch, tmp_path, mutation)
    assert code == 0, lines
    assert f'| request ids never kept | killed | {GUARDED[0]} |' in '\n'.join(lines)
    assert {path.name for path in (tmp_path / 'report').iterdir()} == {
        '00-control.txt', '00-control.xml', '01-request-ids-never-kept.txt', '01-request-ids-never-kept.xml',
        'summary.md'}


def test_an_unusable_test_database_fails_the_control_run_and_the_audit(monkeypatch, tmp_path):
    mutation = Mutation('request ids never kept', 'production/headers.py', REQUEST_ID_LINE,
                        "        incoming = ''", GUARDED)
    code, lines = run_audit(monkeypatch, tmp_path, mutation, database_url='sqlite:////proc/no-such-folder/x.sqlite')
    assert code == 1
    assert lines[-1].startswith('mutate.py: AUDIT FAILED: the control run on the unmodified code did not pass')
    assert not any('| killed |' in line for line in lines)


def test_a_syntax_error_is_not_a_kill(monkeypatch, tmp_path):
    mutation = Mutation('a syntax error only', 'production/headers.py', REQUEST_ID_LINE,
                        REQUEST_ID_LINE + ' +', GUARDED)
    code, lines = run_audit(monkeypatch, tmp_path, mutation)
    assert code == 1
    row = next(line for line in lines if line.startswith('| a syntax error only |'))
    assert '| **NOT KILLED** | no named test ran' in row


def test_a_timeout_is_not_a_kill(monkeypatch, tmp_path):
    mutation = Mutation('every request hangs', 'production/headers.py', REQUEST_ID_LINE,
                        "        incoming = __import__('time').sleep(600) or ''", GUARDED)
    code, lines = run_audit(monkeypatch, tmp_path, mutation, timeout=3, control_timeout=300)
    assert code == 1
    row = next(line for line in lines if line.startswith('| every request hangs |'))
    assert '| **NOT KILLED** | timed out |' in row


def test_a_mutation_whose_text_is_gone_fails_the_audit_in_one_line(monkeypatch, tmp_path):
    mutation = Mutation('code that changed', 'production/headers.py', 'no such text', '', GUARDED)
    code, lines = run_audit(monkeypatch, tmp_path, mutation)
    assert code == 1
    assert lines == ["mutate.py: STALE MUTATION 'code that changed': its text is in production/headers.py 0 times, "
                     'not once: the code changed, update the mutation',
                     'mutate.py: AUDIT FAILED: 1 stale mutation(s)']
