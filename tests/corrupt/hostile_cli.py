#!/usr/bin/python3
"""Hostile situations the file corpus (cases.json) cannot hold, made at test time.

    /usr/bin/python3 tests/corrupt/hostile_cli.py BINARY [--only NAME ...]

FIFOs as inputs and outputs, outputs that are inputs or device nodes, concurrent converts,
signals during convert, closed pipes and full disks on stdout, NaN weights, out-of-range
command-line values and the commands the file corpus does not reach (eval, score, perplexity,
bench). Each case builds what it needs from one tiny valid checkpoint (make_corpus.py's) in a
temporary directory, runs the binary and checks the contract: a failure is exit 1 (2 for a
command line that does not parse) with exactly one line `zeroskip: error: <path>: <reason>`,
nothing left behind, never a signal or a hang. Prints one line per case and a last line
`N passed, M failed, K skipped`; exits 1 if any case failed.
"""
import argparse
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_corpus as mc  # noqa: E402  (the tiny model, safetensors and .zsk helpers)
import numpy as np  # noqa: E402

ERROR = "zeroskip: error: "


class Failure(Exception):
    pass


class Skipped(Exception):
    pass


class World:
    """The binary, a scratch directory and the shared valid inputs, built on first use."""

    def __init__(self, binary, scratch):
        self.binary, self.scratch = binary, scratch
        self._hf = self._zsk = self._big = None
        self.counter = 0

    def fresh_dir(self, name):
        self.counter += 1
        path = os.path.join(self.scratch, f"{self.counter:03d}-{name}")
        os.makedirs(path)
        return path

    def run(self, args, timeout=60, **kw):
        """-> (exit status, stdout bytes, stderr lines); a hang fails the case."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        try:
            p = subprocess.run([self.binary] + args, stderr=subprocess.PIPE, timeout=timeout, **kw)
        except subprocess.TimeoutExpired:
            raise Failure(f"still running after {timeout} s: {args}")
        return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace").splitlines()

    def hf(self):
        """A valid checkpoint directory (never modified: cases copy it)."""
        if self._hf is None:
            self._hf = mc.write_hf(self.fresh_dir("base"))
        return self._hf

    def hf_copy(self, name, tensors=None):
        case = self.fresh_dir(name)
        return mc.write_hf(case, tensors=tensors)

    def zsk(self):
        if self._zsk is None:
            self._zsk = os.path.join(self.fresh_dir("base-zsk"), "model.zsk")
            rc, _, err = self.run(["convert", self.hf(), "-o", self._zsk])
            if rc != 0:
                raise Failure(f"cannot convert the base checkpoint: {err}")
        return self._zsk

    def big_hf(self):
        """A checkpoint whose conversion takes long enough to be interrupted (a 64k vocab,
        f32, converted to bf16: ~2 M elements)."""
        if self._big is None:
            vocab = 65536
            tensors = mc.make_tensors()
            tensors["model.embed_tokens.weight"] = np.resize(
                tensors["model.embed_tokens.weight"], (vocab, mc.BASE["hidden"]))
            case = self.fresh_dir("big")
            self._big = os.path.join(case, "hf")
            import hfio
            hfio.write_hf_dir(self._big, mc.make_config(vocab_size=vocab), tensors, "F32",
                              tokenizer_model=mc.TOKENIZER)
        return self._big


def expect_error(result, exit_code=1, names=None, reason=None):
    """The contract for a failure: one error line, naming `names`, containing `reason`."""
    rc, _, lines = result
    if rc < 0:
        raise Failure(f"killed by signal {-rc}")
    if rc != exit_code:
        raise Failure(f"exit status {rc}, expected {exit_code}; stderr {lines[:3]}")
    if len(lines) != 1 or not lines[0].startswith(ERROR):
        raise Failure(f"expected one '{ERROR}' line, got {lines[:4]}")
    line = lines[0]
    if names is not None and not line.startswith(ERROR + names):
        raise Failure(f"error line does not name {names!r}: {line!r}")
    if reason is not None and reason not in line:
        raise Failure(f"error line lacks {reason!r}: {line!r}")
    return line


def expect_ok(result):
    rc, out, lines = result
    if rc != 0:
        raise Failure(f"exit status {rc}: {lines[:3]}")
    return out


def listing(path):
    return sorted(os.listdir(path))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


# ------------------------------------------------------------------ FIFOs (inputs never block)

def replace_with_fifo(path):
    if os.path.exists(path):
        os.unlink(path)
    os.mkfifo(path)
    return path


def fifo_input_case(name, filename):
    def fn(w):
        hf = w.hf_copy(name)
        fifo = replace_with_fifo(os.path.join(hf, filename))
        out = w.fresh_dir(name + "-out")
        line = expect_error(w.run(["convert", hf, "-o", out + "/m.zsk"], timeout=20), names=fifo,
                            reason="not a regular file")
        if listing(out):
            raise Failure(f"left {listing(out)}")
        return line
    fn.__name__ = name
    case(fn)


fifo_input_case("fifo_config_json", "config.json")
fifo_input_case("fifo_safetensors", "model.safetensors")
fifo_input_case("fifo_tokenizer", "tokenizer.model")
fifo_input_case("fifo_index_json", "model.safetensors.index.json")


@case
def fifo_model(w):
    fifo = replace_with_fifo(os.path.join(w.fresh_dir("fifo-model"), "m.zsk"))
    for cmd in (["run", "-m", fifo, "-p", "x"], ["info", fifo], ["verify", fifo]):
        line = expect_error(w.run(cmd, timeout=20), names=fifo, reason="not a regular file")
    return line


@case
def fifo_prompt_and_text_files(w):
    fifo = replace_with_fifo(os.path.join(w.fresh_dir("fifo-text"), "prompt.txt"))
    for cmd in (["run", "-m", w.zsk(), "-f", fifo, "-n", "1"],
                ["perplexity", "-m", w.zsk(), "-f", fifo]):
        line = expect_error(w.run(cmd, timeout=20), names=fifo, reason="not a regular file")
    return line


# ------------------------------------------------------------------ output paths

def output_is_input_case(name, filename):
    def fn(w):
        hf = w.hf_copy(name)
        target = os.path.join(hf, filename)
        before = {f: sha(os.path.join(hf, f)) for f in listing(hf)}
        line = expect_error(w.run(["convert", hf, "-o", target]), names=target,
                            reason="is an input of this conversion")
        after = {f: sha(os.path.join(hf, f)) for f in listing(hf)}
        if before != after:
            raise Failure("the checkpoint changed")
        return line
    fn.__name__ = name
    case(fn)


output_is_input_case("out_is_safetensors", "model.safetensors")
output_is_input_case("out_is_config_json", "config.json")
output_is_input_case("out_is_tokenizer", "tokenizer.model")


@case
def out_is_hard_link_to_input(w):
    hf = w.hf_copy("hardlink")
    link = os.path.join(w.fresh_dir("hardlink-out"), "m.zsk")
    os.link(os.path.join(hf, "model.safetensors"), link)
    before = sha(link)
    line = expect_error(w.run(["convert", hf, "-o", link]), names=link,
                        reason="is an input of this conversion")
    if sha(link) != before:
        raise Failure("the shard changed")
    return line


@case
def out_is_fifo(w):
    out = w.fresh_dir("out-fifo")
    fifo = replace_with_fifo(os.path.join(out, "m.zsk"))
    line = expect_error(w.run(["convert", w.hf(), "-o", fifo], timeout=20), names=fifo,
                        reason="not a regular file")
    if not stat.S_ISFIFO(os.stat(fifo).st_mode) or listing(out) != ["m.zsk"]:
        raise Failure("the FIFO was replaced or files were left")
    return line


def out_is_device_node_case(name, command):
    """`command(w)`: the command line up to its output path."""
    def fn(w):
        if os.geteuid() != 0:
            raise Skipped("needs root to make a device node")
        dev = os.path.join(w.fresh_dir(name), "null")
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private copy of /dev/null
        line = expect_error(w.run(command(w) + ["-o", dev]), names=dev,
                            reason="not a regular file")
        if not stat.S_ISCHR(os.stat(dev).st_mode):
            raise Failure("the device node was replaced")
        return line
    fn.__name__ = name
    case(fn)


out_is_device_node_case("out_is_device_node", lambda w: ["convert", w.hf()])
out_is_device_node_case("neurons_out_is_device_node", lambda w: ["neurons", w.zsk()])


@case
def out_is_directory(w):
    out = w.fresh_dir("out-dir")
    return expect_error(w.run(["convert", w.hf(), "-o", out]), names=out, reason="is a directory")


def out_is_symlink_case(name, dangling):
    def fn(w):
        out = w.fresh_dir(name)
        target = os.path.join(out, "target.zsk")
        if not dangling:
            mc.write_text(target, "precious")
        link = os.path.join(out, "m.zsk")
        os.symlink(target, link)
        line = expect_error(w.run(["convert", w.hf(), "-o", link]), names=link,
                            reason="is a symbolic link")
        if not os.path.islink(link) or os.readlink(link) != target:
            raise Failure("the link was replaced")
        if listing(out) != (["m.zsk"] if dangling else ["m.zsk", "target.zsk"]):
            raise Failure(f"left {listing(out)}")
        if not dangling and mc.read_bytes(target) != b"precious":
            raise Failure("the link's target changed")
        return line
    fn.__name__ = name
    case(fn)


# The rename would replace the link itself (as root, `-o /dev/stdout` replaced the system's link).
out_is_symlink_case("out_is_symlink_to_file", dangling=False)
out_is_symlink_case("out_is_dangling_symlink", dangling=True)


@case
def out_empty(w):
    start = time.monotonic()
    line = expect_error(w.run(["convert", w.hf(), "-o", ""]), reason="output path is empty")
    return f"{line} ({time.monotonic() - start:.2f} s)"


@case
def concurrent_converts_of_one_output(w):
    out_dir = w.fresh_dir("concurrent")
    out = os.path.join(out_dir, "m.zsk")
    for _ in range(4):
        procs = [subprocess.Popen([w.binary, "convert", w.big_hf(), "-o", out, "--dtype", "bf16"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                raise Failure(f"a convert failed: {err.decode()!r}")
        expect_ok(w.run(["verify", out]))
        if listing(out_dir) != ["m.zsk"]:
            raise Failure(f"left {listing(out_dir)}")
    return "4 rounds of 2 simultaneous converts: each result verifies, nothing left"


def signal_case(sig):
    def fn(w):
        out_dir = w.fresh_dir(f"sig{sig.name}")
        for attempt in range(5):
            p = subprocess.Popen([w.binary, "convert", w.big_hf(), "-o", out_dir + "/m.zsk",
                                  "--dtype", "bf16"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while not any(f.endswith(".tmp") for f in os.listdir(out_dir)):
                if p.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.0005)
            p.send_signal(sig)
            rc = p.wait(timeout=30)
            if rc == 0:  # finished before the signal landed: try again
                os.unlink(out_dir + "/m.zsk")
                continue
            if rc != -sig:
                raise Failure(f"exit status {rc}, expected death by {sig.name}")
            if listing(out_dir):
                raise Failure(f"{sig.name} left {listing(out_dir)}")
            return f"killed by {sig.name} while writing (attempt {attempt + 1}), nothing left"
        raise Failure("convert always finished before the signal")
    fn.__name__ = f"signal_{sig.name.lower()}_during_convert"
    case(fn)


for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM):
    signal_case(_sig)


@case
def file_size_limit_during_convert(w):
    """Under `ulimit -f` a write past the limit raises SIGXFSZ, which would kill convert with
    its temporary file left: it is an error line instead."""
    import resource
    out = w.fresh_dir("fsize")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))
    line = expect_error(w.run(["convert", w.hf(), "-o", out + "/m.zsk"], preexec_fn=limit),
                        names=out + "/m.zsk", reason="file size limit")
    if listing(out):
        raise Failure(f"left {listing(out)}")
    return line


# ------------------------------------------------------------------ command-line values

def bad_flag_case(name, flag, value, command="run"):
    def fn(w):
        args = {"run": ["run", "-m", w.zsk(), "-p", "x", "-n", "1"],
                "eval": ["eval", "-m", w.zsk(), "--tokens", "1"]}[command]
        return expect_error(w.run(args + [flag, value]), exit_code=2, names=flag)
    fn.__name__ = name
    case(fn)


bad_flag_case("temp_nan", "--temp", "nan")
bad_flag_case("temp_inf", "--temp", "inf")
bad_flag_case("top_p_nan", "--top-p", "nan")
bad_flag_case("min_p_nan", "--min-p", "nan")
bad_flag_case("repeat_penalty_nan", "--repeat-penalty", "nan")
bad_flag_case("stoch_p_nan", "--stoch-p", "nan")
bad_flag_case("stoch_p_above_one", "--stoch-p", "1.5")
bad_flag_case("seed_negative", "--seed", "-1")
bad_flag_case("seed_past_2_64", "--seed", "18446744073709551616")
bad_flag_case("threads_zero", "--threads", "0", "eval")
bad_flag_case("n_predict_negative", "--n-predict", "-1")
bad_flag_case("isa_unknown", "--isa", "sse2", "eval")
bad_flag_case("mem_budget_zero", "--mem-budget", "0")
bad_flag_case("mem_budget_negative", "--mem-budget", "-1G")
bad_flag_case("mem_budget_unknown_suffix", "--mem-budget", "6X")
bad_flag_case("mem_budget_past_2_64", "--mem-budget", "17179869184G")


def newline_flag_case(name, flag, command="run"):
    """A value holding a newline is quoted in the message: still one line."""
    def fn(w):
        args = {"run": ["run", "-m", w.zsk(), "-p", "x", "-n", "1"],
                "eval": ["eval", "-m", w.zsk(), "--tokens", "1"]}[command]
        line = expect_error(w.run(args + [flag, "1\nzeroskip: error: forged"]), exit_code=2,
                            names=flag)
        if "\\x0a" not in line:
            raise Failure(f"the newline is not escaped: {line!r}")
        return line
    fn.__name__ = name
    case(fn)


newline_flag_case("temp_newline", "--temp")
newline_flag_case("top_p_newline", "--top-p")
newline_flag_case("min_p_newline", "--min-p")
newline_flag_case("repeat_penalty_newline", "--repeat-penalty")
newline_flag_case("n_predict_newline", "--n-predict")
newline_flag_case("threads_newline", "--threads", "eval")
newline_flag_case("kv_type_newline", "--kv-type", "eval")


@case
def temp_tiny_is_greedy(w):
    base = ["run", "-m", w.zsk(), "-p", "Hello", "-n", "12", "--ignore-eos"]
    greedy = expect_ok(w.run(base + ["--temp", "0"]))
    tiny = expect_ok(w.run(base + ["--temp", "1e-39"]))
    if tiny != greedy:
        raise Failure(f"--temp 1e-39 gave {tiny!r}, greedy {greedy!r}")
    return "--temp 1e-39 prints the greedy text"


@case
def seed_max_accepted(w):
    expect_ok(w.run(["run", "-m", w.zsk(), "-p", "x", "-n", "2", "--seed",
                     "18446744073709551615"]))
    return "--seed 2^64-1 runs"


# ------------------------------------------------------------------ stdout

@case
def info_to_full_disk(w):
    with open("/dev/full", "wb") as full:
        return expect_error(w.run(["info", w.zsk()], stdout=full), names="stdout",
                            reason="No space left on device")


@case
def run_to_full_disk(w):
    with open("/dev/full", "wb") as full:
        return expect_error(w.run(["run", "-m", w.zsk(), "-p", "x", "-n", "8", "--ignore-eos"],
                                  stdout=full), names="stdout", reason="write failed")


def close_stdout():
    os.close(1)


def stdout_lost_case(name, args, where):
    """What --version and --help print is all they do: lost, it is an error, not exit 0."""
    def fn(w):
        if where == "full":
            with open("/dev/full", "wb") as full:
                result = w.run(args, stdout=full)
            reason = "No space left on device"
        else:
            result = w.run(args, stdout=None, preexec_fn=close_stdout)
            reason = "Bad file descriptor"
        return expect_error(result, names="stdout", reason=reason)
    fn.__name__ = name
    case(fn)


stdout_lost_case("version_to_full_disk", ["--version"], "full")
stdout_lost_case("help_to_full_disk", ["--help"], "full")
stdout_lost_case("run_help_to_full_disk", ["run", "--help"], "full")
stdout_lost_case("version_to_closed_stdout", ["--version"], "closed")
stdout_lost_case("run_help_to_closed_stdout", ["run", "--help"], "closed")


def convert_summary_lost_case(name, command, where):
    """The summary is printed before the file is renamed into place: when it cannot be written
    the command fails with nothing left behind, never an error beside a complete file."""
    def fn(w):
        out = w.fresh_dir(name)
        target = out + "/m.zsk"
        args = (["convert", w.hf(), "-o", target] if command == "convert"
                else ["shadow", w.zsk(), "-o", target])
        if where == "full":
            with open("/dev/full", "wb") as full:
                result = w.run(args, stdout=full)
            reason = "No space left on device"
        else:
            result = w.run(args, stdout=None, preexec_fn=close_stdout)
            reason = "Bad file descriptor"
        line = expect_error(result, names="stdout", reason=reason)
        if listing(out):
            raise Failure(f"left {listing(out)}")
        return line
    fn.__name__ = name
    case(fn)


convert_summary_lost_case("convert_to_full_disk", "convert", "full")
convert_summary_lost_case("convert_to_closed_stdout", "convert", "closed")
convert_summary_lost_case("shadow_to_full_disk", "shadow", "full")


@case
def convert_into_closed_pipe_still_writes(w):
    """A reader that went away (EPIPE) took all it wanted: the file is written, exit 0."""
    out = w.fresh_dir("convert-pipe")
    p = subprocess.Popen([w.binary, "convert", w.hf(), "-o", out + "/m.zsk"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    if rc != 0 or err:
        raise Failure(f"exit status {rc}, stderr {err!r}")
    expect_ok(w.run(["verify", out + "/m.zsk"]))
    return "exit 0, quiet, the file verifies"


def closed_pipe_case(name, args_of):
    def fn(w):
        p = subprocess.Popen([w.binary] + args_of(w), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.read(1)
        p.stdout.close()  # the reader goes away, like `| head -c1`
        err = p.stderr.read().decode()
        rc = p.wait(timeout=60)
        if rc != 0 or "error" in err:
            raise Failure(f"exit status {rc} (141 = SIGPIPE), stderr {err!r}")
        return "exit 0, quiet"
    fn.__name__ = name
    case(fn)


closed_pipe_case("run_into_closed_pipe",
                 lambda w: ["run", "-m", w.zsk(), "-p", "x", "-n", "400", "--ignore-eos"])
closed_pipe_case("info_json_into_closed_pipe", lambda w: ["info", "--json", w.zsk()])


# ------------------------------------------------------------------ damaged weights

def damaged_zsk(w, name):
    """The base model with every embedding value NaN (checksums left stale, as a bit rot)."""
    z = mc.Zsk(mc.read_bytes(w.zsk()))
    i = z.find("tok_embeddings")
    off, n = z.rget(i, "offset"), z.rget(i, "nbytes")
    z.b[off:off + n] = b"\xff" * n
    path = os.path.join(w.fresh_dir(name), "model.zsk")
    mc.write_text(path, bytes(z.b))
    return path


@case
def nan_weights_stop_run(w):
    path = damaged_zsk(w, "nan-run")
    return expect_error(w.run(["run", "-m", path, "-p", "x", "-n", "4"]), names=path,
                        reason="zeroskip verify")


@case
def nan_weights_stop_perplexity(w):
    path = damaged_zsk(w, "nan-ppl")
    text = os.path.join(os.path.dirname(path), "t.txt")
    mc.write_text(text, "to be or not to be, that is the question")
    expect_error(w.run(["verify", path]), names=path, reason="checksum mismatch")
    return expect_error(w.run(["perplexity", "-m", path, "-f", text]), names=path,
                        reason="NaN or infinite logit")


def patched_zsk(w, name, patch, reseal_tensor=None):
    """The base model patched by `patch(zsk)`; the named tensor's checksum (then the header's)
    recomputed, as a file damaged before it was written would be."""
    z = mc.Zsk(mc.read_bytes(w.zsk()))
    patch(z)
    if reseal_tensor is not None:
        i = z.find(reseal_tensor)
        off, n = z.rget(i, "offset"), z.rget(i, "nbytes")
        z.rset(i, "checksum", mc.xxh64(z.b[off:off + n]))
        z.reseal()
    path = os.path.join(w.fresh_dir(name), "model.zsk")
    mc.write_text(path, bytes(z.b))
    return path


def flip_byte(tensor):
    def patch(z):
        i = z.find(tensor)
        z.b[z.rget(i, "offset") + 5] ^= 0x10
    return patch


def nan_values(tensor):
    def patch(z):
        i = z.find(tensor)
        z.b[z.rget(i, "offset"):z.rget(i, "offset") + 8] = b"\xff" * 8  # f16 NaNs
    return patch


def shadow_refuses_case(name, make, reason):
    """`zeroskip shadow` writes fresh checksums: an input `verify` or `run` refuses, or one that
    would give a file they refuse, must be refused, with nothing written."""
    def fn(w):
        path = make(w)
        out = w.fresh_dir(name + "-out")
        line = expect_error(w.run(["shadow", path, "-o", out + "/m.zsk"]), names=path,
                            reason=reason)
        if listing(out):
            raise Failure(f"left {listing(out)}")
        return line
    fn.__name__ = name
    case(fn)


shadow_refuses_case("shadow_flipped_byte_in_attn_q",
                    lambda w: patched_zsk(w, "flip-q", flip_byte("layers.0.attn_q")),
                    "'layers.0.attn_q': checksum mismatch")
shadow_refuses_case("shadow_flipped_byte_in_gate",
                    lambda w: patched_zsk(w, "flip-gate", flip_byte("layers.0.ffn_gate")),
                    "'layers.0.ffn_gate': checksum mismatch")
shadow_refuses_case("shadow_nan_gate",
                    lambda w: patched_zsk(w, "nan-gate", nan_values("layers.0.ffn_gate"),
                                          reseal_tensor="layers.0.ffn_gate"),
                    "'layers.0.ffn_gate': 4 values are NaN or Inf")


def rename_tensor(old, new):
    def patch(z):
        z.rname(z.find(old), new)
        z.reseal()
    return patch


shadow_refuses_case("shadow_unknown_tensor",
                    lambda w: patched_zsk(w, "unknown", rename_tensor("layers.0.attn_q",
                                                                       "layers.0.attn_z")),
                    "tensor 'layers.0.attn_")


def gguf_integer_width_case(name, key, etype, convert_value):
    """llama.cpp's writers store token types and scores in more than one width: all convert."""
    def fn(w):
        import make_gguf
        d = w.fresh_dir(name)
        meta, tensors = mc.gguf_parts(d)
        for k, (mkey, vtype, value) in enumerate(meta):
            if mkey == key:
                meta[k] = (mkey, vtype, (etype, [convert_value(v) for v in value[1]]))
        gguf = os.path.join(d, "model.gguf")
        mc.write_text(gguf, make_gguf.serialize(meta, tensors))
        expect_ok(w.run(["convert", gguf, "-o", d + "/m.zsk"]))
        expect_ok(w.run(["verify", d + "/m.zsk"]))
        return f"{key} as ggml value type {etype}: converted, verifies"
    fn.__name__ = name
    case(fn)


