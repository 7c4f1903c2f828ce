"""results_page.py's tables on small fake JSON (no matplotlib needed), the page's markers and its
"not measured yet" blocks, the sources of the real page (commands copied from BENCHMARKS.md,
transcribed numbers found there, docs/RESULTS.md up to date). The plots: plots_test_results_page.py."""
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_page as rp  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine(name, wtype, decode, ttft=None, long=None, rss=None):
    r = {"engine": name, "weight_type": wtype, "decode_tok_s": decode, "prefill_tok_s": 1.0,
         "ttft_s": ttft or {}}
    if long is not None:
        r.update(long_decode_tok_s=long, long_prompt_tokens=2048)
    if rss is not None:
        r["max_rss_mb"] = rss
    return r


def peer(results, **extra):
    doc = {"benchmark": "peer_llamacpp", "date_utc": "2026-01-02 03:04", "threads": 2,
           "repeats": 3, "n_decode": 96, "decode_prompt_tokens": 25, "prefill_lengths": [16, 64],
           "llama_cpp_commit": "c392e5094deaf2d1a7c18683214f007fad3fe42b",
           "zeroskip_commit": "9f4a804761738292b506f99534bd3de3353e8007",
           "checkpoint": "peer-0.74b", "cpu": "AMD EPYC", "cpu_count": 2, "results": results}
    doc.update(extra)
    return doc


# f32: llama.cpp 10, sparse 25, dense 9; q8: llama.cpp 40, ours not converted.
DECODE = peer([engine("llama.cpp", "f32", 10.0, {"16": 0.2, "64": 0.6}, long=8.0, rss=3000.4),
               engine("zeroskip sparse", "f32", 25.0, {"16": 0.1, "64": 0.4}, long=20.0),
               engine("zeroskip dense", "f32", 9.0, {"16": 0.3, "64": 0.9}, long=7.5),
               engine("llama.cpp", "q8_0", 40.0, {"16": 0.1, "64": 0.3}),
               {"engine": "zeroskip sparse", "weight_type": "q8", "available": False},
               {"engine": "zeroskip dense", "weight_type": "q8", "available": False}],
              not_available={"q8": "--dtype: q8 not in {f32}"}, long_prompt=2048,
              files_bytes={"llama-f32.gguf": 2_953_182_016, "zeroskip-f32.zsk": 2_953_095_616})
OTHER = peer([engine("llama.cpp", "f32", 10.0), engine("zeroskip sparse", "f32", 15.0)])


def serve(rows):
    return {"tokens": 48, "threads": 2, "rounds": 3, "rows": [
        {"streams": s, "aggregate_tok_s": t, "vs_one_stream": t / rows[0][1], "ttft_ms_p50": p50,
         "ttft_ms_p99": p99} for s, t, p50, p99 in rows]}


def ffn(dtype, threads, speedups):
    return {"isa": "avx512", "results": [{"dtype": dtype, "threads": threads, "sparsity": z,
                                          "speedup": x} for z, x in speedups]}


