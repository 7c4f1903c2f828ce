#!/usr/bin/python3
"""Unit tests of benchmarks/mem_limit.py's parts that need neither root nor a model."""
import argparse
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mem_limit  # noqa: E402


class ParseBytes(unittest.TestCase):
    def test_sizes(self):
        self.assertEqual(mem_limit.parse_bytes("6G"), 6 << 30)
        self.assertEqual(mem_limit.parse_bytes("512m"), 512 << 20)
        self.assertEqual(mem_limit.parse_bytes("1000"), 1000)

    def test_refuses_what_is_not_a_size(self):
        for bad in ("6GB", "", "-1G", "1.5G", "G"):
            with self.assertRaises(argparse.ArgumentTypeError, msg=bad):
                mem_limit.parse_bytes(bad)


class DiskStat(unittest.TestCase):
    def test_the_files_device_counts_sectors_read(self):
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(__file__))) as f:
            stat = mem_limit.device_stat(f.name)
            if not os.path.exists(stat):  # overlay or tmpfs: no block device behind the file
                self.skipTest(f"{stat} does not exist here")
            self.assertGreaterEqual(mem_limit.sectors_read(stat), 0)

    def test_sectors_read_is_the_third_field(self):
        # /sys/dev/block/*/stat: reads, reads merged, sectors read, ms reading, writes, ...
        with tempfile.NamedTemporaryFile("w", suffix="stat") as f:
            f.write("   12345      678   9876543    4321        5        6        7        8\n")
            f.flush()
            self.assertEqual(mem_limit.sectors_read(f.name), 9876543)


class Table(unittest.TestCase):
    def test_each_value_in_its_column(self):
        run = lambda tok_s, rss, disk=None, peak=None, tokens=None: {  # noqa: E731
            "decode_tok_s": tok_s, "max_rss_mb": rss, "disk_bytes_per_pass": disk,
            "cgroup_peak_bytes": peak, **({"tokens": tokens} if tokens else {})}
        doc = {"limit_bytes": 6 << 30, "results": [
            {"engine": "llama.cpp", "in_ram": run(2.0, 13500), "limited": run(0.125, 6000, 12.5e9,
                                                                                6.4e9)},
            {"engine": "zeroskip sparse", "in_ram": run(4.0, 9000, tokens=[3, 4]),
             "limited": run(1.0, 5000, 3e9, None, tokens=[3, 4])},
            {"engine": "zeroskip dense", "in_ram": run(1.0, 9000, tokens=[3, 4]),
             "limited": run(0.1, 5000, 3e9, None, tokens=[3, 5])}],
            "disk": [{"job": "sequential 1 MiB, O_DIRECT, QD 8", "MB_s": 1234.4, "iops": 1177.2}]}
        lines = mem_limit.table(doc).splitlines()
        self.assertEqual(lines[0].split(" | ")[2], "under 6 GiB tok/s")
        self.assertEqual(lines[2],
                         "| llama.cpp | 2.00 | 0.125 | 6.2% | 12.50 | 6.40 | 13.50 | – |")
        self.assertEqual(lines[3],
                         "| zeroskip sparse | 4.00 | 1.000 | 25.0% | 3.00 | – | 9.00 | yes |")
        self.assertEqual(lines[4],
                         "| zeroskip dense | 1.00 | 0.100 | 10.0% | 3.00 | – | 9.00 | NO |")
        self.assertEqual(lines[-1], "| sequential 1 MiB, O_DIRECT, QD 8 | 1234 | 1177 |")


if __name__ == "__main__":
    unittest.main()
