#!/usr/bin/python3
"""Every documented command must run from the repository root on any machine.

    /usr/bin/python3 tests/docs_paths_test.py

Scans what people copy commands from (README.md, docs/, models/, every README, the scripts in
tools/, benchmarks/ and .ci/) for absolute paths. Allowed: the system's own places (/usr for the
system Python and headers, /bin, /lib, /dev, /proc, /sys, /etc), /tmp for scratch files in examples,
and the server's URL paths (/v1/...).
Anything else (a home folder, a build machine's own folders) names one machine and fails, with file
and line.
Recorded outputs (docs/bench/) are data, not commands, and are not scanned. Standard library only.
Prints `N passed, M failed` (one check per file).
"""
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ALLOWED = {"usr", "bin", "sbin", "lib", "lib64", "dev", "proc", "sys", "etc", "tmp",
           "v1"}  # not a file: the server's URL paths (/v1/completions ...)
# An absolute path: a slash not preceded by a path or word character, then a first component.
ABSOLUTE = re.compile(r"(?<![\w.~$}/\\:-])/([A-Za-z][\w.-]*)/")


def scanned_files():
    tracked = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True)
    if tracked.returncode != 0:  # not a checkout (a tarball): scan the tree
        names = [os.path.relpath(os.path.join(d, f), ROOT)
                 for d, _, fs in os.walk(ROOT) if "/." not in d for f in fs]
    else:
        names = tracked.stdout.split()
    for name in names:
        if name.startswith("docs/bench/") or name.startswith("tests/corrupt/cases/"):
            continue
        docs = name.endswith(".md")
        scripts = name.startswith(("tools/", "benchmarks/", ".ci/")) and (
            name.endswith((".py", ".sh")) or name.startswith(".ci/"))
        if docs or scripts:
            yield name


def main():
    passed = failed = 0
    for name in sorted(scanned_files()):
        with open(os.path.join(ROOT, name), encoding="utf-8", errors="replace") as f:
            bad = [(n, m.group(0)) for n, line in enumerate(f, 1)
                   for m in ABSOLUTE.finditer(line) if m.group(1) not in ALLOWED]
        if bad:
            failed += 1
            for n, path in bad:
                print(f"FAIL {name}:{n}: absolute path '{path}...' names one machine; use a path "
                      "relative to the repository root or a variable with its default explained")
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
