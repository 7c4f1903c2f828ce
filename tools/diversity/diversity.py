#!/usr/bin/env python3
"""Diversity vs quality of stochastic activations at inference ("Stochastic activations",
Meta FAIR 2025, arXiv 2509.22358) compared with temperature sampling, measured with zeroskip.

  /usr/bin/python3 tools/diversity/diversity.py --zeroskip build/zeroskip \
      --relu /tmp/div/relu-ft.zsk --silu /tmp/div/silu.zsk \
      --corpus ../shared/data/tinyshakespeare.txt --out-dir docs

Prompts are read at run time from the held-out last 10% of --corpus (the first words of evenly
spaced lines); no corpus, prompt or sample text is written to the outputs, only aggregate
token-level metrics.

Configurations: SiLU model + temperature, ReLU-FT model + temperature, ReLU-FT + stochastic
activations (greedy decoding, --act stoch with P(SiLU) = p), ReLU-FT + stochastic activations +
temperature, and the two greedy deterministic baselines.

Metrics per configuration (over generated token ids, per prompt then averaged over prompts):
  distinct-n   unique n-grams / total n-grams pooled over the samples of a prompt
  self-BLEU-4  each sample against the other samples of its prompt (BLEU, uniform 1..4-gram
               weights, clipped counts, +1 smoothing for n > 1, brevity penalty); lower = more
               diverse
  ll_relu / ll_silu  mean per-token log-likelihood of the generated tokens given the prompt under
               the deterministic ReLU-FT model / the SiLU model (`zeroskip score`)
  ffn_zero_fraction  mean FFN zero fraction reported by `zeroskip run` (ReLU-FT runs only)

Writes OUT/diversity.json, OUT/diversity.png and OUT/DIVERSITY.md; the "Reading" section of the
markdown is the hand-written tools/diversity/reading.md. `--out-dir OUT --render-only`
re-renders the markdown and the plot from OUT/diversity.json without running anything.
Tests of the metric functions: /usr/bin/python3 -m unittest tools/diversity/test_diversity.py
"""
import argparse
import collections
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HELDOUT_FRACTION = 0.1

TEMPS = (0.6, 0.8, 1.0)          # the temperature sweep of the brief
STOCH_PS = (0.3, 0.5, 0.7)       # the P(SiLU) sweep of --act stoch at temperature 0
STOCH_T = (0.5, 0.8)             # (p, T): stochastic activations + temperature
DEFAULT_EXTRA_TEMPS = (0.1, 0.2, 0.4)  # low temperatures added to compare at matched diversity


def build_configs(extra_temps=DEFAULT_EXTRA_TEMPS):
    """[(name, model key, temperature, act, stoch_p, deterministic)]"""
    temps = sorted(set(TEMPS) | set(extra_temps))
    out = []
    for m in ("silu", "relu"):
        out.append((f"{m} greedy", m, 0.0, "model", None, True))
        out += [(f"{m} T={t:g}", m, t, "model", None, False) for t in temps]
    out += [(f"relu stoch p={p:g}", "relu", 0.0, "stoch", p, False) for p in STOCH_PS]
    p, t = STOCH_T
    out.append((f"relu stoch p={p:g} T={t:g}", "relu", t, "stoch", p, False))
    return out


CONFIGS = build_configs()


# ----------------------------------------------------------------------------- metrics

def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(samples, n):
    """Unique n-grams / total n-grams pooled over `samples` (lists of token ids).
    None when there is no n-gram at all."""
    grams = [g for s in samples for g in ngrams(s, n)]
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def sentence_bleu(hyp, refs, max_n=4):
    """BLEU of `hyp` against the references `refs`: uniform weights over 1..max_n-gram
    precisions, counts clipped by the maximum count in any single reference, +1 smoothing
    (numerator and denominator) for n > 1, brevity penalty with the closest reference length
    (ties: the shorter one)."""
    if not hyp or not refs:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        counts = collections.Counter(ngrams(hyp, n))
        max_ref = collections.Counter()
        for r in refs:
            for g, c in collections.Counter(ngrams(r, n)).items():
                if c > max_ref[g]:
                    max_ref[g] = c
        clipped = sum(min(c, max_ref[g]) for g, c in counts.items())
        total = sum(counts.values())
        if n == 1:
            if clipped == 0:
                return 0.0
            p = clipped / total
        else:
            p = (clipped + 1) / (total + 1)
        log_sum += math.log(p) / max_n
    c = len(hyp)
    r = min((abs(len(x) - c), len(x)) for x in refs)[1]
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(log_sum)


