// convert, info, verify.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "progress.h"
#include "zeroskip/convert.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"
#include "zeroskip/model.h"

namespace zeroskip::cli {
namespace {

// Prints the summary of a written file before it is renamed into place, so a failed write of
// the summary (a full disk, a closed stdout) fails the command with nothing left behind instead
// of an error line beside a complete file. Returns true if the reader of stdout has gone (EPIPE):
// the file is still committed and the command ends quietly, like any other.
bool ReportBeforeCommit(const std::string& summary) {
  try {
    WriteStdout(summary);
  } catch (const StdoutClosed&) {
    return true;
  }
  return false;
}

}  // namespace

void AddConvert(CLI::App& app) {
  struct Flags {
    std::string hf_dir, out, dtype = "keep", act;
    std::vector<std::string> tensor_types;
    bool shadow = false;
  };
  auto flags = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "convert", "Convert a Hugging Face checkpoint directory or a llama GGUF file to .zsk");
  cmd->add_option("HF_DIR", flags->hf_dir,
                  "config.json, model.safetensors[.index.json], "
                  "tokenizer.model; or a .gguf file (llama architecture)")
      ->required();
  cmd->add_option("-o,--output", flags->out, "output .zsk file (written atomically)")->required();
  cmd->add_option("--dtype", flags->dtype,
                  "weight dtype: keep|f32|f16|bf16|q8|q4|q4k|q6k (q4 keeps embeddings and LM head "
                  "q8, q4k keeps them q6k)")
      ->check(CLI::IsMember({"keep", "f32", "f16", "bf16", "q8", "q4", "q4k", "q6k"}));
  cmd->add_option("--tensor-type", flags->tensor_types,
                  "NAME=DTYPE: store a tensor (layers.3.ffn_down, output) or a role of every layer "
                  "(ffn_down) in DTYPE, after --dtype and its recipe; repeatable, a later one wins")
      ->allow_extra_args(false);  // one NAME=DTYPE per flag: never swallow HF_DIR
  cmd->add_option("--act", flags->act,
                  "GGUF input: the FFN activation when the metadata has no llama.hidden_act")
      ->check(CLI::IsMember({"relu", "silu"}));
  cmd->add_flag("--shadow", flags->shadow,
                "add each layer's int8 shadow gate (lets --gate shadow skip most gate rows)");
  cmd->callback([flags] {
    ConvertOptions opt;
    opt.hf_dir = flags->hf_dir;
    opt.out_path = flags->out;
    opt.shadow_gate = flags->shadow;
    opt.act = flags->act;
    if (flags->dtype != "keep") opt.dtype = ParseDTypeName(flags->dtype);
    for (const std::string& arg : flags->tensor_types) {
      const size_t eq = arg.find('=');
      const std::optional<DType> type =
          eq == std::string::npos ? std::nullopt : ParseDTypeName(arg.substr(eq + 1));
      if (!type) {
        throw Error("--tensor-type " + arg,
                    "expected NAME=DTYPE with DTYPE one of f32, f16, bf16, q8, q4, q4k, q6k");
      }
      opt.tensor_types.emplace_back(arg.substr(0, eq), *type);
    }
    Progress bar("converting", Progress::Unit::kBytes);
    opt.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    bool reader_gone = false;
    opt.before_commit = [&](const ConvertResult& r) {
      bar.Done();
      for (const auto& w : r.warnings) std::cerr << "zeroskip: warning: " << w << "\n";
      reader_gone = ReportBeforeCommit("wrote " + flags->out + ": " + std::to_string(r.tensors) +
                                       " tensors, " + std::to_string(r.parameters) +
                                       " parameters, " + std::to_string(r.file_bytes) + " bytes\n");
    };
    ConvertHfCheckpoint(opt);
    if (reader_gone) throw StdoutClosed{};
  });
}

void AddShadow(CLI::App& app) {
  auto opt = std::make_shared<ShadowOptions>();
  auto* cmd = app.add_subcommand(
      "shadow", "Add (or rebuild) every layer's int8 shadow gate in a .zsk model file");
  cmd->add_option("IN", opt->in_path, ".zsk file")->required();
  cmd->add_option("-o,--output", opt->out_path, "output .zsk file (written atomically; may be IN)")
      ->required();
  cmd->callback([opt] {
    // What `verify` checks of the input first: a copy would carry its damage under new checksums.
    Model::Load(opt->in_path);
    Progress bar("shadowing", Progress::Unit::kBytes);
    opt->progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    bool reader_gone = false;
    opt->before_commit = [&](const ConvertResult& r) {
      bar.Done();
      reader_gone = ReportBeforeCommit("wrote " + opt->out_path + ": " + std::to_string(r.tensors) +
                                       " tensors, " + std::to_string(r.file_bytes) + " bytes\n");
    };
    AddShadowGate(*opt);
    if (reader_gone) throw StdoutClosed{};
  });
}