gguf_integer_width_case("gguf_token_type_u32_accepted", "tokenizer.ggml.token_type", 4, int)
gguf_integer_width_case("gguf_token_type_u8_accepted", "tokenizer.ggml.token_type", 0, int)
gguf_integer_width_case("gguf_scores_i32_accepted", "tokenizer.ggml.scores", 5, round)


@case
def gguf_large_metadata_arrays(w):
    """Four metadata arrays of 8 Mi u8 each (the most one array may hold): read one pread per
    element that was ~90 s; read in blocks it is a fraction of a second (the timeout is the hang
    detector). The file still converts."""
    import make_gguf
    d = w.fresh_dir("gguf-big-meta")
    meta, tensors = mc.gguf_parts(d)
    blob = struct.pack("<IQ", make_gguf.U8, 1 << 23) + bytes(range(256)) * (1 << 15)
    raw = make_gguf.serialize(meta, tensors)
    # Spliced in by hand (serialize would build 8 Mi Python ints): the metadata count grows by
    # four and the arrays go before the first key.
    count = struct.unpack_from("<Q", raw, 16)[0]
    # Keys of 16 bytes: each entry is then 2^23 + 40 bytes, four of them a multiple of the
    # alignment (32), so the tensor data after the header stays where its offsets say.
    extra = b"".join(make_gguf.s(f"general.blob.{k:03d}") + struct.pack("<I", make_gguf.ARRAY) +
                     blob for k in range(4))
    head = raw[:16] + struct.pack("<Q", count + 4)
    body = raw[24:]
    assert len(extra) % make_gguf.ALIGN == 0
    gguf = os.path.join(d, "model.gguf")
    mc.write_text(gguf, head + extra + body)
    expect_ok(w.run(["convert", gguf, "-o", d + "/m.zsk"], timeout=30))
    return "4 x 8 MiB of u8 metadata: converted"


