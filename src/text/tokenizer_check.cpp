#include "text/tokenizer_check.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <exception>
#include <vector>

#include "zeroskip/error.h"

// sentencepiece's builder.h is not installed, but libsentencepiece_train (which the pkg-config
// file links) exports this static member: it returns the library's own compiled table for a
// builtin normalization rule, so we compare against exactly what this sentencepiece would use
// instead of carrying 240 KB tables that could drift from the installed library.
namespace sentencepiece::normalizer {
class Builder {
 public:
  static util::Status GetPrecompiledCharsMap(std::string_view name, std::string* output);
};
}  // namespace sentencepiece::normalizer

namespace zeroskip {
namespace {

// Same cap as the converter's tokenizer.model read; it also keeps sizes within the int that
// protobuf's ParseFromArray takes.
constexpr size_t kMaxModelBytes = 64u << 20;

// ModelProto, SentencePiece and NormalizerSpec field numbers (sentencepiece_model.proto).
constexpr uint32_t kModelPieces = 1;
constexpr uint32_t kPieceText = 1;
constexpr uint32_t kPieceType = 3;
constexpr uint32_t kPieceTypeUserDefined = 4;
constexpr uint32_t kModelNormalizerSpec = 3;
constexpr uint32_t kModelSelfTestData = 4;
constexpr uint32_t kModelDenormalizerSpec = 5;
constexpr uint32_t kSpecPrecompiledCharsmap = 2;
constexpr int kWireVarint = 0, kWireFixed64 = 1, kWireLengthDelimited = 2, kWireFixed32 = 5;

// sentencepiece's PrefixMatcher collects the user-defined symbols that prefix the text into a
// 64-entry array but then reads as many entries as there were matches: a chain of more than 64
// user-defined pieces, each a prefix of the next, makes it read past the array (SIGSEGV).
constexpr size_t kMaxNestedUserDefinedPieces = 64;

// One record of a serialized protobuf message.
struct WireRecord {
  uint32_t field = 0;
  int wire_type = 0;
  uint64_t value = 0;         // a varint record's value
  std::string_view payload;   // contents of a length-delimited record, else empty
  size_t begin = 0, end = 0;  // the whole record (tag included) within the message
};

// Walks the records of one serialized message. Stricter than protobuf (groups, varints over 10
// bytes and lengths past the end are errors), so for anything it accepts protobuf sees the same
// record boundaries and therefore the same fields.
class WireReader {
 public:
  explicit WireReader(std::string_view message) : message_(message) {}
  bool done() const { return pos_ == message_.size(); }
  size_t pos() const { return pos_; }

  // False (and the position is unspecified) when the record at pos() is malformed.
  bool Next(WireRecord* r) {
    r->begin = pos_;
    r->value = 0;
    r->payload = {};
    uint64_t tag;
    if (!Varint(&tag) || tag > UINT32_MAX || (tag >> 3) == 0) return false;
    r->field = static_cast<uint32_t>(tag >> 3);
    r->wire_type = static_cast<int>(tag & 7);
    switch (r->wire_type) {
      case kWireVarint:
        if (!Varint(&r->value)) return false;
        break;
      case kWireFixed64:
        if (!Skip(8)) return false;
        break;
      case kWireFixed32:
        if (!Skip(4)) return false;
        break;
      case kWireLengthDelimited: {
        uint64_t n;
        if (!Varint(&n) || n > message_.size() - pos_) return false;
        r->payload = message_.substr(pos_, n);
        pos_ += n;
        break;
      }
      default:  // 3/4: groups, which ModelProto does not use; 6/7 do not exist
        return false;
    }
    r->end = pos_;
    return true;
  }

