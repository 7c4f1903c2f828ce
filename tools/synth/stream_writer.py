"""Streaming safetensors writer: the header is computed up front from the (name, shape) list,
then tensor data is appended in row chunks, so memory stays bounded by one chunk no matter how
large the checkpoint is (a Llama-2-7B float32 checkpoint is 27 GB).

Byte layout and conventions are exactly tools/pylib/hfio.py's write_safetensors /
write_hf_dir (compact JSON header in tensor order, "__metadata__": {"format": "pt"}, header
padded with spaces to a multiple of 8, model-0000k-of-0000N.safetensors shards plus
model.safetensors.index.json); encoding goes through hfio.encode. Difference from hfio: shards
are split into contiguous groups of roughly equal bytes (hfio splits by tensor count), which
matters when one file would otherwise hold the 500 MB embedding and little else.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}
CHUNK_ELEMS = 1 << 22  # elements encoded per write (16 MB of float32)


def shard_groups(sizes, shards):
    """Contiguous groups of indices with roughly equal byte totals; every group non-empty."""
    n = len(sizes)
    shards = max(1, min(shards, n))
    total = float(sum(sizes))
    groups, cur, acc = [], [], 0
    for i, s in enumerate(sizes):
        cur.append(i)
        acc += s
        left_items, left_groups = n - i - 1, shards - len(groups) - 1
        # Close the group when it reached its share of bytes, or when the remaining tensors are
        # just enough to give every remaining group one.
        if left_groups > 0 and (acc >= total * (len(groups) + 1) / shards
                                or left_items == left_groups):
            groups.append(cur)
            cur = []
    groups.append(cur)
    return groups


def build_header(specs, dtype, metadata=None):
    """specs: [(name, shape)] in file order -> (header bytes incl. 8-byte length, data bytes)."""
    header, offset = {}, 0
    esize = DTYPE_SIZE[dtype]
    for name, shape in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * esize
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head, offset


class StreamWriter:
    """Writes the tensors of `specs` ([(name, shape)], file order) into out_dir as
    model.safetensors (shards == 1) or model-0000k-of-0000N.safetensors + index.

    Call write(name, rows) with consecutive leading-dimension slices of each tensor (or the
    whole tensor), tensors in `specs` order; then close(). Files are written as *.tmp and renamed
    when complete; an exception inside a `with` block deletes the partial files."""

    def __init__(self, out_dir, specs, dtype="F32", shards=1, metadata=None):
        if dtype not in DTYPE_SIZE:
            raise ValueError(f"unsupported dtype {dtype}")
        self.out_dir, self.dtype = out_dir, dtype
        self.specs = [(n, tuple(int(d) for d in s)) for n, s in specs]
        esize = DTYPE_SIZE[dtype]
        sizes = [int(np.prod(s, dtype=np.int64)) * esize for _, s in self.specs]
        groups = shard_groups(sizes, shards)
        self.sharded = shards > 1
        self.files = []  # [(final path, [spec index...], header bytes, data bytes)]
        for k, idx in enumerate(groups):
            fname = (f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" if self.sharded
                     else "model.safetensors")
            head, nbytes = build_header([self.specs[i] for i in idx], dtype, metadata)
            self.files.append((os.path.join(out_dir, fname), idx, head, nbytes))
        self.total_size = sum(sizes)
        self._sizes = sizes
        self._file_k = -1
        self._f = None
        self._spec_i = -1
        self._left = 0  # bytes still owed to the current tensor
        self._tmps = []
        self._next_tensor()

    # -- internals -------------------------------------------------------------------------
    def _open_file(self, k):
        path, _, head, _ = self.files[k]
        tmp = path + ".tmp"
        self._tmps.append(tmp)
        self._f = open(tmp, "wb")
        self._f.write(head)
        self._file_k = k

    def _finish_file(self):
        path, _, head, nbytes = self.files[self._file_k]
        written = self._f.tell()
        self._f.close()
        self._f = None
        if written != len(head) + nbytes:
            raise RuntimeError(f"{path}: wrote {written} bytes, header promises "
                               f"{len(head) + nbytes}")
        os.replace(path + ".tmp", path)
        self._tmps.remove(path + ".tmp")

    def _next_tensor(self):
        self._spec_i += 1
        if self._spec_i >= len(self.specs):
            self._left = 0
            return
        k = next(j for j, f in enumerate(self.files) if self._spec_i in f[1])
        if k != self._file_k:
            if self._f is not None:
                self._finish_file()
            self._open_file(k)
        self._left = self._sizes[self._spec_i]

    # -- public --------------------------------------------------------------------------
    def write(self, name, rows):
        """Appends rows (float32) of tensor `name`: a slice along its first dimension."""
        if self._spec_i >= len(self.specs):
            raise RuntimeError(f"write({name}): all tensors already written")
        want, shape = self.specs[self._spec_i]
        if name != want:
            raise RuntimeError(f"write({name}): expected tensor {want} next")
        rows = np.asarray(rows, dtype=np.float32)
        if tuple(rows.shape[1:]) != shape[1:] and not (len(shape) == 1 and rows.ndim == 1):
            raise RuntimeError(f"write({name}): rows of shape {rows.shape} do not fit {shape}")
        flat = rows.reshape(-1)
        nbytes = flat.size * DTYPE_SIZE[self.dtype]
        if nbytes > self._left:
            raise RuntimeError(f"write({name}): more data than its shape {shape} holds")
        for s in range(0, flat.size, CHUNK_ELEMS):
            self._f.write(hfio.encode(flat[s:s + CHUNK_ELEMS], self.dtype))
        self._left -= nbytes
        if self._left == 0:
            self._next_tensor()

    def close(self):
        if self._spec_i < len(self.specs):
            raise RuntimeError(f"close(): tensor {self.specs[self._spec_i][0]} incomplete")
        if self._f is not None:
            self._finish_file()
        if self.sharded:
            weight_map = {}
            for path, idx, _, _ in self.files:
                for i in idx:
                    weight_map[self.specs[i][0]] = os.path.basename(path)
            with open(os.path.join(self.out_dir, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": int(self.total_size)},
                           "weight_map": weight_map}, f, indent=2)

    def abort(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        for tmp in self._tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._tmps = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False