def nonfinite_checkpoint_case(name, tensor, value):
    def fn(w):
        tensors = mc.make_tensors()
        tensors[tensor].flat[3] = value
        hf = w.hf_copy(name, tensors=tensors)
        out = w.fresh_dir(name + "-out")
        line = expect_error(w.run(["convert", hf, "-o", out + "/m.zsk"]),
                            names=os.path.join(hf, "model.safetensors"), reason="NaN or Inf")
        if listing(out):
            raise Failure(f"left {listing(out)}")
        return line
    fn.__name__ = name
    case(fn)


nonfinite_checkpoint_case("nan_in_checkpoint", "model.embed_tokens.weight", np.nan)
nonfinite_checkpoint_case("inf_in_checkpoint", "model.norm.weight", np.inf)


# ------------------------------------------------------------------ tokenizers

HOSTILE_TOKENIZER = os.path.join(mc.ROOT, "tests", "fuzz", "corpus", "tokenizer",
                                 "seed-hostile-charsmap")


@case
def tokenizer_custom_charsmap_convert(w):
    """A normalizer trie with out-of-range units (crashed sentencepiece's normalizer)."""
    hf = w.hf_copy("tok-charsmap")
    tok = os.path.join(hf, "tokenizer.model")
    mc.write_text(tok, mc.read_bytes(HOSTILE_TOKENIZER))
    out = w.fresh_dir("tok-charsmap-out")
    line = expect_error(w.run(["convert", hf, "-o", out + "/m.zsk"]), names=tok,
                        reason="precompiled_charsmap")
    if listing(out):
        raise Failure(f"left {listing(out)}")
    return line


