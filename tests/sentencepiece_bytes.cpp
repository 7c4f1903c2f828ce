#include "sentencepiece_bytes.h"

#include <stdexcept>

namespace zeroskip::testing {
namespace {

constexpr uint32_t kCharsmapField = 2;
constexpr uint32_t kSelfTestDataField = 4;

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}

uint64_t ReadVarint(std::string_view s, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    if (pos >= s.size() || shift > 63) throw std::runtime_error("bad varint in test model");
    const auto b = static_cast<uint8_t>(s[pos++]);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (b < 0x80) return v;
  }
}

// Calls fn(field, whole_record) for each record of `message`.
template <typename Fn>
void ForEachRecord(std::string_view message, Fn fn) {
  size_t pos = 0;
  while (pos < message.size()) {
    const size_t begin = pos;
    const uint64_t tag = ReadVarint(message, pos);
    switch (tag & 7) {
      case 0:
        ReadVarint(message, pos);
        break;
      case 1:
        pos += 8;
        break;
      case 2:
        pos += ReadVarint(message, pos);
        break;
      case 5:
        pos += 4;
        break;
      default:
        throw std::runtime_error("unexpected wire type in test model");
    }
    if (pos > message.size()) throw std::runtime_error("truncated test model");
    fn(static_cast<uint32_t>(tag >> 3), message.substr(begin, pos - begin));
  }
}

// The payload of a length-delimited record.
std::string_view Payload(std::string_view record) {
  size_t pos = 0;
  ReadVarint(record, pos);
  const uint64_t n = ReadVarint(record, pos);
  return record.substr(pos, n);
}

std::string LittleEndian32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

}  // namespace

std::string ProtoBytesField(uint32_t field, std::string_view payload) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(payload.size()) +
         std::string(payload);
}

std::string OutOfRangeTrieCharsmap() {
  // darts-clone unit: offset = (unit >> 10) << ((unit & (1 << 9)) >> 6), so this root's
  // children start 0x3FFFFF << 8 units (~4 GB) away; the trie itself is one unit.
  const uint32_t root = (0x3FFFFFu << 10) | (1u << 9);
  const std::string trie = LittleEndian32(root);
  const std::string normalized("\0", 1);
  return LittleEndian32(static_cast<uint32_t>(trie.size())) + trie + normalized;
}

std::string WithCharsmap(std::string_view model, std::string_view charsmap, uint32_t spec_field) {
  std::string out;
  bool replaced = false;
  ForEachRecord(model, [&](uint32_t field, std::string_view record) {
    if (field != spec_field || replaced) {
      out += record;
      return;
    }
    std::string spec;
    ForEachRecord(Payload(record), [&](uint32_t f, std::string_view r) {
      if (f != kCharsmapField) spec += r;
    });
    out += ProtoBytesField(spec_field, spec + ProtoBytesField(kCharsmapField, charsmap));
    replaced = true;
  });
  if (!replaced) out += ProtoBytesField(spec_field, ProtoBytesField(kCharsmapField, charsmap));
  return out;
}

std::string WithPiece(std::string_view model, std::string_view text, int type) {
  constexpr uint32_t kPiecesField = 1, kTypeField = 3;
  const std::string piece =
      ProtoBytesField(1, text) + Varint(kTypeField << 3) + Varint(static_cast<uint64_t>(type));
  return std::string(model) + ProtoBytesField(kPiecesField, piece);
}

std::string WithSelfTestSample(std::string_view model, std::string_view input,
                               std::string_view expected) {
  const std::string sample = ProtoBytesField(1, input) + ProtoBytesField(2, expected);
  return std::string(model) + ProtoBytesField(kSelfTestDataField, ProtoBytesField(1, sample));
}

}  // namespace zeroskip::testing
