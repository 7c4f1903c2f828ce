#!/usr/bin/python3
"""Runs every case of tests/corrupt/cases.json against a zeroskip binary.

    python3 tests/corrupt/check_corpus.py BINARY [--manifest cases.json] [--only NAME ...]
                                                 [--timeout SECONDS]

Each case runs in a fresh empty temporary directory ({out}); {case} is the case directory. A
failing case (the default, "expect_exit" 1) passes when the binary exits 1, prints exactly one
line on stderr, that line is `zeroskip: error: <path>: <reason>` with <path> ending in the
case's "error_file" and <reason> containing "expect", and {out} is still empty afterwards (no
output file, no .tmp). A case with "expect_exit" 0 passes when every stderr line is a
`zeroskip: warning: ` line, "expect" (and every "expect_also") appears among them, and {out}
holds no .tmp file. An error line must also not end in whitespace nor contain any of the
case's "forbid" substrings. Cases marked "known_bad" document a message the binary gets wrong; they are
still run and reported but do not fail the run (use --strict to count them).

Prints one line per case and a last line `N passed, M failed`; exits 1 if any case failed.
Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ERROR_PREFIX = "zeroskip: error: "
WARNING_PREFIX = "zeroskip: warning: "


def expand(arg, case_dir, out_dir):
    return arg.replace("{case}", case_dir).replace("{out}", out_dir)


def leftovers(out_dir):
    found = []
    for root, _, files in os.walk(out_dir):
        found += [os.path.relpath(os.path.join(root, f), out_dir) for f in files]
    return sorted(found)


def check_error_line(line, entry):
    """-> None if `line` is the expected error line, else what is wrong with it."""
    if not line.startswith(ERROR_PREFIX):
        return f"stderr line does not start with {ERROR_PREFIX!r}: {line!r}"
    rest = line[len(ERROR_PREFIX):]
    error_file = entry.get("error_file")
    if error_file:
        marker = error_file + ": "
        at = rest.find(marker)
        # The path must end with error_file at a path-component boundary.
        while at > 0 and rest[at - 1] != "/":
            at = rest.find(marker, at + 1)
        if at < 0:
            return f"error line does not name {error_file!r}: {line!r}"
        reason = rest[at + len(marker):]
    else:
        reason = rest
    if entry["expect"] not in reason:
        return f"reason lacks {entry['expect']!r}: {line!r}"
    return None


def invoke(binary, entry, cases_dir, timeout=60.0):
    """Runs one case in a fresh {out}. -> (returncode or None on timeout, stderr lines with the
    case and out directories written as {case} / {out}, files left in {out})."""
    case_dir = os.path.join(cases_dir, entry["name"])
    with tempfile.TemporaryDirectory(prefix="zsk-corrupt-") as out_dir:
        argv = [binary] + [expand(a, case_dir, out_dir) for a in entry["args"]]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, [], leftovers(out_dir)
        lines = proc.stderr.decode("utf-8", "replace").splitlines()
        lines = [ln.replace(out_dir, "{out}").replace(case_dir, "{case}") for ln in lines]
        return proc.returncode, lines, leftovers(out_dir)


def run_case(binary, entry, cases_dir, timeout):
    """-> (ok, detail)."""
    if not os.path.isdir(os.path.join(cases_dir, entry["name"])):
        return False, "case directory is missing"
    rc, lines, left = invoke(binary, entry, cases_dir, timeout)
    if rc is None:
        return False, f"timed out after {timeout} s"
    want_exit = entry.get("expect_exit", 1)
    problems = []
    if rc < 0:
        problems.append(f"killed by signal {-rc} (crash)")
    elif rc != want_exit:
        problems.append(f"exit status {rc}, expected {want_exit}")
    if want_exit == 0:
        bad = [ln for ln in lines if not ln.startswith(WARNING_PREFIX)]
        if bad:
            problems.append(f"unexpected stderr line {bad[0]!r}")
        for want in [entry["expect"]] + entry.get("expect_also", []):
            if not any(want in ln for ln in lines):
                problems.append(f"no warning containing {want!r}")
        tmp = [f for f in left if f.endswith(".tmp")]
        if tmp:
            problems.append(f"left temporary files {tmp}")
    else:
        if len(lines) != 1:
            shown = " | ".join(lines[:4]) + (" | ..." if len(lines) > 4 else "")
            problems.append(f"{len(lines)} stderr lines, expected 1: {shown!r}")
        for line in lines[-1:]:  # the error line, if any, is the last one
            why = check_error_line(line, entry)
            if why:
                problems.append(why)
            if line != line.rstrip():
                problems.append("error line ends in whitespace")
            for word in entry.get("forbid", []):
                if word in line:
                    problems.append(f"error line contains {word!r}")
        if left:
            problems.append(f"left files in the output directory: {left}")
    if problems:
        return False, "; ".join(problems)
    return True, lines[0] if lines else "(no stderr)"


def main():
    ap = argparse.ArgumentParser(description="Run the corrupt-input corpus against zeroskip.")
    ap.add_argument("binary", help="path to the zeroskip binary")
    ap.add_argument("--manifest", default=os.path.join(HERE, "cases.json"))
    ap.add_argument("--only", nargs="*", default=None, help="run only these case names")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--strict", action="store_true", help="known_bad cases count as failures")
    args = ap.parse_args()

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"check_corpus: {binary} is not an executable", file=sys.stderr)
        return 2
    with open(args.manifest) as f:
        manifest = json.load(f)
    cases_dir = os.path.join(os.path.dirname(os.path.abspath(args.manifest)), "cases")
    if args.only:
        unknown = set(args.only) - {e["name"] for e in manifest}
        if unknown:
            print(f"check_corpus: unknown case(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        manifest = [e for e in manifest if e["name"] in args.only]

    passed = failed = known = 0
    for entry in manifest:
        ok, detail = run_case(binary, entry, cases_dir, args.timeout)
        known_bad = entry.get("known_bad", False)
        if ok:
            passed += 1
            tag = "PASS (known_bad now fixed?)" if known_bad else "PASS"
        elif known_bad and not args.strict:
            passed += 1
            known += 1
            tag = "KNOWN-BAD"
        else:
            failed += 1
            tag = "FAIL"
        print(f"{tag:5} {entry['name']}: {detail}", flush=True)
    if known:
        print(f"({known} known-bad case(s) counted as passed: the binary still gets them wrong)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