@case
def tokenizer_custom_charsmap_in_zsk(w):
    """The same tokenizer embedded in a .zsk (header checksum recomputed): every command that
    opens the file refuses it instead of crashing in sentencepiece."""
    z = mc.Zsk(mc.read_bytes(w.zsk()))
    hostile = mc.read_bytes(HOSTILE_TOKENIZER)
    # Room for it: the metadata without its verbatim copy of config.json, the tokenizer after it.
    meta = json.loads(z.region("metadata_offset", z.get("metadata_size")))
    meta["hf_config"] = ""
    compact = json.dumps(meta, separators=(",", ":")).encode()
    start = z.get("metadata_offset")
    if start + len(compact) + len(hostile) > z.get("table_offset"):
        raise Failure("the hostile tokenizer does not fit before the tensor table")
    z.b[start:start + len(compact)] = compact
    z.set("metadata_size", len(compact))
    z.b[start + len(compact):start + len(compact) + len(hostile)] = hostile
    z.set("tokenizer_offset", start + len(compact))
    z.set("tokenizer_size", len(hostile))
    z.reseal()
    path = os.path.join(w.fresh_dir("tok-zsk"), "model.zsk")
    mc.write_text(path, bytes(z.b))
    for cmd in (["info", path], ["verify", path], ["run", "-m", path, "-p", "x", "-n", "1"]):
        line = expect_error(w.run(cmd), names=path, reason="precompiled_charsmap")
    return line


