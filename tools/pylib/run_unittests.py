#!/usr/bin/python3
"""Runs the test_*.py files of one directory for ctest, so that skips are visible there.

    /usr/bin/python3 tools/pylib/run_unittests.py DIR [PATTERN]

PATTERN (default test_*.py) picks the files, so one directory can hold tests that need an
optional module apart from those that do not.

Exit status: 0 when every test ran and passed; 1 on any failure or error; 77 (ctest's
SKIP_RETURN_CODE for these tests) when nothing failed but some tests skipped because an optional
module is missing. Such tests say so with a skip reason starting "missing module" (e.g.
@unittest.skipIf(torch is None, "missing module: torch")); any other skip is deliberate and
does not turn the result into "skipped".
"""
import sys
import unittest

SKIP_EXIT_CODE = 77
MISSING_MODULE = "missing module"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    pattern = sys.argv[2] if len(sys.argv) == 3 else "test_*.py"
    suite = unittest.defaultTestLoader.discover(sys.argv[1], pattern=pattern)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        return 1
    missing = sorted({reason for _, reason in result.skipped if reason.startswith(MISSING_MODULE)})
    if missing:
        print(f"{len(result.skipped)} of {result.testsRun} tests skipped: " + "; ".join(missing))
        return SKIP_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
