"""mcjax's pytest plugin: a failing derivative reads as mcjax's report, at your test's line.

pytest loads it through the ``pytest11`` entry point wherever mcjax is installed; nothing to
configure.  When a test fails with ``mcjax.DerivativeError`` (from
``mcjax.assert_derivative`` or ``mcjax.assert_rule``), the traceback stops at the test's own code instead of
walking into mcjax's internals, the report follows it (the comparisons, the worst entries,
the diagnosis), and the short summary line names the diagnosis.  ``--fulltrace`` shows the
whole traceback as usual.

This module sits outside the ``mcjax`` package on purpose: pytest imports every installed
plugin when it starts, in every project, and importing mcjax (and with it JAX) takes about a
second.  Nothing here imports mcjax; a ``DerivativeError`` can only arise once the tests
have imported it.  (hypothesis's own plugin, ``_hypothesis_pytestplugin``, does the same.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def _derivative_error(excinfo):
    """The DerivativeError a test failed with, else None (without importing mcjax)."""
    errors = sys.modules.get("mcjax._core._errors")
    if excinfo is None or errors is None:
        return None
    error = excinfo.value
    return error if isinstance(error, errors.DerivativeError) else None


def _summary(error) -> str:
    """One line for pytest's short summary: the error's first line (the diagnosis, then what
    failed), not the whole report; pytest cuts it to the terminal's width unless ``-vv``."""
    return f"DerivativeError: {str(error).splitlines()[0]}"


def _end_at_the_call(excinfo) -> None:
    """Drop the traceback's frames from the first one inside mcjax on: the last frame left is
    the test's (or its helper's) call of mcjax, and the report is shown under it."""
    package = Path(sys.modules["mcjax"].__file__).resolve().parent
    before, tb = None, excinfo.tb
    while tb is not None:
        if package in Path(tb.tb_frame.f_code.co_filename).resolve().parents:
            if before is not None:
                # pytest renders from the raw traceback's links (Traceback.cut follows
                # tb_next), so the chain itself ends at the call (tb_next is writable)
                before.tb_next = None
                excinfo.traceback = type(excinfo.traceback)(excinfo.tb)
            return
        before, tb = tb, tb.tb_next


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    error = _derivative_error(call.excinfo)
    if error is not None and not item.config.getoption("fulltrace", False):
        _end_at_the_call(call.excinfo)
    outcome = yield
    report = outcome.get_result()
    crash = getattr(report.longrepr, "reprcrash", None)
    if error is not None and crash is not None:
        crash.message = _summary(error)


def pytest_report_header(config):
    return ("mcjax: a failing mcjax.assert_derivative or mcjax.assert_rule shows its report and "
            "diagnosis")
