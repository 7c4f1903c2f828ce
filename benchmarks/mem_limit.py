#!/usr/bin/python3
"""Decode under a memory limit against decode in RAM, both engines (issue 33's baseline).

    mem_limit.py --zsk MODEL.zsk --tokenizer tokenizer.model [--gguf MODEL.gguf --llama-bin DIR]
                 [--zeroskip build/zeroskip] [--limit 6G] [--mem-budget 5632M] [--no-dense]
                 [--n-decode 8] [--prompt 25] [--threads 2] [--fio] [--zeroskip-first]
                 [--out RESULTS.json]

Each engine (llama.cpp when --gguf is given, zeroskip --ffn sparse and --ffn dense) runs twice:
in RAM (its file read into the page cache first, no limit) and inside a memory cgroup limited to
--limit, created for that run, with the page cache dropped first (sync; echo 3 >
/proc/sys/vm/drop_caches). A cgroup's limit counts the page cache its processes fault in, so a
model mapped from a file larger than the limit is read from disk again and again: the limited run
measures what a user with that much memory gets. Per run: decode tok/s (the forward passes after
the first, as benchmarks/peer_llamacpp.py counts them), prefill tok/s, the process's peak RSS,
the cgroup's peak usage, and the bytes read from the model file's block device during the run
(/sys/dev/block/MAJ:MIN/stat) per forward pass. Both engines get the same prompt ids (the
tokenizer.model the checkpoint came with).

--fio also measures the device's read bandwidth with fio (read only, on the model file itself):
sequential 1 MiB reads with O_DIRECT and through the page cache, and random O_DIRECT reads of
16 KiB (a bf16 7B neuron's up row and down column: 2 x 4096 x 2 bytes) and 64 KiB at queue depth
32, and 16 KiB at depth 1; without fio installed it says so and goes on.

--mem-budget gives zeroskip sparse's limited run that budget (`run --mem-budget`: the model's FFN
rows read from its neuron file, `zeroskip neurons`); the result then records whether it generated
the same tokens as in RAM, and its neuron reads. --no-dense skips zeroskip --ffn dense.

Needs root and a cgroup memory controller (v1 memory.limit_in_bytes or v2 memory.max). Writes
OUT (JSON, atomically) and prints a Markdown table. Standard library only.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_llamacpp  # noqa: E402  (run_llama, run_zeroskip, make_prompt, warm_page_cache)

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_bytes(text):
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (e.g. 6G, 512M, 1000000)")
    return int(m.group(1)) * UNITS[m.group(2)]


def read_text(path):
    with open(path) as f:
        return f.read()


class MemCgroup:
    """A memory cgroup of its own for one run: `prefix` is the command that enters it."""

    def __init__(self, limit):
        v2_controllers = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.isdir("/sys/fs/cgroup/memory"):
            self.v2, base = False, "/sys/fs/cgroup/memory"
        elif os.path.exists(v2_controllers) and "memory" in read_text(v2_controllers).split():
            self.v2, base = True, "/sys/fs/cgroup"
        else:
            raise SystemExit("mem_limit: no cgroup memory controller (v1 /sys/fs/cgroup/memory or "
                             "v2 with 'memory' in cgroup.controllers)")
        self.path = os.path.join(base, f"zeroskip-mem-limit-{os.getpid()}")
        os.mkdir(self.path)
        if self.v2:
            self._write("memory.max", limit)
            if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                self._write("memory.swap.max", 0)
        else:
            self._write("memory.limit_in_bytes", limit)
        self.prefix = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path]

    def _write(self, name, value):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(str(value))

    def peak_bytes(self):
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            with open(os.path.join(self.path, name)) as f:
                return int(f.read())
        except OSError:  # v2 before Linux 5.19 has no memory.peak
            return None

    def close(self):
        os.rmdir(self.path)  # its processes have exited: run_measured waited for them


def drop_page_cache():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def device_stat(path):
    """The block device holding `path`: its /sys/dev/block/MAJ:MIN/stat (whole disk or partition)."""
    st = os.stat(path)
    return f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"


def sectors_read(stat_path):
    with open(stat_path) as f:
        return int(f.read().split()[2])  # field 3: sectors read (512 bytes each)


def one_run(args, engine, path, ffn, prompt, limited):
    run_args = argparse.Namespace(llama_bin=args.llama_bin, zeroskip=args.zeroskip,
                                  threads=args.threads, n_decode=args.n_decode,
                                  prefill_lengths=[args.prompt], long_prompt=0)
    cgroup = None
    # Every run starts from an empty page cache: an in-RAM run right after a limited one decoded
    # a 7B at 1.9-3.7 tok/s, after a drop at 5.4-7.7. The pages a limited run leaves behind are
    # not in the 2 MiB folios a fresh read gets (the kernel then maps a 7B's weights only partly
    # with 2 MiB entries: 7 of 12.7 GB, /proc/meminfo FilePmdMapped), and sparse rows miss the TLB.
    drop_page_cache()
    if limited:
        cgroup = MemCgroup(args.limit)
    else:
        peer_llamacpp.warm_page_cache([path])
    stat = device_stat(path)
    before = sectors_read(stat)
    try:
        prefix = cgroup.prefix if cgroup else ()
        if engine == "llama.cpp":
            r = peer_llamacpp.run_llama(run_args, path, prompt, args.n_decode, prefix=prefix)
        else:
            budget = ("--mem-budget", str(args.mem_budget)) if limited and args.mem_budget and \
                ffn == "sparse" else ()
            r = peer_llamacpp.run_zeroskip(run_args, path, ffn, prompt, args.n_decode,
                                           extra=budget, prefix=prefix)
        read = (sectors_read(stat) - before) * 512
        r["disk_bytes_read"] = read
        r["disk_bytes_per_pass"] = read / (1 + r.get("decode_steps", 0))
        if cgroup:
            r["cgroup_peak_bytes"] = cgroup.peak_bytes()
    finally:
        if cgroup:
            cgroup.close()
    return r


def fio_bandwidth(path):
    """Read bandwidth of `path`'s device, or None without fio."""
    if shutil.which("fio") is None:
        print("mem_limit: fio is not installed: no disk bandwidth (apt-get install fio)",
              file=sys.stderr)
        return None
    jobs = [("sequential 1 MiB, O_DIRECT, QD 8", ["--rw=read", "--bs=1M", "--iodepth=8"]),
            ("sequential 1 MiB, page cache", ["--rw=read", "--bs=1M", "--direct=0",
                                              "--ioengine=psync"]),
            ("random 64 KiB, O_DIRECT, QD 32", ["--rw=randread", "--bs=64k", "--iodepth=32"]),
            ("random 16 KiB, O_DIRECT, QD 32", ["--rw=randread", "--bs=16k", "--iodepth=32"]),
            ("random 16 KiB, O_DIRECT, QD 1", ["--rw=randread", "--bs=16k", "--iodepth=1"])]
    out = []
    for name, opts in jobs:
        drop_page_cache()
        cmd = ["fio", "--name=read", f"--filename={path}", "--readonly", "--direct=1",
               "--ioengine=libaio", "--runtime=10", "--time_based", "--output-format=json",
               *opts]  # a later --direct/--ioengine overrides the defaults before it
        j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        read = j["jobs"][0]["read"]
        out.append({"job": name, "MB_s": read["bw_bytes"] / 1e6, "iops": read["iops"]})
    return out


