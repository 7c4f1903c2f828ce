#!/usr/bin/python3
"""Mutation testing for zeroskip: plants one realistic bug at a time and asks whether a test fails.

    /usr/bin/python3 tools/mutate/mutate.py                 # every mutation, report in tools/mutate/
    /usr/bin/python3 tools/mutate/mutate.py --check         # only validate tools/mutate/mutations.txt
    /usr/bin/python3 tools/mutate/mutate.py --only ID[,ID]  # some mutations (report not written
                                                            # to the repository unless --report-dir)

Each mutation in tools/mutate/mutations.txt names a file, an exact snippet that must occur in it
exactly once, its replacement and a ctest regex of the tests that should notice. The repository's
files (tracked and untracked-but-not-ignored, as they are in the working tree) are mirrored into a
scratch directory (--work, default $TMPDIR/zeroskip-mutate), built once there in its own build
directory (Release, benchmarks off, no -Werror: a mutant that only warns still runs), and the full
suite must pass on that baseline. Then, per mutation: write the mutant into the scratch copy,
rebuild incrementally, run `ctest -R <regex>` (stopping at the first failure), restore the
original file (always, also on Ctrl-C), and classify:

    caught         a test failed (or timed out); the report names it
    survived       every selected test passed, and then the whole suite too (--no-confirm skips
                   that second run); `equivalent:` in the list explains why when it must
    did not build  the mutant does not compile: counted separately, never as caught

The repository itself is never modified. Results go to REPORT.md and report.json (--report-dir).
"""
import argparse
import datetime
import filecmp
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CATEGORIES = [  # (path prefix, category), first match wins
    ("src/format/", "format"), ("src/model/", "model"), ("src/ffn/", "ffn"),
    ("kernels/", "kernels"), ("src/sample/", "sampler"), ("src/text/", "text"),
    ("tools/zeroskip/", "cli"), ("src/serve/", "serve"), ("src/engine/", "engine"),
    ("src/ops/", "ops"), ("src/arch/", "arch"), ("src/generate/", "generate"),
]


class Mutation:
    def __init__(self, ident, line):
        self.id = ident
        self.line = line  # where it starts in the list, for messages
        self.fields = {}
        self.original = None
        self.mutant = None
        self.closed = False

    @property
    def file(self):
        return self.fields["file"]

    @property
    def category(self):
        if "category" in self.fields:
            return self.fields["category"]
        for prefix, name in CATEGORIES:
            if self.file.startswith(prefix):
                return name
        return "other"


def parse_list(path):
    with open(path, encoding="utf-8") as f:
        return parse_list_text(f.read(), path)


def parse_list_text(text, path):
    """The list format (see the head of mutations.txt): blocks opened by `=== id`, `key: value`
    lines, then `--- original` and `--- mutant` each followed by a verbatim snippet, closed by
    `--- end`."""
    mutations, current, section, lines = [], None, None, []

    def flush_section():
        nonlocal lines
        if current is not None and section is not None:
            while lines and not lines[-1].strip():
                lines.pop()
            setattr(current, section, "\n".join(lines))
        lines = []

    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("=== "):
            flush_section()
            section = None
            current = Mutation(line[4:].strip(), number)
            mutations.append(current)
        elif current is None or (section is None and (not line.strip() or line.startswith("#"))):
            continue
        elif line in ("--- original", "--- mutant"):
            flush_section()
            section = line[4:]
        elif line == "--- end":
            flush_section()
            section = None
            current.closed = current.mutant is not None
        elif section is None:
            key, sep, value = line.partition(":")
            if not sep:
                raise SystemExit(f"{path}:{number}: expected 'key: value', got {line!r}")
            current.fields[key.strip()] = value.strip()
        else:
            lines.append(line)
    flush_section()
    return mutations


