"""peer_llamacpp.py's parsing without llama.cpp: a child's peak RSS from wait4, fake llama-cli and
zeroskip binaries (their output lines as the real ones print them), and the memory table of
results merged from per-type runs."""
import argparse
import contextlib
import io
import json
import os
import stat
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_llamacpp  # noqa: E402

# Touches 200 MiB (every page), prints on both streams, exits 3.
ALLOCATE = ("import sys; b = b'\\x01' * (200 << 20); print('out'); print('err', file=sys.stderr); "
            "sys.exit(3)")


def script(path, body):
    with open(path, "w") as f:
        f.write("#!" + sys.executable + "\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class RunTest(unittest.TestCase):
    def test_peak_rss_of_the_child(self):
        status, out, err, rss_mb = peer_llamacpp.run_measured([sys.executable, "-c", ALLOCATE])
        self.assertEqual((status, out, err), (3, "out\n", "err\n"))
        # 200 MiB touched (about 210 MB): the child's own peak, in MB (ru_maxrss is KiB).
        self.assertGreater(rss_mb, 200)
        self.assertLess(rss_mb, 400)
        _, _, _, small = peer_llamacpp.run_measured([sys.executable, "-c", "pass"])
        self.assertLess(small, 100)  # not the earlier child's peak (RUSAGE_CHILDREN's maximum)

    def test_fake_engines(self):
        with tempfile.TemporaryDirectory() as d:
            script(os.path.join(d, "llama-cli"), "import sys\nb = b'x' * (120 << 20)\n"
                   "print('llama_perf_context_print: prompt eval time =     100.00 ms /    25 "
                   "tokens (    4.00 ms per token,   250.00 tokens per second)', file=sys.stderr)\n"
                   "print('llama_perf_context_print:        eval time =     950.00 ms /    95 "
                   "runs   (   10.00 ms per token,   100.00 tokens per second)',\n"
                   "      file=sys.stderr)\n")
            zeroskip = script(os.path.join(d, "zeroskip"), "import json\n"
                              "print(json.dumps({'prompt_tokens': [1] * 25, 'tokens': [5] * 96, "
                              "'prefill_tok_s': 80.0, 'decode_tok_s': 40.0, "
                              "'ffn_zero_fraction': 0.9, 'ffn_path': 'sparse', 'isa': 'avx2'}))\n")
            args = argparse.Namespace(llama_bin=d, zeroskip=zeroskip, threads=2, n_decode=96,
                                      prefill_lengths=[64], long_prompt=0)
            got = peer_llamacpp.run_llama(args, "m.gguf", "p", 96)
            rss = got.pop("max_rss_mb")
            self.assertEqual(got, {"prompt_tokens": 25, "prefill_tok_s": 250.0,
                                   "decode_steps": 95, "decode_tok_s": 100.0})
            self.assertGreater(rss, 120)
            got = peer_llamacpp.run_zeroskip(args, "m.zsk", "sparse", "p", 96)
            self.assertGreater(got.pop("max_rss_mb"), 1)
            self.assertEqual(got, {"prompt_tokens": 25, "prefill_tok_s": 80.0,
                                   "decode_steps": 95, "decode_tok_s": 40.0,
                                   "ffn_zero_fraction": 0.9, "ffn_path": "sparse", "isa": "avx2",
                                   "tokens": [5] * 96})


def result(engine, wtype, decode, rss, long_rss=None):
    run = {"decode_tok_s": decode, "prefill_tok_s": 10.0, "max_rss_mb": rss,
           "prefill": {"64": {"ttft_s": 1.0}}}
    r = {"engine": engine, "weight_type": wtype, "runs": [run], "decode_tok_s": decode,
         "prefill_tok_s": 10.0, "ttft_s": {"64": 1.0}, "max_rss_mb": rss}
    if long_rss:
        run.update(long_decode_tok_s=decode / 2, long_max_rss_mb=long_rss)
        r.update(long_decode_tok_s=decode / 2, long_prompt_tokens=2048, long_max_rss_mb=long_rss)
    return r


class MergeTest(unittest.TestCase):
    def test_parts_merge_into_one_table(self):
        bf16 = {"date_utc": "a", "prefill_lengths": [64], "long_prompt": 2048,
                "prompt_lengths_match": True, "files_bytes": {"llama-bf16.gguf": 13_500_000_000},
                "results": [result("llama.cpp", "bf16", 4.0, 14000.4, 15000.6),
                            result("zeroskip sparse", "bf16", 8.0, 13800.0, 14900.0)]}
        q4k = {"date_utc": "b", "prefill_lengths": [64], "long_prompt": 2048,
               "prompt_lengths_match": False, "files_bytes": {"llama-Q4_K_M.gguf": 4_100_000_000},
               "not_available": {"q4k": "--dtype: q4k not in {keep,f32,f16,bf16,q8,q4}"},
               "results": [result("llama.cpp", "Q4_K_M", 12.0, 4300.0),
                           {"engine": "zeroskip sparse", "weight_type": "q4k",
                            "available": False}]}
        with tempfile.TemporaryDirectory() as d:
            paths = [os.path.join(d, f"part-{i}.json") for i in range(2)]
            for p, doc in zip(paths, (bf16, q4k)):
                json.dump(doc, open(p, "w"))
            out = os.path.join(d, "out.json")
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the tables too
                peer_llamacpp.cmd_merge(argparse.Namespace(out=out, parts=paths))
            doc = json.load(open(out))
        self.assertEqual([(r["engine"], r["weight_type"]) for r in doc["results"]],
                         [("llama.cpp", "bf16"), ("zeroskip sparse", "bf16"),
                          ("llama.cpp", "Q4_K_M"), ("zeroskip sparse", "q4k")])
        self.assertEqual(sorted(doc["files_bytes"]), ["llama-Q4_K_M.gguf", "llama-bf16.gguf"])
        self.assertEqual(list(doc["not_available"]), ["q4k"])
        self.assertFalse(doc["prompt_lengths_match"])
        self.assertEqual(doc["date_utc"], "b")
        text = peer_llamacpp.table(doc)
        self.assertIn("| llama.cpp | Q4_K_M | **12.0** | **10.0** | 1.00x | 1.00x |", text)
        self.assertIn("| zeroskip sparse | q4k | not available | | | |", text)
        memory = text[text.index("| engine | weights | file MB"):]
        self.assertEqual(memory.splitlines(), [
            "| engine | weights | file MB | peak RSS MB | peak RSS MB after ~2048 tokens |",
            "|---|---|---|---|---|",
            "| llama.cpp | bf16 | 13500 | 14000 | 15001 |",
            "| zeroskip sparse | bf16 | – | 13800 | 14900 |",
            "| llama.cpp | Q4_K_M | 4100 | 4300 | – |"])


if __name__ == "__main__":
    unittest.main()