def table(doc):
    gb = lambda b: f"{b / 1e9:.2f}" if b is not None else "–"  # noqa: E731
    lines = [f"| engine | in RAM tok/s | under {doc['limit_bytes'] / (1 << 30):g} GiB tok/s | "
             "limited / in RAM | GB read from disk per forward pass (limited) | cgroup peak GB "
             "| peak RSS GB (in RAM) | same tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        ram, lim = r["in_ram"], r["limited"]
        same = "–" if "tokens" not in ram else "yes" if ram["tokens"] == lim["tokens"] else "NO"
        lines.append(f"| {r['engine']} | {ram['decode_tok_s']:.2f} | {lim['decode_tok_s']:.3f} | "
                     f"{lim['decode_tok_s'] / ram['decode_tok_s']:.1%} | "
                     f"{gb(lim['disk_bytes_per_pass'])} | {gb(lim.get('cgroup_peak_bytes'))} | "
                     f"{ram['max_rss_mb'] / 1e3:.2f} | {same} |")
    if doc.get("disk"):
        lines += ["", "| disk read (fio, on the model file) | MB/s | IOPS |", "|---|---|---|"]
        lines += [f"| {d['job']} | {d['MB_s']:.0f} | {d['iops']:.0f} |" for d in doc["disk"]]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zsk", required=True, help="the zeroskip model")
    ap.add_argument("--tokenizer", required=True, help="the checkpoint's tokenizer.model")
    ap.add_argument("--gguf", help="the same checkpoint for llama.cpp (else llama.cpp is skipped)")
    ap.add_argument("--llama-bin", default="", help="llama.cpp build's bin directory")
    ap.add_argument("--zeroskip", default="build/zeroskip")
    ap.add_argument("--limit", type=parse_bytes, default=parse_bytes("6G"))
    ap.add_argument("--mem-budget", type=parse_bytes, default=0,
                    help="zeroskip sparse's limited run: --mem-budget (needs the neuron file)")
    ap.add_argument("--no-dense", action="store_true", help="skip zeroskip --ffn dense")
    ap.add_argument("--n-decode", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=25, help="prompt tokens, BOS included")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fio", action="store_true", help="also measure the disk with fio")
    ap.add_argument("--zeroskip-first", action="store_true",
                    help="run zeroskip before llama.cpp (zeroskip ran slower right after "
                         "llama.cpp's limited run, which reads ~14 GB a token: docs/BENCHMARKS.md)")
    ap.add_argument("--out", default="docs/bench/mem_limit.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (a cgroup of its own and drop_caches)")
    if args.gguf and not os.path.exists(os.path.join(args.llama_bin, "llama-cli")):
        ap.error("--gguf needs --llama-bin, the directory holding llama-cli")
    prompt, prompt_tokens = peer_llamacpp.make_prompt(args.tokenizer, args.prompt)
    runs = ([("llama.cpp", args.gguf, None)] if args.gguf else []) + \
        [("zeroskip sparse", args.zsk, "sparse")] + \
        ([] if args.no_dense else [("zeroskip dense", args.zsk, "dense")])
    if args.zeroskip_first:
        runs = runs[1:] + runs[:1] if args.gguf else runs
    results = []
    for engine, path, ffn in runs:
        r = {"engine": engine, "file": os.path.basename(path), "file_bytes": os.path.getsize(path)}
        for mode, limited in (("in_ram", False), ("limited", True)):
            r[mode] = one_run(args, engine, path, ffn, prompt, limited)
            print(f"mem_limit: {engine} {mode}: {r[mode]['decode_tok_s']:.3f} tok/s", flush=True)
        results.append(r)
    doc = {"benchmark": "mem_limit",
           "date_utc": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
           "limit_bytes": args.limit, "mem_budget_bytes": args.mem_budget,
           "threads": args.threads, "n_decode": args.n_decode,
           "order": [engine for engine, _, _ in runs],
           "prompt_tokens": prompt_tokens, "mem_total_bytes": os.sysconf("SC_PHYS_PAGES") *
           os.sysconf("SC_PAGE_SIZE"), "results": results,
           "disk": fio_bandwidth(args.zsk) if args.fio else None}
    with open(args.out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(args.out + ".tmp", args.out)
    print(table(doc))


if __name__ == "__main__":
    main()
