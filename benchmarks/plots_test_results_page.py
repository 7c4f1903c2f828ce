"""results_page.py's plots are PNGs whose bytes do not change from one drawing to the next (a
test of its own: it needs matplotlib, from `.ci/install-deps --python-ml`, and says SKIPPED
without it, while the table tests in test_results_page.py always run)."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_page as rp  # noqa: E402
from test_results_page import DECODE, serve  # noqa: E402

try:
    import matplotlib
except ImportError:
    matplotlib = None


@unittest.skipIf(matplotlib is None,
                 "missing module: matplotlib (python3-matplotlib, .ci/install-deps --python-ml)")
class DrawTest(unittest.TestCase):
    def test_the_same_data_gives_the_same_small_png(self):
        with tempfile.TemporaryDirectory() as d:
            bench = os.path.join(d, "bench")
            os.makedirs(bench)
            for name, doc in [("peer_llamacpp_ttft.json", DECODE),
                              ("peer_llamacpp_long.json", DECODE),
                              ("serve_f32.json", serve([(1, 20.0, 250, 251), (2, 30.0, 300, 400)]))]:
                with open(os.path.join(bench, name), "w") as f:
                    json.dump(doc, f)
            shutil.copy(os.path.join(rp.ROOT, "docs", "bench", "transcribed.json"), bench)
            drawn = rp.plots(bench, list(rp.BLOCKS))
            self.assertEqual(sorted(drawn), ["decode", "kld", "kld_synth", "long", "memory",
                                             "quality", "server"])
            images = []
            for run in ("a", "b"):
                os.makedirs(os.path.join(d, run))
                for name, plot in drawn.items():
                    rp.draw(plot, os.path.join(d, run, name + ".png"))
                images.append({n: open(os.path.join(d, run, n + ".png"), "rb").read()
                               for n in drawn})
        self.assertEqual(images[0], images[1])
        for name, png in images[0].items():
            self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"), name)
            self.assertLess(len(png), 60_000, name)
            self.assertNotIn(b"tIME", png, name)
            self.assertNotIn(b"Software", png, name)


if __name__ == "__main__":
    unittest.main()