def self_bleu(samples, max_n=4):
    """Mean over samples of BLEU(sample, other samples). None with fewer than 2 samples."""
    if len(samples) < 2:
        return None
    scores = [sentence_bleu(s, samples[:i] + samples[i + 1:], max_n)
              for i, s in enumerate(samples)]
    return sum(scores) / len(scores)


def interp(points, x):
    """Piecewise-linear y(x) through `points` [(x, y)] sorted by x; None outside their range."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ----------------------------------------------------------------------------- prompts

def heldout_prompts(corpus_path, count, min_words=6, max_words=8):
    """The first `max_words` words of `count` evenly spaced lines (with at least `min_words`
    words) of the last HELDOUT_FRACTION of the corpus (starting at the first line boundary after
    the split point)."""
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read()
    start = int(len(text) * (1.0 - HELDOUT_FRACTION))
    nl = text.find("\n", start)
    held = text[nl + 1:] if nl >= 0 else ""
    lines = [ln.split() for ln in held.splitlines()]
    cands = [w for w in lines if len(w) >= min_words]
    if len(cands) < count:
        raise SystemExit(f"only {len(cands)} usable held-out lines, need {count}")
    stride = len(cands) / count
    return [" ".join(cands[int((i + 0.5) * stride)][:max_words]) for i in range(count)]


# ----------------------------------------------------------------------------- zeroskip

class Zeroskip:
    def __init__(self, binary):
        self.binary = binary
        self.calls = 0
        self.seconds = 0.0

    def _json(self, args):
        t0 = time.time()
        p = subprocess.run([self.binary] + args + ["--json", "-t", "1"], capture_output=True,
                           text=True)
        self.seconds += time.time() - t0
        self.calls += 1
        if p.returncode != 0:
            raise RuntimeError(f"zeroskip {' '.join(args[:1])} failed ({p.returncode}): "
                               f"{p.stderr.strip()[-500:]}")
        return json.loads(p.stdout)

    def run(self, model, prompt, n, temp, seed, act, stoch_p):
        args = ["run", "-m", model, "-p", prompt, "-n", str(n), "--temp", repr(temp),
                "--seed", str(seed), "--top-k", "0", "--top-p", "1", "--min-p", "0",
                "--ignore-eos", "--act", act]
        if stoch_p is not None:
            args += ["--stoch-p", repr(stoch_p)]
        return self._json(args)

    def score(self, model, ids, start):
        return self._json(["score", "-m", model, "--tokens", ",".join(map(str, ids)),
                           "--from", str(start)])


# ----------------------------------------------------------------------------- experiment

def evaluate(zs, models, prompts, samples, n, configs=CONFIGS, log=print):
    """Runs every configuration; returns the result rows."""
    score_cache = {}

    def score(key, ids, start):
        k = (key, tuple(ids), start)
        if k not in score_cache:
            score_cache[k] = zs.score(models[key], ids, start)["mean_log_likelihood"]
        return score_cache[k]

    results = []
    prompt_ids = {}
    for name, mkey, temp, act, sp, det in configs:
        t0 = time.time()
        per_prompt = collections.defaultdict(list)
        ll_r, ll_s, zero, within2, lengths = [], [], [], [], []
        for pi, prompt in enumerate(prompts):
            seeds = [1] if det else [1000 * (pi + 1) + s for s in range(samples)]
            outs = []
            for seed in seeds:
                out = zs.run(models[mkey], prompt, n, temp, seed, act, sp)
                pt, toks = out["prompt_tokens"], out["tokens"]
                # both models must tokenize identically for the cross-model scores
                if prompt_ids.setdefault(pi, pt) != pt:
                    raise SystemExit("the two models tokenize a prompt differently")
                lengths.append(len(toks))
                ids = pt + toks
                ll_r.append(score("relu", ids, len(pt)))
                ll_s.append(score("silu", ids, len(pt)))
                if mkey == "relu":
                    zero.append(out["ffn_zero_fraction"])
                within2.append(distinct_n([toks], 2))
                outs.append(toks)
            if det:
                if pi == 0:  # check that the baseline really is deterministic
                    again = zs.run(models[mkey], prompt, n, temp, 12345, act, sp)["tokens"]
                    if again != outs[0]:
                        raise SystemExit(f"{name}: not deterministic across seeds")
                # identical for every seed: the metrics of `samples` copies of the one sample
                outs = outs * samples
            per_prompt["d1"].append(distinct_n(outs, 1))
            per_prompt["d2"].append(distinct_n(outs, 2))
            per_prompt["d3"].append(distinct_n(outs, 3))
            per_prompt["sb"].append(self_bleu(outs))
        row = {
            "name": name, "model": "relu-ft" if mkey == "relu" else "silu",
            "temperature": temp, "act": act, "stoch_p": sp,
            "distinct_1": mean(per_prompt["d1"]), "distinct_2": mean(per_prompt["d2"]),
            "distinct_3": mean(per_prompt["d3"]), "self_bleu4": mean(per_prompt["sb"]),
            "ll_relu": mean(ll_r), "ll_silu": mean(ll_s),
            "ffn_zero_fraction": mean(zero) if zero else None,
            "distinct_2_within": mean(within2),
            "samples_run": len(ll_r), "deterministic": det,
            "mean_generated_tokens": mean(lengths),
        }
        results.append(row)
        log(f"  {name:24s} d2={row['distinct_2']:.3f} sb4={row['self_bleu4']:.3f} "
            f"ll_relu={row['ll_relu']:.3f} ll_silu={row['ll_silu']:.3f} "
            f"({time.time() - t0:.1f}s)")
    return results


# ----------------------------------------------------------------------------- outputs

def f3(x):
    return "–" if x is None else f"{x:.3f}"


def table(results):
    head = ("| config | model | T | act | p | distinct-1 | distinct-2 | distinct-3 | "
            "self-BLEU-4 ↓ | ll ReLU-FT | ll SiLU | FFN zeros |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        lines.append("| " + " | ".join([
            r["name"], r["model"], f"{r['temperature']:g}", r["act"],
            "–" if r["stoch_p"] is None else f"{r['stoch_p']:g}",
            f3(r["distinct_1"]), f3(r["distinct_2"]), f3(r["distinct_3"]), f3(r["self_bleu4"]),
            f3(r["ll_relu"]), f3(r["ll_silu"]),
            "–" if r["ffn_zero_fraction"] is None else f"{100 * r['ffn_zero_fraction']:.1f}%",
        ]) + " |")
    return "\n".join(lines)


def groups(results):
    """[(label, names in sweep order, color, marker)] of the plot / matched comparison."""
    names = [r["name"] for r in results]

    def sweep(prefix):
        return [nm for nm in names if nm == f"{prefix} greedy" or nm.startswith(f"{prefix} T=")]
    return [
        ("SiLU + temperature", sweep("silu"), "tab:blue", "o"),
        ("ReLU-FT + temperature", sweep("relu"), "tab:orange", "s"),
        ("ReLU-FT + stoch (greedy)", ["relu greedy"] + [
            nm for nm in names if nm.startswith("relu stoch") and "T=" not in nm],
         "tab:green", "^"),
        ("ReLU-FT + stoch + temperature",
         [nm for nm in names if nm.startswith("relu stoch") and "T=" in nm], "tab:red", "D"),
    ]


def short(name):
    tail = name.split(" ", 1)[1]
    return tail.replace("stoch ", "").replace(" ", ",").replace("=", "")


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["name"]: r for r in results}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    labeled = set()
    for ax, key, judge in ((axes[0], "ll_silu", "SiLU model"),
                           (axes[1], "ll_relu", "ReLU-FT model (deterministic)")):
        for label, names, color, marker in groups(results):
            names = [nm for nm in names if nm in by]
            xs = [1.0 - by[nm]["self_bleu4"] for nm in names]
            ys = [by[nm][key] for nm in names]
            ax.plot(xs, ys, marker=marker, color=color, label=label,
                    linestyle="-" if len(names) > 1 else "none", markersize=7)
            for nm, x, y in zip(names, xs, ys):
                if (ax, nm) in labeled:
                    continue
                labeled.add((ax, nm))
                ax.annotate(short(nm), (x, y), textcoords="offset points",
                            xytext=(5, 4), fontsize=8, color=color)
        ax.set_xlabel("diversity: 1 − self-BLEU-4 (across samples of a prompt)")
        ax.set_ylabel("quality: mean log-likelihood / token")
        ax.set_title(f"judge: {judge}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("Diversity vs quality: temperature sampling vs stochastic activations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def matched_diversity(results):
    """For every stochastic configuration: the quality (both judges) of the SiLU + temperature
    and ReLU-FT + temperature sweeps interpolated at the same diversity (1 - self-BLEU-4)."""
    by = {r["name"]: r for r in results}
    sweeps = {lab: [by[nm] for nm in names if nm in by] for lab, names, _, _ in groups(results)[:2]}
    rows = []
    for r in results:
        if r["act"] != "stoch":
            continue
        x = 1.0 - r["self_bleu4"]
        row = {"name": r["name"], "div": x, "ll_relu": r["ll_relu"], "ll_silu": r["ll_silu"]}
        for lab, pts in sweeps.items():
            for key in ("ll_relu", "ll_silu"):
                row[(lab, key)] = interp([(1.0 - p["self_bleu4"], p[key]) for p in pts], x)
        rows.append(row)
    return rows


def matched_table(rows):
    def d(a, b):
        return "out of range" if b is None else f"{a - b:+.3f}"
    out = ["| stochastic config | 1 − self-BLEU-4 | Δll vs SiLU+T (SiLU judge) | "
           "Δll vs SiLU+T (ReLU-FT judge) | Δll vs ReLU-FT+T (SiLU judge) | "
           "Δll vs ReLU-FT+T (ReLU-FT judge) |", "|---|---|---|---|---|---|"]
    s, r = "SiLU + temperature", "ReLU-FT + temperature"
    for row in rows:
        out.append(f"| {row['name']} | {row['div']:.3f} | "
                   f"{d(row['ll_silu'], row[(s, 'll_silu')])} | "
                   f"{d(row['ll_relu'], row[(s, 'll_relu')])} | "
                   f"{d(row['ll_silu'], row[(r, 'll_silu')])} | "
                   f"{d(row['ll_relu'], row[(r, 'll_relu')])} |")
    return "\n".join(out)


def write_markdown(path, config, results):
    reading_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reading.md")
    if os.path.exists(reading_path):
        with open(reading_path, encoding="utf-8") as f:
            reading = f.read().strip()
    else:
        reading = "(no tools/diversity/reading.md yet)"
    temps = ", ".join(f"{t:g}" for t in config["temperatures"])
    extra = ", ".join(f"{t:g}" for t in config["temperatures"] if t not in TEMPS) or "none"
    ps = ", ".join(f"{p:g}" for p in config["stoch_p"])
    st = config["stoch_with_temperature"]
    md = f"""# Diversity: stochastic activations vs temperature