void AddNeurons(CLI::App& app) {
  struct Flags {
    std::string in, out;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd =
      app.add_subcommand("neurons",
                         "Write a model's neuron file, so it runs in less memory than it needs "
                         "(--mem-budget)");
  cmd->add_option("MODEL", f->in, ".zsk file")->required();
  cmd->add_option("-o,--output", f->out,
                  "output file (written atomically; default MODEL.neurons, where loading looks)");
  cmd->callback([f] {
    // Load first, as `shadow` does: its checks, and a budget that keeps the FFN unmapped.
    const auto model = Model::Load(f->in);
    NeuronFileOptions opt;
    opt.out_path = f->out.empty() ? NeuronFilePath(f->in) : f->out;
    Progress bar("bundling", Progress::Unit::kLayers);
    opt.progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
    bool reader_gone = false;
    opt.before_commit = [&](uint64_t bytes) {
      bar.Done();
      const ModelConfig& c = model->config();
      reader_gone = ReportBeforeCommit("wrote " + opt.out_path + ": " + std::to_string(c.layers) +
                                       " layers x " + std::to_string(c.ffn) + " neurons, " +
                                       std::to_string(bytes) + " bytes\n");
    };
    WriteNeuronFile(model->file(), opt);
    if (reader_gone) throw StdoutClosed{};
  });
}

void AddInfo(CLI::App& app) {
  struct Flags {
    std::string file;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("info", "Describe a .zsk model file");
  cmd->add_option("FILE", flags->file, ".zsk file")->required();
  cmd->add_flag("--json", flags->json, "print one JSON object");
  cmd->callback([flags] {
    const auto file = ZskFile::Open(flags->file);
    const ModelConfig& c = file->config();
    uint64_t params = 0;
    std::map<std::string, uint64_t> by_dtype;  // parameters per dtype
    for (const auto& t : file->tensors()) {
      params += t.elements();
      by_dtype[std::string(DTypeName(t.dtype))] += t.elements();
    }
    nlohmann::json j = nlohmann::json::parse(ConfigToJson(c));  // every field, as stored
    j.update({{"file", flags->file},
              {"format_version", file->version()},
              {"file_bytes", file->file_size()},
              {"parameters", params},
              {"tensors", file->tensors().size()},
              {"dtypes", by_dtype},
              {"isa", std::string(BestIsaName())}});
    if (flags->json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << flags->file << ": " << c.hf_architecture << ", zsk v" << file->version() << ", "
              << file->file_size() << " bytes\n"
              << "  layers " << c.layers << ", hidden " << c.hidden << ", ffn " << c.ffn
              << ", heads " << c.heads << " (kv " << c.kv_heads << ", head_dim " << c.head_dim
              << "), vocab " << c.vocab << ", context " << c.context << "\n"
              << "  activation " << ActivationName(c.activation) << ", rms_eps " << c.rms_eps
              << ", rope_theta " << c.rope_theta
              << (c.tied_embeddings ? ", tied embeddings" : ", untied embeddings") << "\n"
              << (c.gated_ffn ? ""
                              : "  ungated FFN (fc1, fc2), LayerNorm, " +
                                    std::string(c.post_norm ? "post-norm" : "pre-norm") +
                                    ", embeddings " + std::to_string(c.embed_dim) +
                                    ", GPT-2 BPE tokenizer\n")
              << "  parameters " << params << " in " << file->tensors().size() << " tensors (";
    bool first = true;
    for (const auto& [name, n] : by_dtype) {
      std::cout << (first ? "" : ", ") << name << " " << n;
      first = false;
    }
    std::cout << ")\n  kernels " << BestIsaName() << "\n";
  });
}

void AddVerify(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "verify", "Run every check loading a .zsk file runs, then recompute every tensor checksum");
  cmd->add_option("FILE", *file, ".zsk file")->required();
  cmd->callback([file] {
    // Loading checks what the header checksum cannot: a consistent tensor table, shapes that
    // match the config, a tokenizer that fits the vocabulary. `ok` promises `run` can load it.
    const auto model = Model::Load(*file);
    const ZskFile& zsk = model->file();
    Progress bar("verifying", Progress::Unit::kTensors);
    zsk.VerifyChecksums([&](size_t done, size_t total) { bar.Update(done, total); });
    bar.Done();
    std::cout << *file << ": ok (" << zsk.tensors().size() << " tensors, checksums match)\n";
  });
}

}  // namespace zeroskip::cli
