#!/usr/bin/python3
"""Picks a small regression corpus from a libFuzzer merge control file (greedy set cover on
coverage edges), since `-merge=1` alone keeps every input that adds one edge in size order.

    fuzz_X -merge=1 -use_counters=0 -merge_control_file=CF EMPTY_DIR IN_DIR...
    /usr/bin/python3 tests/fuzz/minimize_corpus.py CF OUT_DIR [MAX_FILES]

Inputs named seed-* or crash-* are always kept under their names; the rest are written to OUT_DIR
named by the SHA-1 of their contents, most new edges first, until all edges are covered or
MAX_FILES are chosen.
"""
import hashlib
import os
import shutil
import sys


def main():
    cf, out = sys.argv[1], sys.argv[2]
    max_files = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 30
    lines = open(cf).read().split("\n")
    n = int(lines[0])
    paths = lines[2:2 + n]
    cov, size = {}, {}
    for line in lines[2 + n:]:
        f = line.split()
        if f and f[0] == "STARTED":
            size[int(f[1])] = int(f[2])
        elif f and f[0] == "COV":
            cov[int(f[1])] = set(map(int, f[2:]))
    keep = ("seed-", "crash-")
    all_edges = set().union(*cov.values()) if cov else set()
    chosen = [i for i in range(n) if os.path.basename(paths[i]).startswith(keep)]
    covered = set().union(*(cov.get(i, set()) for i in chosen))
    while covered != all_edges and len(chosen) < max_files:
        best = max((i for i in range(n) if i not in chosen),
                   key=lambda i: (len(cov.get(i, set()) - covered), -size.get(i, 0)))
        chosen.append(best)
        covered |= cov[best]
    os.makedirs(out, exist_ok=True)
    total = 0
    for i in chosen:
        name = os.path.basename(paths[i])
        with open(paths[i], "rb") as f:
            data = f.read()
        total += len(data)
        if not name.startswith(keep):
            name = hashlib.sha1(data).hexdigest()
        shutil.copyfile(paths[i], os.path.join(out, name))
    print(f"{len(chosen)} files, {total} bytes, {len(covered)}/{len(all_edges)} edges")


if __name__ == "__main__":
    main()