The paper "Stochastic activations" (Meta FAIR 2025, arXiv 2509.22358) proposes using
stochastic activations at inference (for a negative FFN gate g: SiLU(g) with probability p,
else 0) as a way to get diverse generations from a ReLU model, instead of (or with) temperature
sampling. This page measures that with zeroskip on the two small checkpoints of this
repository: a ReLU fine-tuned model (ReLU-FT, `--act stoch` flips its FFN back towards SiLU at
random) and the SiLU baseline.

## Command

```
{config['command']}
```

The `.zsk` files are the repository's checkpoints converted with `mkdir -p /tmp/div`,
`build/zeroskip convert models/relu-ft -o /tmp/div/relu-ft.zsk` and
`build/zeroskip convert models/silu -o /tmp/div/silu.zsk`.

Wall time: **{config['wall_seconds']:.0f} s** on 1 thread ({config['zeroskip_calls']} zeroskip
processes, {config['zeroskip_seconds']:.0f} s inside them), generated by
`tools/diversity/diversity.py` (which also includes the reading below from
`tools/diversity/reading.md`).

Setup: {config['prompts']} prompts (the first {config['prompt_words']} words of evenly spaced
lines of the held-out last 10% of the training corpus, chosen at run time; no corpus text is
stored here), {config['samples']} samples per prompt with distinct seeds, {config['n']} generated
tokens each (`--ignore-eos`), plain temperature sampling (`--top-k 0 --top-p 1 --min-p 0`).
Configurations: both models greedy and with temperature T = {temps} (the planned sweep is
0.6, 0.8, 1.0; extra temperatures: {extra}, added so that weakly diverse stochastic
configurations have temperature points of similar diversity to be compared with), ReLU-FT with `--act stoch` at temperature 0 and
p = P(SiLU for a negative gate) = {ps}, and ReLU-FT with `--act stoch` p = {st[0]:g} at T = {st[1]:g}.
The greedy baselines are deterministic (checked on one prompt with a second seed); they are run
once per prompt and their across-sample metrics are those of {config['samples']} identical
copies (distinct-n divided by {config['samples']}, self-BLEU 1).

