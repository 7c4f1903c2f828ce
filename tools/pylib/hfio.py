"""Hugging Face checkpoint I/O shared by the training recipe, the synthetic generator, the test
checkpoint generator and the PyTorch reference. numpy only (no torch, no transformers), so every
tool that writes or reads a checkpoint agrees on one implementation.

safetensors: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then raw
little-endian data. bf16 has no numpy dtype: it travels as uint16 bit patterns.
"""
import json
import os
import shutil

import numpy as np

_DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bf16 bit patterns (uint16); NaN stays NaN."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode(a, dtype):
    """float32 array -> little-endian bytes of the safetensors dtype."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(f"unsupported dtype {dtype}")


def decode(raw, dtype, shape):
    """Little-endian bytes of a safetensors dtype -> float32 array of `shape`."""
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    else:
        raise ValueError(f"unsupported dtype {dtype}")
    return a.astype(np.float32).reshape(shape)


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: dict name -> float32 array (or name -> (dtype, array) to override per tensor)."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        tdtype, arr = value if isinstance(value, tuple) else (dtype, value)
        raw = encode(arr, tdtype)
        header[name] = {"dtype": tdtype, "shape": list(np.shape(arr)),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep data 8-byte aligned, as the reference writer does
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)), 8 + n


def read_safetensors(path):
    """-> dict name -> float32 array (bf16/f16 widened exactly)."""
    header, base = read_safetensors_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            out[name] = decode(f.read(e - b), info["dtype"], info["shape"])
    return out


def read_hf_dir(hf_dir):
    """Reads config.json and every tensor of a single-file or sharded checkpoint."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(read_safetensors(os.path.join(hf_dir, name)))
    return config, tensors


def write_hf_dir(out_dir, config, tensors, dtype="F32", tokenizer_model=None, shards=1):
    """Writes a Hugging Face Llama-layout directory: config.json, model.safetensors (or `shards`
    files plus model.safetensors.index.json), tokenizer.model, tokenizer_config.json."""
    os.makedirs(out_dir, exist_ok=True)
    config = dict(config)
    config["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    names = list(tensors)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)
    else:
        groups = np.array_split(np.arange(len(names)), shards)
        weight_map, total = {}, 0
        for k, idx in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {names[i]: tensors[names[i]] for i in idx}
            write_safetensors(os.path.join(out_dir, fname), part, dtype)
            for n in part:
                weight_map[n] = fname
                total += np.size(part[n]) * _DTYPE_SIZE[dtype]
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": int(total)}, "weight_map": weight_map}, f,
                      indent=2)
    if tokenizer_model:
        shutil.copyfile(tokenizer_model, os.path.join(out_dir, "tokenizer.model"))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                       "add_eos_token": False}, f, indent=2)
            f.write("\n")


def llama_tensor_names(n_layers, tied):
    """The tensor names of a Hugging Face LlamaForCausalLM checkpoint, in file order."""
    names = ["model.embed_tokens.weight"]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "self_attn.q_proj.weight",
                  p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                  p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                  p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight",
                  p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if not tied:
        names.append("lm_head.weight")
    return names