def git(*cmd):
    """-> git's stdout, or None when it fails (e.g. a commit this clone does not have)."""
    out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def changed_since(mutations, rev, list_path):
    """The mutations whose file differs between rev and the working tree, or whose entry in the
    list is new or different since rev; None when rev is unknown here."""
    names = git("diff", "--name-only", rev, "--")
    if names is None:
        return None
    changed = set(names.split())
    old_text = git("show", f"{rev}:{os.path.relpath(list_path, ROOT)}") or ""
    old = {m.id: m for m in parse_list_text(old_text, f"{rev}:list")}

    def same_entry(m):
        o = old.get(m.id)
        return o is not None and (o.fields, o.original, o.mutant) == (m.fields, m.original,
                                                                        m.mutant)
    return [m for m in mutations if m.file in changed or not same_entry(m)]


def fixed_sample(mutations, n, seed):
    """n of the mutations, the same n for the same seed (the commit), in list order."""
    def key(m):
        return hashlib.sha256(f"{seed}:{m.id}".encode()).hexdigest()
    chosen = {m.id for m in sorted(mutations, key=key)[:n]}
    return [m for m in mutations if m.id in chosen]


def validate(mutations, root):
    errors, seen = [], set()
    for m in mutations:
        where = f"mutation {m.id} (line {m.line})"
        if m.id in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(m.id)
        for key in ("file", "tests", "what"):
            if key not in m.fields:
                errors.append(f"{where}: missing '{key}:'")
        if m.original is None or m.mutant is None:
            errors.append(f"{where}: needs both '--- original' and '--- mutant'")
            continue
        if not m.closed:
            errors.append(f"{where}: the mutant snippet is not closed by '--- end'")
        if m.original == m.mutant:
            errors.append(f"{where}: the mutant equals the original")
        if "file" not in m.fields:
            continue
        path = os.path.join(root, m.file)
        if not os.path.isfile(path):
            errors.append(f"{where}: no file {m.file}")
            continue
        with open(path, encoding="utf-8") as f:
            count = f.read().count(m.original)
        if count != 1:
            errors.append(f"{where}: the original snippet occurs {count} times in {m.file} "
                          "(must be exactly once)")
        try:
            re.compile(m.fields.get("tests", ""))
        except re.error as e:
            errors.append(f"{where}: bad tests regex: {e}")
    return errors


def repo_files(root):
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))]


def sync_tree(root, dst):
    """Mirrors the working tree into dst, touching only files whose content changed (so the
    scratch build stays incremental across runs) and removing files that are gone."""
    files = repo_files(root)
    manifest_path = os.path.join(dst, ".mutate-manifest.json")
    old = []
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
    copied = 0
    for rel in files:
        src, out = os.path.join(root, rel), os.path.join(dst, rel)
        if os.path.exists(out) and filecmp.cmp(out, src, shallow=False):
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copy2(src, out)
        os.utime(out)  # newer than any object built from the old content
        copied += 1
    for rel in set(old) - set(files):
        try:
            os.remove(os.path.join(dst, rel))
        except FileNotFoundError:
            pass
    with open(manifest_path, "w") as f:
        json.dump(files, f)
    return copied