 private:
  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos_ == message_.size()) return false;
      const auto b = static_cast<uint8_t>(message_[pos_++]);
      result |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (b < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Skip(size_t n) {
    if (message_.size() - pos_ < n) return false;
    pos_ += n;
    return true;
  }

  std::string_view message_;
  size_t pos_ = 0;
};

constexpr const char* kBuiltinRules[] = {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf"};

// sentencepiece's builtin charsmaps, fetched from the library once per process. Identity is
// the empty charsmap and needs no entry.
const std::vector<std::string>& BuiltinCharsmaps() {
  static const std::vector<std::string> tables = [] {
    std::vector<std::string> out;
    for (const char* name : kBuiltinRules) {
      std::string table;
      if (sentencepiece::normalizer::Builder::GetPrecompiledCharsMap(name, &table).ok() &&
          !table.empty()) {
        out.push_back(std::move(table));
      }
    }
    return out;
  }();
  return tables;
}

bool IsBuiltinCharsmap(std::string_view charsmap) {
  if (charsmap.empty()) return true;
  for (const std::string& table : BuiltinCharsmaps()) {
    if (charsmap == table) return true;
  }
  return false;
}

// Reasons name the tokenizer as `what` ("the embedded tokenizer") or, when empty, leave it to
// the path (tokenizer.model).
std::string NotValid(const std::string& what, const std::string& detail) {
  return (what.empty() ? "" : what + " is ") + "not a valid sentencepiece model (" + detail + ")";
}
std::string Its(const std::string& what, const std::string& field) {
  return what.empty() ? field : what + "'s " + field;
}

// Every precompiled_charsmap in one NormalizerSpec must be a builtin table. Protobuf keeps the
// last of repeated occurrences (and merges repeated specs), so all of them are checked.
void CheckNormalizerSpec(std::string_view spec, const std::string& spec_name,
                         const std::string& path, const std::string& what) {
  WireReader reader(spec);
  WireRecord r;
  while (!reader.done()) {
    if (!reader.Next(&r)) {
      throw Error(path,
                  NotValid(what, spec_name + " is broken at byte " + std::to_string(reader.pos())));
    }
    if (r.field != kSpecPrecompiledCharsmap) continue;
    if (r.wire_type != kWireLengthDelimited) {
      throw Error(path, NotValid(what, spec_name + ".precompiled_charsmap is not a byte string"));
    }
    if (!IsBuiltinCharsmap(r.payload)) {
      throw Error(path, Its(what, spec_name) + " has a custom precompiled_charsmap (" +
                            std::to_string(r.payload.size()) +
                            " bytes); only sentencepiece's builtin normalization rules (nmt_nfkc, "
                            "nfkc, nmt_nfkc_cf, nfkc_cf, identity) are supported");
    }
  }
}

struct PieceFacts {
  std::string_view text;      // as protobuf parses it: the last well-typed occurrence wins
  bool user_defined = false;  // any type record says USER_DEFINED (conservative)
};

PieceFacts ReadPiece(std::string_view piece, size_t index, const std::string& path,
                     const std::string& what) {
  WireReader reader(piece);
  WireRecord r;
  PieceFacts facts;
  while (!reader.done()) {
    if (!reader.Next(&r)) {
      throw Error(path, NotValid(what, "piece " + std::to_string(index) + " is broken at byte " +
                                           std::to_string(reader.pos())));
    }
    if (r.field == kPieceText && r.wire_type == kWireLengthDelimited) facts.text = r.payload;
    // protobuf reads an enum as the low 32 bits of the varint.
    if (r.field == kPieceType && r.wire_type == kWireVarint &&
        static_cast<uint32_t>(r.value) == kPieceTypeUserDefined) {
      facts.user_defined = true;
    }
  }
  // sentencepiece builds its tries from NUL-terminated copies of the pieces: a NUL inside one
  // makes darts-clone throw from deep inside the model constructor.
  if (facts.text.find('\0') != std::string_view::npos) {
    throw Error(path, Its(what, "piece ") + std::to_string(index) + " contains a NUL byte");
  }
  return facts;
}

// The longest chain of pieces in which each is a prefix of the next. In sorted order every
// prefix of a string comes before it, and the strings that start with t form one contiguous run
// after t, so a stack of the current chain only ever needs its top compared.
size_t LongestPrefixChain(std::vector<std::string_view> pieces) {
  std::sort(pieces.begin(), pieces.end());
  std::vector<std::string_view> chain;
  size_t longest = 0;
  for (const std::string_view piece : pieces) {
    while (!chain.empty() && !piece.starts_with(chain.back())) chain.pop_back();
    chain.push_back(piece);
    longest = std::max(longest, chain.size());
  }
  return longest;
}

}  // namespace

std::string SentencepieceBuiltinCharsmap(std::string_view rule) {
  if (rule == "identity") return {};
  std::string table;
  if (!sentencepiece::normalizer::Builder::GetPrecompiledCharsMap(rule, &table).ok()) {
    throw Error("", "sentencepiece has no builtin normalization rule '" + std::string(rule) + "'");
  }
  return table;
}

std::string SentencepieceBytesToLoad(std::string_view model, const std::string& path,
                                     const std::string& what) {
  if (model.size() > kMaxModelBytes) {
    throw Error(path, (what.empty() ? "" : what + " is ") +
                          "larger than 64 MiB, too large for a sentencepiece model");
  }
  std::string kept;
  kept.reserve(model.size());
  WireReader reader(model);
  WireRecord r;
  size_t pieces = 0;
  std::vector<std::string_view> user_defined;
  while (!reader.done()) {
    if (!reader.Next(&r)) {
      throw Error(path, NotValid(what, "broken protobuf at byte " + std::to_string(reader.pos())));
    }
    if (r.field == kModelSelfTestData) continue;
    if (r.field == kModelPieces) {
      if (r.wire_type != kWireLengthDelimited) {
        throw Error(path, NotValid(what, "piece " + std::to_string(pieces) + " is not a message"));
      }
      const PieceFacts piece = ReadPiece(r.payload, pieces++, path, what);
      if (piece.user_defined) user_defined.push_back(piece.text);
    }
    if (r.field == kModelNormalizerSpec || r.field == kModelDenormalizerSpec) {
      const std::string name =
          r.field == kModelNormalizerSpec ? "normalizer_spec" : "denormalizer_spec";
      if (r.wire_type != kWireLengthDelimited) {
        throw Error(path, NotValid(what, name + " is not a message"));
      }
      CheckNormalizerSpec(r.payload, name, path, what);
    }
    kept.append(model.substr(r.begin, r.end - r.begin));
  }
  const size_t nested = LongestPrefixChain(std::move(user_defined));
  if (nested > kMaxNestedUserDefinedPieces) {
    throw Error(path, Its(what, "user-defined pieces") + " nest " + std::to_string(nested) +
                          " deep (each a prefix of the next); sentencepiece handles at most " +
                          std::to_string(kMaxNestedUserDefinedPieces));
  }
  return kept;
}

void LoadSentencepieceModel(std::string_view model, sentencepiece::SentencePieceProcessor& sp,
                            const std::string& path, const std::string& what) {
  const std::string bytes = SentencepieceBytesToLoad(model, path, what);
  bool ok = false;
  try {
    ok = sp.LoadFromSerializedProto(bytes).ok();
  } catch (const std::exception&) {
    // darts-clone reports broken keys by throwing; whatever else sentencepiece throws on a
    // model it cannot build is the same verdict.
  }
  // sentencepiece's status text is not shown: it carries its source locations.
  if (!ok) {
    throw Error(path, (what.empty() ? "" : what + " is ") + "not a valid sentencepiece model");
  }
}

void CheckTokenizerModel(std::string_view model, int64_t vocab, const std::string& path,
                         const std::string& what) {
  sentencepiece::SentencePieceProcessor sp;
  LoadSentencepieceModel(model, sp, path, what);
  if (sp.GetPieceSize() > vocab) {
    throw Error(path, (what.empty() ? "tokenizer" : what) + " has " +
                          std::to_string(sp.GetPieceSize()) +
                          " pieces but the model's vocab_size is " + std::to_string(vocab));
  }
}

}  // namespace zeroskip