class TableTest(unittest.TestCase):
    def test_decode_against_llama_cpp_per_type(self):
        lines, plot = rp.decode_table(DECODE, [("other.json", OTHER)])
        self.assertEqual(lines[2:], [
            "| f32 | 10.0 | 25.0 | **2.50x** | 9.0 | 0.90x | 1.50x (other.json) |",
            "| bf16 | not measured in this run | | | | | |",
            "| q8 (q8_0) | 40.0 | not available (`--dtype: q8 not in {f32}`) | – | not available "
            "(`--dtype: q8 not in {f32}`) | – | – |",
            "| q4 (q4_0) | not measured in this run | | | | | |",
            "| q4k (Q4_K_M) | not measured in this run | | | | | |"])
        self.assertEqual(plot["groups"], ["f32", "q8 (q8_0)"])
        self.assertEqual(plot["series"], [("llama.cpp", [10.0, 40.0]),
                                          ("zeroskip sparse", [25.0, None]),
                                          ("zeroskip dense", [9.0, None])])

    def test_time_to_first_token_is_their_time_over_ours(self):
        lines, plot = rp.ttft_table(DECODE)  # 256 asked, but the run has 16 and 64 only
        self.assertEqual(lines[0], "| weights | 16 tokens: llama.cpp s / zeroskip sparse s "
                         "(**ratio**) | 64 tokens: llama.cpp s / zeroskip sparse s (**ratio**) |")
        self.assertEqual(lines[2], "| f32 | 0.200 / 0.100 (**2.00x**) | 0.600 / 0.400 (**1.50x**) |")
        self.assertEqual(lines[4], "| q8 (q8_0) | not available (`--dtype: q8 not in {f32}`) | |")
        self.assertEqual([label for label, _ in plot["series"]],
                         ["16-token prompt", "64-token prompt"])
        for (_, got), want in zip(plot["series"], [2.0, 1.5]):
            self.assertAlmostEqual(got[0], want)
        self.assertEqual(plot["line"], 1.0)

    def test_long_context(self):
        lines, _ = rp.long_table(DECODE)
        self.assertIn("after 2048 tokens", lines[0])
        self.assertEqual(lines[2], "| f32 | 8.0 | 20.0 | **2.50x** | 0.80 | 7.5 |")

    def test_memory_prefers_the_runs_own_rss(self):
        transcribed = {"peak_rss": {"rows": [{"weights": "f32", "isa_avx512bf16": "1–2"}]}}
        lines, plot = rp.memory_table(DECODE, transcribed)
        self.assertEqual(lines[2], "| f32 | 2953 | 2953 | 3000 | not recorded; 1–2 MiB in another "
                         "run (BENCHMARKS.md, \"Native bf16\") |")
        self.assertEqual(len(lines), 3)  # no file of another type: no row
        self.assertEqual(plot["series"], [("llama.cpp file", [2953.182016]),
                                          ("zeroskip file", [2953.095616])])

    def test_server_streams(self):
        lines, plot = rp.server_table({"f32": serve([(1, 20.0, 250.4, 251.0), (4, 40.0, 700, 1300)]),
                                       "bf16": None,
                                       "q8": serve([(1, 60.0, 160, 170)])})
        self.assertEqual(lines[0], "| streams | f32: aggregate tok/s (vs 1 stream) | f32: TTFT p50 "
                         "/ p99 ms | q8: aggregate tok/s (vs 1 stream) | q8: TTFT p50 / p99 ms |")
        self.assertEqual(lines[2:], ["| 1 | 20.0 (1.00x) | 250 / 251 | 60.0 (1.00x) | 160 / 170 |",
                                     "| 4 | 40.0 (2.00x) | 700 / 1300 | – | – |"])
        self.assertEqual(plot["series"], [("f32", [20.0, 40.0]), ("q8", [60.0, None])])

    def test_ffn_step_speedups(self):
        lines, _ = rp.ffn_table({("f32", 2): ffn("f32", 2, [(0.0, 1.034), (0.9, 2.705)]),
                                 ("f32", 1): None, ("bf16", 1): ffn("bf16", 1, [(0.9, 2.4)])})
        self.assertEqual(lines, ["| target zeros | f32, 2 threads | bf16, 1 thread |",
                                 "|---|---|---|", "| 0.00 | **1.03x** | – |",
                                 "| 0.90 | **2.71x** | **2.40x** |"])

    def test_quality_keeps_the_printed_strings(self):
        t = {"perplexity": {"rows": [
            {"weights": "f32", "file_bytes": "1,000", "full": "52.79382", "full_delta": "—"},
            {"weights": "bf16", "file_bytes": "500", "full": "52.79382", "short": "30.65537",
             "short_delta": "—"},
            {"weights": "q4", "file_bytes": "300", "full": "52.89680", "full_delta": "+0.195%"}]}}
        lines, plot = rp.quality_table(t)
        self.assertEqual(lines[2:], ["| f32 | 1,000 | 52.79382 | — | – | – |",
                                     "| bf16 | 500 | 52.79382 | same as f32 | 30.65537 | — |",
                                     "| q4 | 300 | 52.89680 | +0.195% | – | – |"])
        self.assertEqual(plot["series"][0], ("41,735 tokens, vs f32", [0.0, 0.0, 0.195]))


    def test_kl_rows_keep_each_value_in_its_column(self):
        row = lambda engine, weights, n, **extra: dict(  # noqa: E731
            engine=engine, weights=weights, file_bytes=f"{n},000", perplexity=f"30.{n}",
            mean_kld=f"0.00{n}", kld_se=f"{n}e-05", kld_99=f"0.0{n}", same_top=f"9{n}.00",
            same_top_se=f"0.{n}", **extra)
        section = {"not_measured": ["llama.cpp Q4_K_M"], "rows": [
            row("zeroskip", "f32", 1), row("zeroskip", "q4k", 2, stores="q6k: embeddings"),
            row("zeroskip", "q4", 3), row("llama.cpp", "Q4_0", 4, ours="q4")]}
        lines, plot = rp.kl_table(section, "title")
        self.assertEqual(lines, [
            "| weights | file bytes | perplexity | mean KLD ± SE | 99% KLD | same top % ± SE |",
            "|---|---:|---:|---:|---:|---:|",
            "| f32 | 1,000 | 30.1 | 0.001 ± 1e-05 | 0.01 | 91.00 ± 0.1 |",
            "| q4k (q6k: embeddings) | 2,000 | 30.2 | 0.002 ± 2e-05 | 0.02 | 92.00 ± 0.2 |",
            "| q4 | 3,000 | 30.3 | 0.003 ± 3e-05 | 0.03 | 93.00 ± 0.3 |",
            "| llama.cpp Q4_0 | 4,000 | 30.4 | 0.004 ± 4e-05 | 0.04 | 94.00 ± 0.4 |",
            "| llama.cpp Q4_K_M | not measured on this checkpoint | | | | |"])
        # The f32 base is not a bar; llama.cpp's file stands beside the type it pairs with.
        self.assertEqual(plot["groups"], ["q4k", "q4 / Q4_0"])
        self.assertEqual(plot["series"], [("zeroskip", [0.002, 0.003]),
                                          ("llama.cpp's file, run by zeroskip", [None, 0.004])])


class PageTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.bench = os.path.join(self.dir.name, "bench")
        self.plots = os.path.join(self.dir.name, "results")
        os.makedirs(self.bench)
        self.page = os.path.join(self.dir.name, "RESULTS.md")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, doc):
        with open(os.path.join(self.bench, name), "w") as f:
            json.dump(doc, f)

    def run_main(self, *argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            status = rp.main([*argv, "--bench", self.bench, "--page", self.page,
                              "--plots", self.plots])
        return status, out.getvalue()

    def test_blocks_are_rewritten_and_the_prose_kept(self):
        with open(self.page, "w") as f:
            f.write("intro\n<!-- results: decode -->\nstale\n<!-- end results: decode -->\n"
                    "middle\n<!-- results: 7b -->\n<!-- end results: 7b -->\nend\n")
        self.assertEqual(self.run_main("check")[0], 1)
        self.write("peer_llamacpp_ttft.json", DECODE)
        self.assertEqual(self.run_main("tables")[0], 0)
        self.assertEqual(self.run_main("check")[0], 0)
        text = open(self.page).read()
        self.assertTrue(text.startswith("intro\n<!-- results: decode -->\n`docs/bench/"
                                        "peer_llamacpp_ttft.json`: 2026-01-02 03:04 UTC, zeroskip "
                                        "9f4a804, llama.cpp c392e50,"))
        self.assertIn("| f32 | 10.0 | 25.0 | **2.50x** |", text)
        self.assertNotIn("stale", text)
        self.assertIn("\n<!-- end results: decode -->\nmiddle\n", text)
        self.assertTrue(text.endswith("<!-- end results: 7b -->\nend\n"))
        # No 7B run: the block says so and gives BENCHMARKS.md's command.
        self.assertIn("**Not measured yet** (no `docs/bench/peer_llamacpp_7b.json`)", text)
        self.assertIn(rp.CMD_7B, text)
        # The plot is linked once drawn, not before.
        self.assertIn("(not drawn yet", text)
        os.makedirs(self.plots)
        open(os.path.join(self.plots, "decode.png"), "wb").close()
        self.assertEqual(self.run_main("check")[0], 1)
        self.run_main("tables")
        self.assertIn("![Decode after a 25-token prompt](results/decode.png)",
                      open(self.page).read())

    def test_a_7b_run_fills_the_pending_block(self):
        self.write("peer_llamacpp_7b.json", DECODE)
        block = rp.render_block("7b", self.bench, self.plots, self.dir.name)
        self.assertNotIn("Not measured yet", block)
        self.assertIn("| f32 | 10.0 | 25.0 | **2.50x** |", block)  # decode
        self.assertIn("| f32 | 0.200 / 0.100 (**2.00x**) |", block)  # time to first token
        self.assertIn("| f32 | 8.0 | 20.0 | **2.50x** | 0.80 | 7.5 |", block)  # long context
        self.assertIn("| f32 | 2953 | 2953 | 3000 | not recorded |", block)  # memory
        self.assertNotIn("7B side by side", rp.summary(self.bench))

    def test_an_unknown_block_is_an_error(self):
        with open(self.page, "w") as f:
            f.write("<!-- results: nonsense -->\n<!-- end results: nonsense -->\n")
        with self.assertRaisesRegex(ValueError, "unknown block.*nonsense"):
            self.run_main("tables")

    def test_every_block_without_its_json_is_pending(self):
        for name in rp.BLOCKS:
            block = rp.render_block(name, self.bench, self.plots, self.dir.name)
            self.assertTrue(block.startswith("**Not measured yet**"), name)
            self.assertIn("```sh\n", block)


class SourcesTest(unittest.TestCase):
    """The real page: what it copies must be where it says it comes from."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), encoding="utf-8") as f:
            cls.notebook = f.read()
        with open(os.path.join(ROOT, "docs", "bench", "transcribed.json"), encoding="utf-8") as f:
            cls.transcribed = json.load(f)

    def test_commands_are_copied_from_the_notebook(self):
        commands = {k: v for k, v in vars(rp).items() if k.startswith(("CMD_", "SYNTH_"))}
        self.assertGreater(len(commands), 8)
        for name, command in commands.items():
            self.assertIn(command, self.notebook, name)

    def test_transcribed_values_are_printed_in_the_notebook(self):
        sections = [self.transcribed[k]["rows"] for k in ("perplexity", "kl_divergence",
                                                         "kl_divergence_synth", "peak_rss")]
        values = [v for rows in sections for row in rows for k, v in row.items()
                  if k not in ("weights", "model", "ours", "engine", "stores", "computed",
                               *row.get("computed", [])) and v != "—"]
        self.assertGreater(len(values), 30)
        for v in values:
            self.assertRegex(self.notebook, r"(?<![\d.,])" + re.escape(v) + r"(?![\d])")

    def test_kl_rows_are_rows_of_the_notebooks_tables(self):
        """Each KL row's values stand in one row of BENCHMARKS' table of that model, each in its
        column (a value copied from a neighbouring row or column fails)."""
        header = ("| weights | .zsk bytes | perplexity | mean KLD | median | 99% | 99.9% | max | "
                  "same top % | PPL ratio | mean Δp % |")
        for key, start, end in (("kl_divergence", "### The demo model", "### The synthetic"),
                                ("kl_divergence_synth", "### The synthetic 0.74 B checkpoint",
                                 "## Quantized dot products")):
            part = self.notebook[self.notebook.index(start):self.notebook.index(end)]
            self.assertEqual(part.count(header), 1, key)
            rows = [[c.strip().replace("**", "") for c in line.split("|")[1:-1]]
                    for line in part.splitlines() if line.startswith("| ")]
            for r in self.transcribed[key]["rows"]:
                want = [r["file_bytes"], r["perplexity"], f"{r['mean_kld']} ± {r['kld_se']}",
                        r["kld_99"], f"{r['same_top']} ± {r['same_top_se']}"]
                got = [[c[1], c[2], c[3], c[5], c[8]] for c in rows if c[1] == r["file_bytes"]]
                self.assertEqual(got, [want], (key, r["weights"]))

    def test_the_page_shows_each_kl_value_in_its_column(self):
        """The rendered tables, read back by their header, against the JSON."""
        for key in ("kl_divergence", "kl_divergence_synth"):
            lines, _ = rp.kl_table(self.transcribed[key], "")
            names = [c.strip() for c in lines[0].split("|")[1:-1]]
            shown = {c[0]: c for c in ([x.strip() for x in line.split("|")[1:-1]]
                                       for line in lines[2:])}
            for r in self.transcribed[key]["rows"]:
                cells = dict(zip(names, shown[rp.kl_label(r)]))
                self.assertEqual(cells, {
                    "weights": rp.kl_label(r), "file bytes": r["file_bytes"],
                    "perplexity": r["perplexity"],
                    "mean KLD ± SE": f"{r['mean_kld']} ± {r['kld_se']}",
                    "99% KLD": r["kld_99"],
                    "same top % ± SE": f"{r['same_top']} ± {r['same_top_se']}"}, r["weights"])
            self.assertEqual(len(lines) - 2, len(self.transcribed[key]["rows"]) +
                             len(self.transcribed[key].get("not_measured", [])))

    def test_q4k_against_q4km_in_the_notebooks_words(self):
        kld, size, ours, theirs = rp.q4k_against_q4km(self.transcribed["kl_divergence"])
        self.assertEqual((ours["file_bytes"], theirs["file_bytes"]), ("2,671,232", "2,984,320"))
        self.assertIn(f"q4k now has {kld} KL divergence than Q4_K_M", self.notebook)
        self.assertIn(f"in a file {size} (2,671,232 bytes against 2,984,320)", self.notebook)

    def test_transcribed_deltas_match_their_perplexities(self):
        rows = {r["weights"]: r for r in self.transcribed["perplexity"]["rows"]}
        for key, base in (("full", "f32"), ("short", "bf16")):
            for r in rows.values():
                if r.get(key + "_delta", "—") == "—":
                    continue
                printed = r[key + "_delta"]
                digits = len(printed.split(".")[1].rstrip("%"))
                change = 100 * (float(r[key]) / float(rows[base][key]) - 1)
                self.assertEqual(f"{change:+.{digits}f}%", printed, (r["weights"], key))

    def test_only_deltas_are_computed(self):
        for r in self.transcribed["perplexity"]["rows"]:
            for key in r.get("computed", []):
                self.assertTrue(key.endswith("_delta"), (r["weights"], key))

    def test_the_perplexity_tables_q4k_is_the_kl_tables(self):
        """The held-out text's perplexities of q4k and its base are the KL run's (a recipe change
        that updates one table and not the other fails)."""
        short = {r["weights"]: r for r in self.transcribed["perplexity"]["rows"] if "short" in r}
        for weights in ("bf16", "q4k"):
            kl = rp.kl_row(self.transcribed["kl_divergence"], "zeroskip", weights)
            self.assertEqual((short[weights]["short"], short[weights]["file_bytes"]),
                             (kl["perplexity"], kl["file_bytes"]), weights)

    def test_the_readme_quotes_the_page(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        results = readme[readme.index("## Results"):readme.index("## Reporting a problem")]
        with open(os.path.join(ROOT, "docs", "RESULTS.md"), encoding="utf-8") as f:
            page = f.read()
        numbers = re.findall(r"[+]?\d+(?:\.\d+)?(?:x|%)", results)
        self.assertGreater(len(numbers), 8)
        for n in numbers:
            self.assertIn(n, page)

    def test_the_page_is_up_to_date(self):
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(rp.main(["check"]), 0,
                             "docs/RESULTS.md: run benchmarks/results_page.py tables")


if __name__ == "__main__":
    unittest.main()