def run(cmd, log, timeout=None, cwd=None):
    """Runs cmd at lower priority, appending its output to log; -> (returncode, seconds)."""
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        # Its own process group, so a timeout or Ctrl-C stops the tests it started too.
        proc = subprocess.Popen(["nice", "-n", "10"] + cmd, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -1
            out.write(f"\n(timed out after {timeout} s)\n")
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return rc, time.monotonic() - start


def build(args, log):
    return run(["cmake", "--build", args.build_dir, "-j", str(args.jobs)], log,
               timeout=args.build_timeout)


def ctest(args, log, regex=None, stop_on_failure=True):
    """-> (failed test names, passed count, seconds)."""
    # Absolute: ctest writes a relative --output-junit path under --test-dir, not here.
    junit = os.path.abspath(os.path.join(args.work, "junit.xml"))
    if os.path.exists(junit):
        os.remove(junit)
    cmd = ["ctest", "--test-dir", args.build_dir, "-j", str(args.jobs), "--timeout",
           str(args.test_timeout), "--output-junit", junit, "--output-on-failure"]
    if regex:
        cmd += ["-R", regex]
    if stop_on_failure:
        cmd.append("--stop-on-failure")
    rc, seconds = run(cmd, log, timeout=args.suite_timeout)
    failed, passed = [], 0
    if os.path.exists(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            status = case.get("status", "")
            if status in ("fail", "failed") or case.find("failure") is not None:
                failed.append(case.get("name"))
            elif status == "run":
                passed += 1
    if rc != 0 and not failed:
        failed.append("(ctest exited %d without a failed test: timeout or crash)" % rc)
    return failed, passed, seconds


def configure(args, log):
    if os.path.exists(os.path.join(args.build_dir, "CMakeCache.txt")):
        return
    rc, _ = run(["cmake", "-S", args.src_dir, "-B", args.build_dir, "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", "-DZEROSKIP_BENCHMARKS=OFF",
                 "-DZEROSKIP_WERROR=OFF"], log)
    if rc != 0:
        raise SystemExit(f"configure failed, see {log}")


def on_terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so every Restorer puts its file back."""
    raise KeyboardInterrupt


class Restorer:
    """Puts the original file back whatever happens (exception, Ctrl-C, SIGTERM)."""

    def __init__(self, path, text):
        self.path, self.text = path, text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(self.text)
        return False


def first_error(log, since):
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(since)
        for line in f:
            if "error:" in line or "Error" in line:
                return line.strip()[:300]
    return "(see the log)"


def run_mutation(m, args, log):
    path = os.path.join(args.src_dir, m.file)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    result = {"id": m.id, "file": m.file, "category": m.category, "what": m.fields["what"],
              "tests": m.fields["tests"], "equivalent": m.fields.get("equivalent", ""),
              "original": m.original, "mutant": m.mutant}
    log_start = os.path.getsize(log) if os.path.exists(log) else 0
    with Restorer(path, original):
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(m.original, m.mutant, 1))
        rc, result["build_s"] = build(args, log)
        if rc != 0:
            result.update(status="did not build", build_error=first_error(log, log_start))
            return result
        failed, passed, result["test_s"] = ctest(args, log, m.fields["tests"],
                                                 stop_on_failure=not args.all_failures)
        if failed:
            result.update(status="caught", caught_by=failed, tests_passed=passed)
            return result
        # One marked equivalent is expected to survive: the whole suite would only cost time.
        if args.no_confirm or m.fields.get("equivalent"):
            result.update(status="survived", caught_by=[], confirmed_on="subset")
            return result
        # Survived its subset: does anything else in the suite notice?
        failed, _, seconds = ctest(args, log, None, stop_on_failure=not args.all_failures)
        result["test_s"] += seconds
        if failed:
            result.update(status="caught", caught_by=failed, outside_subset=True)
        else:
            result.update(status="survived", caught_by=[], confirmed_on="full suite")
    return result


def short_test_name(name):
    """ctest names of parameterized gtests carry the printed parameter: keep what identifies it."""
    name = name.split("  # GetParam()")[0]
    return re.sub(r"0x[0-9a-f]+ pointing to ", "", name)


def write_reports(results, meta, report_dir):
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "report.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    total = len(results)
    by_status = {s: [r for r in results if r["status"] == s]
                 for s in ("caught", "survived", "did not build")}
    built = total - len(by_status["did not build"])
    caught = len(by_status["caught"])
    lines = [
        "# Mutation testing report",
        "",
        f"Generated by `tools/mutate/mutate.py` on {meta['date']} from commit `{meta['commit']}`"
        f"{' (with uncommitted changes)' if meta['dirty'] else ''}; "
        f"{meta['minutes']:.0f} minutes on {meta['host']} ({meta['jobs']} jobs).",
        "",
        f"**Score: {caught} of {built} built mutants caught ({100.0 * caught / max(built, 1):.1f}%)**"
        f" — {total} mutations, {len(by_status['survived'])} survived, "
        f"{len(by_status['did not build'])} did not build.",
        "",
        "Reproduce: `/usr/bin/python3 tools/mutate/mutate.py --all-failures` (see "
        "tools/mutate/README.md). \"(audit)\" marks the survivors of issue 16's audit.",
        "",
        "| category | mutations | caught | survived | did not build |",
        "|---|---:|---:|---:|---:|",
    ]
    for cat in sorted({r["category"] for r in results}):
        rs = [r for r in results if r["category"] == cat]
        lines.append(f"| {cat} | {len(rs)} | "
                     f"{sum(r['status'] == 'caught' for r in rs)} | "
                     f"{sum(r['status'] == 'survived' for r in rs)} | "
                     f"{sum(r['status'] == 'did not build' for r in rs)} |")
    if by_status["survived"]:
        lines += ["", "## Survivors", ""]
        for r in by_status["survived"]:
            why = r["equivalent"] or "**not explained: needs a test**"
            lines.append(f"- `{r['id']}` ({r['file']}): {r['what']}. Equivalent: {why}")
    if by_status["did not build"]:
        lines += ["", "## Did not build", ""]
        for r in by_status["did not build"]:
            lines.append(f"- `{r['id']}` ({r['file']}): {r.get('build_error', '')}")
    lines += ["", "## Every mutation", "",
              "| id | file | what | result | caught by |", "|---|---|---|---|---|"]
    for r in results:
        caught_by = r.get("caught_by", [])
        by = ", ".join(f"`{short_test_name(t)}`" for t in caught_by[:3])
        if len(caught_by) > 3:
            by += f" and {len(caught_by) - 3} more"
        if r.get("outside_subset"):
            by += " (outside its `-R` subset)"
        what = r["what"].replace("|", "\\|")
        lines.append(f"| `{r['id']}` | {r['file']} | {what} | {r['status']} | {by} |")
    lines.append("")
    with open(os.path.join(report_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", default=os.path.join(HERE, "mutations.txt"))
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                   "zeroskip-mutate"))
    ap.add_argument("--only", help="comma-separated mutation ids (or regexes of ids)")
    ap.add_argument("--check", action="store_true", help="validate the list and exit")
    ap.add_argument("--changed-since", metavar="REV",
                    help="only the mutations whose file or list entry changed since REV, "
                    "leaving out those marked equivalent; 'report': the commit of the last "
                    "full run (report.json)")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="at most N of the selected mutations: a fixed choice per commit")
    ap.add_argument("--fail-on-survivor", action="store_true",
                    help="exit 1 when a mutant not marked equivalent survives (CI)")
    ap.add_argument("--jobs", type=int, default=2, help="build and ctest parallelism (2)")
    ap.add_argument("--test-timeout", type=int, default=300, help="per test, seconds (300)")
    ap.add_argument("--suite-timeout", type=int, default=3600, help="per ctest run (3600)")
    ap.add_argument("--build-timeout", type=int, default=1800, help="per build (1800)")
    ap.add_argument("--no-confirm", action="store_true",
                    help="do not re-run survivors against the whole suite")
    ap.add_argument("--all-failures", action="store_true",
                    help="run every selected test instead of stopping at the first failure")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="do not run the whole suite on the unmutated tree first")
    ap.add_argument("--rewrite-report", action="store_true",
                    help="only rewrite REPORT.md from the report.json in --report-dir (e.g. "
                    "after editing an equivalent: explanation in the list)")
    ap.add_argument("--report-dir", help="where REPORT.md and report.json go (default: "
                    "tools/mutate for a full run, the work directory with --only)")
    args = ap.parse_args()

    mutations = parse_list(args.list)
    errors = validate(mutations, ROOT)
    if errors:
        raise SystemExit("\n".join(errors))
    if args.rewrite_report:
        report_dir = args.report_dir or HERE
        with open(os.path.join(report_dir, "report.json")) as f:
            report = json.load(f)
        explained = {m.id: m.fields.get("equivalent", "") for m in mutations}
        for r in report["results"]:
            r["equivalent"] = explained.get(r["id"], r["equivalent"])
        write_reports(report["results"], report["meta"], report_dir)
        print(f"rewrote {report_dir}/REPORT.md")
        return
    if args.check:
        cats = {}
        for m in mutations:
            cats[m.category] = cats.get(m.category, 0) + 1
        print(f"{len(mutations)} mutations, all apply exactly once: "
              + ", ".join(f"{c} {n}" for c, n in sorted(cats.items())))
        return
    if args.only:
        wanted = [w for w in args.only.split(",") if w]
        mutations = [m for m in mutations if any(re.fullmatch(w, m.id) for w in wanted)]
        if not mutations:
            raise SystemExit("--only matches no mutation")
    head = (git("rev-parse", "--short", "HEAD") or "").strip()
    if args.changed_since:
        rev = args.changed_since
        if rev == "report":
            with open(os.path.join(HERE, "report.json")) as f:
                rev = json.load(f)["meta"]["commit"]
        selected = changed_since(mutations, rev, args.list)
        if selected is None:
            print(f"commit {rev} is not in this clone: sampling from every mutation", flush=True)
            selected = mutations
        else:
            print(f"{len(selected)} mutations touch what changed since {rev}", flush=True)
        mutations = [m for m in selected if not m.fields.get("equivalent")]
    if args.sample is not None and len(mutations) > args.sample:
        mutations = fixed_sample(mutations, args.sample, head)
        print(f"running a fixed sample of {len(mutations)} (seeded by commit {head})", flush=True)
    partial = args.only or args.changed_since or args.sample is not None
    report_dir = args.report_dir or (args.work if partial else HERE)
    if not mutations:
        print("no mutation to run")
        return

    args.src_dir = os.path.join(args.work, "src")
    args.build_dir = os.path.join(args.work, "build")
    os.makedirs(args.src_dir, exist_ok=True)
    log = os.path.join(args.work, "mutate.log")
    open(log, "w").close()
    signal.signal(signal.SIGTERM, on_terminate)

    started = time.monotonic()
    # What was tested: the tree as mirrored now (later edits to the repository do not count).
    commit = head
    dirty = bool((git("status", "--porcelain") or "").strip())
    print(f"mirroring {ROOT} into {args.src_dir}: "
          f"{sync_tree(ROOT, args.src_dir)} files updated; log: {log}", flush=True)
    configure(args, log)
    rc, seconds = build(args, log)
    if rc != 0:
        raise SystemExit(f"the unmutated tree does not build, see {log}")
    print(f"baseline build {seconds:.0f} s", flush=True)
    if not args.skip_baseline:
        failed, passed, seconds = ctest(args, log, None, stop_on_failure=False)
        if failed:
            raise SystemExit(f"the unmutated tree fails {failed}: fix that first (log: {log})")
        print(f"baseline: {passed} tests pass in {seconds:.0f} s", flush=True)

    results = []
    try:
        for i, m in enumerate(mutations, 1):
            r = run_mutation(m, args, log)
            results.append(r)
            detail = ", ".join(r.get("caught_by", [])[:2]) or r.get("build_error", "")
            print(f"[{i}/{len(mutations)}] {m.id}: {r['status']} "
                  f"(build {r['build_s']:.0f} s, tests {r.get('test_s', 0):.0f} s) {detail}",
                  flush=True)
    except KeyboardInterrupt:
        # A part of the list is no full run: it must not replace the committed report (CI starts
        # from that report's commit).
        report_dir = args.report_dir or args.work
        print(f"interrupted: the scratch copy is restored; reporting what ran in {report_dir}",
              file=sys.stderr)
    finally:
        # Leave the scratch build matching the unmutated tree for the next run.
        build(args, log)

    meta = {"date": datetime.date.today().isoformat(), "commit": commit, "dirty": dirty,
            "minutes": (time.monotonic() - started) / 60, "host": os.uname().nodename,
            "jobs": args.jobs, "list": os.path.relpath(args.list, ROOT)}
    write_reports(results, meta, report_dir)
    caught = sum(r["status"] == "caught" for r in results)
    built = sum(r["status"] != "did not build" for r in results)
    print(f"{caught}/{built} built mutants caught; report: {report_dir}/REPORT.md")
    unexplained = [r["id"] for r in results
                   if r["status"] == "survived" and not r["equivalent"]]
    if args.fail_on_survivor and unexplained:
        raise SystemExit("survived, not marked equivalent (a test is missing): "
                         + ", ".join(unexplained))


if __name__ == "__main__":
    main()