# ------------------------------------------------------------------ messages

def without_chat_banner(result):
    """chat's one line of help on stderr ("zeroskip chat: template ...") is not an error line."""
    rc, out, lines = result
    return rc, out, [ln for ln in lines if not ln.startswith("zeroskip chat: ")]


@case
def chat_stdin_closed(w):
    """With fd 0 closed, the model file was opened on it and chat read it as the user's input."""
    def close_stdin():
        os.close(0)
    return expect_error(without_chat_banner(w.run(["chat", "-m", w.zsk(), "-n", "2"], stdin=None,
                                                  timeout=30, preexec_fn=close_stdin)),
                        names="stdin",
                        reason="read failed: Bad file descriptor")


@case
def chat_stdin_is_directory(w):
    fd = os.open(w.fresh_dir("chat-dir"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = w.run(["chat", "-m", w.zsk(), "-n", "2"], stdin=fd, timeout=30)
    finally:
        os.close(fd)
    return expect_error(without_chat_banner(result), names="stdin",
                        reason="read failed: Is a directory")


@case
def chat_system_invalid_utf8_names_the_flag(w):
    return expect_error(w.run([b"chat", b"-m", w.zsk().encode(), b"--system", b"a\xffb"]),
                        names="--system", reason="is not valid UTF-8")


@case
def eval_sparse_tokens_past_context_counts_all(w):
    """Token by token (--ffn sparse) the message counted only the tokens run so far."""
    ids = ",".join(["1"] * 300)
    lines = []
    for ffn in ("sparse", "dense"):
        lines.append(expect_error(w.run(["eval", "-m", w.zsk(), "--ffn", ffn, "--ctx", "64",
                                         "--tokens", ids]), names=w.zsk(),
                                  reason="300 tokens do not fit the context of 64"))
    return lines[0]


@case
def prompt_invalid_utf8_names_the_flag(w):
    return expect_error(w.run([b"run", b"-m", w.zsk().encode(), b"-p", b"a\xffb", b"-n", b"1"]),
                        names="--prompt", reason="not valid UTF-8")


@case
def huge_prompt_refused_before_tokenizing(w):
    """"at least" is the bound's wording: a prompt tokenized in full reports its exact count (no
    timing check: the sanitizers and a busy machine make any threshold flaky)."""
    text = os.path.join(w.fresh_dir("huge-prompt"), "p.txt")
    mc.write_text(text, "All the world's a stage. " * 400000)  # 10 MB
    return expect_error(w.run(["run", "-m", w.zsk(), "-f", text, "--ctx", "32"]), names=text,
                        reason="the prompt is at least")


@case
def huge_non_ascii_prompt_refused_before_tokenizing(w):
    """10 MB of "é": the bound counted ASCII only, so this was tokenized in full (26 s, 2 GB)
    before "the prompt is 10485762 tokens"; now refused from the bound alone."""
    text = os.path.join(w.fresh_dir("huge-utf8-prompt"), "p.txt")
    mc.write_text(text, "\u00e9" * (5 << 20))
    return expect_error(w.run(["run", "-m", w.zsk(), "-f", text, "--ctx", "32"], timeout=60),
                        names=text, reason="the prompt is at least 163840 tokens")


@case
def bpe_perplexity_of_a_megabyte(w):
    """GPT-2 pre-tokenization was quadratic (PCRE2 checked the rest of the text as UTF-8 at
    every word): 1 MB took ~4 minutes; word by word it takes seconds (the timeout is the
    hang detector, not a benchmark)."""
    d = w.fresh_dir("bpe-ppl")
    hf = mc.write_opt_hf(d)
    model = os.path.join(d, "m.zsk")
    expect_ok(w.run(["convert", hf, "-o", model]))
    text = os.path.join(d, "t.txt")
    mc.write_text(text, "The quick brown fox, 12 jumps; \u00fcber caf\u00e9. " * 25000)
    out = expect_ok(w.run(["perplexity", "-m", model, "-f", text, "-t", "1"], timeout=180))
    if b"over 675001 tokens" not in out:
        raise Failure(f"unexpected output {out!r}")
    return out.decode().strip()


@case
def huge_context_names_the_file(w):
    """A context the process cannot allocate (4 M positions under a 640 MiB address-space
    limit): the failure names the model, not just 'out of memory'."""
    import resource
    if os.environ.get("ZEROSKIP_SANITIZED") == "1":
        raise Skipped("the sanitizers reserve terabytes of address space: no limit can hold")
    z = mc.Zsk(mc.read_bytes(w.zsk()))
    meta = json.loads(z.region("metadata_offset", z.get("metadata_size")))
    meta["config"]["context_length"] = 1 << 22
    meta["hf_config"] = ""
    z.replace_metadata(json.dumps(meta, separators=(",", ":"))).reseal()
    path = os.path.join(w.fresh_dir("huge-ctx"), "model.zsk")
    mc.write_text(path, bytes(z.b))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (640 << 20, 640 << 20))
    return expect_error(w.run(["run", "-m", path, "-p", "x", "-n", "1", "-t", "1"],
                              preexec_fn=limit), names=path, reason="context of 4194304 tokens")


@case
def bench_plot_unwritable(w):
    rc, out, lines = w.run(["bench", "ffn", "--d", "64", "--f", "128", "--sparsity", "0.5",
                            "--steps", "1", "--plot", "/nonexistent-dir/x.png"])
    if out:
        raise Failure(f"printed {len(out)} bytes on stdout before failing")
    return expect_error((rc, out, lines), names="/nonexistent-dir/x.png",
                        reason="cannot create output file")


@case
def verify_runs_the_load_checks(w):
    """Metadata vocab_size 384 -> 100 with the header checksum recomputed: the tensor
    checksums all match, but the file cannot be loaded, so verify must not say ok."""
    z = mc.Zsk(mc.read_bytes(w.zsk()))
    meta = json.loads(z.region("metadata_offset", z.get("metadata_size")))
    meta["config"]["vocab_size"] = 100
    z.replace_metadata(json.dumps(meta, separators=(",", ":"))).reseal()
    path = os.path.join(w.fresh_dir("verify"), "model.zsk")
    mc.write_text(path, bytes(z.b))
    return expect_error(w.run(["verify", path]), names=path, reason="vocab_size is 100")


# ------------------------------------------------------------------ eval, score, perplexity, bench

def simple_error_case(name, args_of, names_of, reason, exit_code=1):
    def fn(w):
        return expect_error(w.run(args_of(w)), exit_code=exit_code, names=names_of(w),
                            reason=reason)
    fn.__name__ = name
    case(fn)


simple_error_case("eval_token_out_of_range",
                  lambda w: ["eval", "-m", w.zsk(), "--tokens", "1,384"], lambda w: w.zsk(),
                  "outside the vocabulary")
simple_error_case("eval_tokens_not_numbers",
                  lambda w: ["eval", "-m", w.zsk(), "--tokens", "1,,2"], lambda w: "--tokens",
                  "is not a number")
simple_error_case("eval_tokens_past_context",
                  lambda w: ["eval", "-m", w.zsk(), "--ctx", "2", "--tokens", "1,5,9"],
                  lambda w: w.zsk(), "do not fit the context")
simple_error_case("eval_ctx_above_model",
                  lambda w: ["eval", "-m", w.zsk(), "--ctx", "100000", "--tokens", "1"],
                  lambda w: "--ctx", "exceeds the model's context length")
simple_error_case("score_from_past_end",
                  lambda w: ["score", "-m", w.zsk(), "--tokens", "1,5,9", "--from", "3"],
                  lambda w: "--from", "leaves nothing to score")
simple_error_case("score_token_out_of_range",
                  lambda w: ["score", "-m", w.zsk(), "--tokens", "1,5,99999", "--from", "1"],
                  lambda w: w.zsk(), "outside the vocabulary")
simple_error_case("bench_ffn_too_large",
                  lambda w: ["bench", "ffn", "--d", "65536", "--f", "262144"],
                  lambda w: "", "")
simple_error_case("bench_decode_missing_model",
                  lambda w: ["bench", "decode", "-m", w.scratch + "/missing.zsk"],
                  lambda w: w.scratch + "/missing.zsk", "cannot open")
simple_error_case("run_model_is_directory",
                  lambda w: ["run", "-m", w.scratch, "-p", "x"], lambda w: w.scratch,
                  "not a regular file")


@case
def perplexity_empty_text(w):
    text = os.path.join(w.fresh_dir("ppl-empty"), "empty.txt")
    mc.write_text(text, "")
    return expect_error(w.run(["perplexity", "-m", w.zsk(), "-f", text]), names=text,
                        reason="too short")


# ------------------------------------------------------------------ driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    chosen = [c for c in CASES if not args.only or c.__name__ in args.only]
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="zsk-hostile-") as scratch:
        world = World(binary, scratch)
        for c in chosen:
            try:
                detail = c(world)
                passed += 1
                print(f"PASS    {c.__name__}: {detail}", flush=True)
            except Skipped as e:
                skipped += 1
                print(f"SKIPPED {c.__name__}: {e}", flush=True)
            except Failure as e:
                failed += 1
                print(f"FAIL    {c.__name__}: {e}", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