Metrics (token ids of the generated text only): distinct-n = unique / total n-grams pooled over
the samples of a prompt; self-BLEU-4 = BLEU of each sample against the other samples of its
prompt (uniform 1-4-gram weights, clipped counts, +1 smoothing for n > 1, brevity penalty),
lower is more diverse; quality = mean per-token log-likelihood of the generated tokens given the
prompt under the deterministic ReLU-FT model and under the SiLU model (`zeroskip score`), higher
is better. All are averaged over prompts. FFN zeros = fraction of zero FFN hidden activations
during the ReLU-FT runs (lower with `--act stoch`: the negative gates that pick SiLU are
non-zero).

## Results

{table(results)}

![diversity vs quality](diversity.png)

Raw numbers: [diversity.json](diversity.json).

Quality at matched diversity: each stochastic-activation configuration against the temperature
sweeps (greedy, T = {temps}) of the SiLU and ReLU-FT models, linearly interpolated at
the same 1 − self-BLEU-4 (Δll > 0: the stochastic configuration scores better; "out of range":
more diverse than the sweep reaches).

{matched_table(matched_diversity(results))}

## Reading

{reading}
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(md)



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zeroskip")
    ap.add_argument("--relu", help="ReLU-FT model (.zsk)")
    ap.add_argument("--silu", help="SiLU model (.zsk)")
    ap.add_argument("--corpus")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--prompt-words", type=int, default=8)
    ap.add_argument("--extra-temps", type=lambda v: [float(x) for x in v.split(",") if x],
                    default=list(DEFAULT_EXTRA_TEMPS),
                    help="temperatures added to both sweeps (comma-separated; '' for none)")
    ap.add_argument("--render-only", action="store_true",
                    help="no runs: re-render DIVERSITY.md and diversity.png from the "
                         "diversity.json in --out-dir (e.g. after editing reading.md)")
    args = ap.parse_args(argv)
    json_path = os.path.join(args.out_dir, "diversity.json")
    if args.render_only:
        with open(json_path) as f:
            data = json.load(f)
        render(args.out_dir, data["config"], data["results"])
        return
    missing = [o for o in ("zeroskip", "relu", "silu", "corpus") if getattr(args, o) is None]
    if missing:
        ap.error("required: " + ", ".join("--" + o for o in missing))

    t0 = time.time()
    prompts = heldout_prompts(args.corpus, args.prompts, max_words=args.prompt_words)
    # run a private copy: the binary in the build tree may be rebuilt while this runs
    tmpdir = tempfile.mkdtemp(prefix="diversity_")
    binary = os.path.join(tmpdir, "zeroskip")
    shutil.copy2(args.zeroskip, binary)
    with open(binary, "rb") as f:
        binary_sha = hashlib.sha256(f.read()).hexdigest()
    zs = Zeroskip(binary)
    models = {"relu": args.relu, "silu": args.silu}
    configs = build_configs(args.extra_temps)
    print(f"{len(configs)} configurations x {args.prompts} prompts x {args.samples} samples, "
          f"n={args.n}", file=sys.stderr)
    try:
        results = evaluate(zs, models, prompts, args.samples, args.n, configs,
                           log=lambda s: print(s, file=sys.stderr))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    wall = time.time() - t0

    cmd = ("/usr/bin/python3 tools/diversity/diversity.py --zeroskip "
           f"{args.zeroskip} --relu {args.relu} --silu {args.silu} --corpus {args.corpus} "
           f"--out-dir {args.out_dir} --prompts {args.prompts} --samples {args.samples} "
           f"--n {args.n}")
    if sorted(args.extra_temps) != sorted(DEFAULT_EXTRA_TEMPS):
        cmd += " --extra-temps " + ",".join(f"{t:g}" for t in args.extra_temps)
    with open(args.corpus, "rb") as f:
        corpus_sha = hashlib.sha256(f.read()).hexdigest()
    config = {
        "command": cmd,
        "prompts": args.prompts, "samples": args.samples, "n": args.n,
        "prompt_words": args.prompt_words, "prompt_source": "held-out last 10% of the corpus",
        "temperatures": sorted(set(TEMPS) | set(args.extra_temps)),
        "stoch_p": list(STOCH_PS), "stoch_with_temperature": list(STOCH_T),
        "corpus": os.path.basename(args.corpus), "corpus_sha256": corpus_sha,
        "relu_model": os.path.basename(args.relu), "silu_model": os.path.basename(args.silu),
        "sampling": {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "ignore_eos": True},
        "zeroskip_sha256": binary_sha, "threads": 1,
        "seeds": "1000*(prompt+1)+sample (greedy: 1)",
        "wall_seconds": round(wall, 1), "zeroskip_calls": zs.calls,
        "zeroskip_seconds": round(zs.seconds, 1),
    }
    os.makedirs(args.out_dir, exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"config": config, "results": results}, f, indent=1)
        f.write("\n")
    render(args.out_dir, config, results)
    print(f"wall {wall:.1f}s, {zs.calls} zeroskip calls", file=sys.stderr)


def render(out_dir, config, results):
    plot(results, os.path.join(out_dir, "diversity.png"))
    write_markdown(os.path.join(out_dir, "DIVERSITY.md"), config, results)

if __name__ == "__main__":
    main()
