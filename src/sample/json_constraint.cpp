#include "zeroskip/json_constraint.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "zeroskip/error.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {

namespace {

using nlohmann::json;

enum Kind : uint8_t {
  kValue,
  kObjectFrame,
  kArrayFrame,
  kStringFrame,
  kNumberFrame,
  kLiteral,
  kKey
};
// Where an object is: after '{', in a key, before ':', in a value, after a value, after ','.
enum ObjectSub : uint8_t { kObjOpen, kObjKey, kObjColon, kObjValue, kObjAfter, kObjComma };
enum ArraySub : uint8_t { kArrOpen, kArrValue, kArrAfter, kArrComma };
enum StringSub : uint8_t { kChars, kEscape, kHex, kUtf8 };
// After '-', a leading 0, integer digits, '.', fraction digits, 'e', the exponent's sign, digits.
enum NumberSub : uint8_t { kSign, kZero, kInt, kDot, kFrac, kE, kESign, kExp };

constexpr uint8_t kAllTypes = 0x7f;
constexpr size_t kMaxStack = 64;  // nested containers
constexpr int kMaxNumberBytes = 24;
constexpr int kIndentPerLevel = 4;  // spaces or tabs after a newline, per open container
constexpr int kMaxIndent = 20;
constexpr size_t kMaxCandidates = 64;  // enum values, properties of an object (bit sets)

const std::vector<std::string> kBooleanTexts = {"true", "false"};
const std::vector<std::string> kNullText = {"null"};

uint64_t AllBits(size_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }
bool IsDigit(uint8_t c) { return c >= '0' && c <= '9'; }
bool IsHex(uint8_t c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool IsTerminal(uint8_t number_sub) {
  return number_sub == kZero || number_sub == kInt || number_sub == kFrac || number_sub == kExp;
}
// A literal's candidates of exactly `length` bytes.
bool EndsHere(const JsonMatcher::Frame& f) {
  for (uint64_t s = f.set; s; s &= s - 1) {
    if ((*f.texts)[static_cast<size_t>(std::countr_zero(s))].size() ==
        static_cast<size_t>(f.count)) {
      return true;
    }
  }
  return false;
}

}  // namespace

// ---- grammar --------------------------------------------------------------------------------

JsonGrammar::JsonGrammar() {
  Node any;
  any.types = kAllTypes;
  any.open = true;
  nodes_.push_back(std::move(any));
}

std::shared_ptr<const JsonGrammar> JsonGrammar::AnyValue() {
  return std::shared_ptr<const JsonGrammar>(new JsonGrammar());
}

std::shared_ptr<const JsonGrammar> JsonGrammar::AnyObject() {
  auto g = std::shared_ptr<JsonGrammar>(new JsonGrammar());
  Node object;
  object.types = JsonMatcher::kObject;
  object.open = true;
  g->nodes_.push_back(std::move(object));
  g->root_ = 1;
  return g;
}

class SchemaCompiler {
 public:
  explicit SchemaCompiler(JsonGrammar& g) : g_(g) {}

  int Compile(const json& schema, const std::string& where, int depth) {
    if (depth > 32) Fail(where, "the schema nests more than 32 levels");
    if (!schema.is_object()) Fail(where, "a schema must be an object");
    static const char* kAnnotations[] = {"title",   "description", "default", "examples",
                                         "$schema", "$id",         "$comment"};
    static const char* kKeywords[] = {"type",  "properties", "required", "additionalProperties",
                                      "items", "minItems",   "maxItems", "enum",
                                      "const"};
    for (const auto& [key, value] : schema.items()) {
      const auto is = [&key](const char* k) { return key == k; };
      if (std::any_of(std::begin(kAnnotations), std::end(kAnnotations), is)) continue;
      if (std::none_of(std::begin(kKeywords), std::end(kKeywords), is)) {
        throw Error("", "response_format: the keyword '" + key + "' (at " + where +
                            ") is not supported; JSON mode supports type, properties, required, "
                            "additionalProperties: false, items, minItems, maxItems, enum, const");
      }
    }
    if (std::none_of(std::begin(kKeywords), std::end(kKeywords),
                     [&](const char* k) { return schema.contains(k); })) {
      return 0;  // {}: any value
    }
    JsonGrammar::Node node;
    if (const auto t = schema.find("type"); t != schema.end()) {
      const auto add = [&](const json& name) {
        static const std::pair<const char*, uint8_t> kTypes[] = {
            {"object", JsonMatcher::kObject},   {"array", JsonMatcher::kArray},
            {"string", JsonMatcher::kString},   {"number", JsonMatcher::kNumber},
            {"integer", JsonMatcher::kInteger}, {"boolean", JsonMatcher::kBoolean},
            {"null", JsonMatcher::kNull}};
        for (const auto& [n, bit] : kTypes) {
          if (name.is_string() && name.get<std::string>() == n) {
            node.types |= bit;
            return;
          }
        }
        Fail(where + "/type",
             "'type' must name object, array, string, number, integer, boolean "
             "or null, or be a list of those");
      };
      if (t->is_array()) {
        if (t->empty()) Fail(where + "/type", "'type' is an empty list");
        for (const json& name : *t) add(name);
      } else {
        add(*t);
      }
    } else if (schema.contains("properties") || schema.contains("required")) {
      node.types = JsonMatcher::kObject;
    } else if (schema.contains("items") || schema.contains("minItems") ||
               schema.contains("maxItems")) {
      node.types = JsonMatcher::kArray;
    } else {
      node.types = kAllTypes;  // enum or const alone
    }
    // "number" already takes every integer.
    if (node.types & JsonMatcher::kNumber) node.types &= ~JsonMatcher::kInteger;

    if (schema.contains("enum") || schema.contains("const")) {
      std::vector<json> values;
      if (const auto c = schema.find("const"); c != schema.end()) values.push_back(*c);
      if (const auto e = schema.find("enum"); e != schema.end()) {
        if (!e->is_array() || e->empty()) Fail(where + "/enum", "'enum' must be a non-empty list");
        if (!values.empty()) Fail(where, "'enum' and 'const' together are not supported");
        values.assign(e->begin(), e->end());
      }
      for (const json& v : values) {
        if (!OfTypes(v, node.types)) continue;  // no instance can be both
        std::string text = v.dump();
        if (std::find(node.literals.begin(), node.literals.end(), text) == node.literals.end()) {
          node.literals.push_back(std::move(text));
        }
      }
      if (node.literals.empty()) Fail(where, "no 'enum'/'const' value has the schema's type");
      if (node.literals.size() > kMaxCandidates) {
        Fail(where + "/enum", "'enum' has more than 64 values");
      }
    }

    if (const auto a = schema.find("additionalProperties"); a != schema.end()) {
      if (!(a->is_boolean() && !a->get<bool>())) {
        Fail(where + "/additionalProperties",
             "only 'additionalProperties': false is supported (objects have only the listed "
             "properties)");
      }
    }
    const int index = static_cast<int>(g_.nodes_.size());
    g_.nodes_.push_back({});  // children come after it; filled in below
    if (const auto p = schema.find("properties"); p != schema.end()) {
      if (!p->is_object()) Fail(where + "/properties", "'properties' must be an object");
      if (p->size() > kMaxCandidates) {
        Fail(where + "/properties", "an object has more than 64 properties");
      }
      for (const auto& [key, sub] : p->items()) {
        const std::string quoted = json(key).dump();
        node.properties.push_back({quoted.substr(1, quoted.size() - 2),
                                   Compile(sub, where + "/properties/" + key, depth + 1)});
      }
    }
    if (const auto r = schema.find("required"); r != schema.end()) {
      if (!r->is_array()) Fail(where + "/required", "'required' must be a list of names");
      for (const json& name : *r) {
        const auto& props = schema.contains("properties") ? schema["properties"] : json::object();
        if (!name.is_string() || !props.contains(name.get<std::string>())) {
          Fail(where + "/required",
               "'required' names " + name.dump() + ", which is not in 'properties'");
        }
        size_t i = 0;
        for (const auto& [key, sub] : props.items()) {
          if (key == name.get<std::string>()) break;
          ++i;
        }
        node.required |= uint64_t{1} << i;
      }
    }
    if (const auto it = schema.find("items"); it != schema.end()) {
      if (!it->is_object())
        Fail(where + "/items",
             "'items' must be one schema (tuples are not "
             "supported)");
      node.items = Compile(*it, where + "/items", depth + 1);
    }
    node.min_items = Count(schema, "minItems", where, 0);
    node.max_items = Count(schema, "maxItems", where, INT64_MAX);
    if (node.min_items > node.max_items) Fail(where, "'minItems' is more than 'maxItems'");
    g_.nodes_[static_cast<size_t>(index)] = std::move(node);
    return index;
  }

 private:
  [[noreturn]] static void Fail(const std::string& where, const std::string& what) {
    throw Error("", "response_format: " + what + " (at " + where + ")");
  }

  static int64_t Count(const json& schema, const char* key, const std::string& where,
                       int64_t fallback) {
    const auto it = schema.find(key);
    if (it == schema.end()) return fallback;
    if (!it->is_number_unsigned()) {
      Fail(where + "/" + key, std::string("'") + key + "' must be an integer >= 0");
    }
    return static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX));
  }

  static bool OfTypes(const json& v, uint8_t types) {
    if (v.is_object()) return types & JsonMatcher::kObject;
    if (v.is_array()) return types & JsonMatcher::kArray;
    if (v.is_string()) return types & JsonMatcher::kString;
    if (v.is_boolean()) return types & JsonMatcher::kBoolean;
    if (v.is_null()) return types & JsonMatcher::kNull;
    if (v.is_number_integer()) return types & (JsonMatcher::kNumber | JsonMatcher::kInteger);
    return types & JsonMatcher::kNumber;
  }

  JsonGrammar& g_;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::FromSchema(std::string_view schema_json) {
  const json schema = json::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) throw Error("", "response_format: the schema is not JSON");
  auto g = std::shared_ptr<JsonGrammar>(new JsonGrammar());
  g->root_ = SchemaCompiler(*g).Compile(schema, "#", 0);
  return g;
}

// ---- matcher --------------------------------------------------------------------------------

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonGrammar> grammar)
    : grammar_(std::move(grammar)) {
  stack_.reserve(kMaxStack + 1);  // containers, and the value in the last
  stack_.push_back({kValue, 0, grammar_->root(), 0, 0, 0, nullptr});
}

bool JsonMatcher::Push(std::string_view bytes) {
  for (const char c : bytes) {
    if (!Push(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

bool JsonMatcher::Complete() const {
  if (stack_.empty()) return true;
  if (stack_.size() != 1) return false;
  const Frame& f = stack_.back();
  return (f.kind == kNumberFrame && IsTerminal(f.sub)) || (f.kind == kLiteral && EndsHere(f));
}

bool JsonMatcher::InGap(const Frame& f) const {
  switch (f.kind) {
    case kValue:
      return true;
    case kObjectFrame:
      return f.sub != kObjKey && f.sub != kObjValue;
    case kArrayFrame:
      return f.sub != kArrValue;
    default:
      return false;
  }
}

// The whitespace between two tokens: "", " ", or "\n" and an indentation of at most 4 spaces or
// tabs per open container (20 at most): pretty-printing fits, and a model cannot idle in it.
bool JsonMatcher::GapByte(uint8_t c) {
  const auto containers = std::count_if(stack_.begin(), stack_.end(), [](const Frame& f) {
    return f.kind == kObjectFrame || f.kind == kArrayFrame;
  });
  const int indent = static_cast<int>(std::min<long>(kMaxIndent, kIndentPerLevel * containers));
  if (c == '\n') {
    if (ws_ != 0) return false;
    ws_ = 2;
  } else if (ws_ >= 2 && ws_ < 2 + indent) {
    ++ws_;  // indentation
  } else if (c == ' ' && ws_ == 0) {
    ws_ = 1;
  } else {
    return false;
  }
  return true;
}

void JsonMatcher::ValueDone() {
  stack_.pop_back();
  if (stack_.empty()) return;
  Frame& parent = stack_.back();
  if (parent.kind == kObjectFrame) {
    if (parent.sub == kObjKey) {
      parent.sub = kObjColon;
    } else {
      if (parent.extra >= 0) parent.set |= uint64_t{1} << parent.extra;
      parent.sub = kObjAfter;
    }
  } else if (parent.kind == kArrayFrame) {
    ++parent.count;
    parent.sub = kArrAfter;
  }
}

// The first byte of a value: the Value frame becomes the frame of what it starts.
bool JsonMatcher::StartValue(Frame& f, uint8_t c) {
  const JsonGrammar::Node& node = grammar_->node(f.node);
  const auto literal = [&](const std::vector<std::string>* texts) {
    f = {kLiteral, 0, f.node, 0, 0, AllBits(texts->size()), texts};
    return Push(c);  // the literal frame matches the byte itself
  };
  if (!node.literals.empty()) return literal(&node.literals);
  if (c == '{' && (node.types & kObject) && stack_.size() <= kMaxStack) {
    f = {kObjectFrame, kObjOpen, f.node, -1, 0, 0, nullptr};
  } else if (c == '[' && (node.types & kArray) && stack_.size() <= kMaxStack) {
    f = {kArrayFrame, kArrOpen, f.node, 0, 0, 0, nullptr};
  } else if (c == '"' && (node.types & kString)) {
    f = {kStringFrame, kChars, f.node, 0, 0, 0, nullptr};
  } else if ((c == '-' || IsDigit(c)) && (node.types & (kNumber | kInteger))) {
    f = {kNumberFrame, c == '-' ? kSign : c == '0' ? kZero : kInt, f.node, 1, 0, 0, nullptr};
  } else if ((c == 't' || c == 'f') && (node.types & kBoolean)) {
    return literal(&kBooleanTexts);
  } else if (c == 'n' && (node.types & kNull)) {
    return literal(&kNullText);
  } else {
    return false;
  }
  return true;
}

bool JsonMatcher::Push(uint8_t c) {
  for (;;) {  // a number or literal that `c` ends is popped and `c` goes to its parent
    if (stack_.empty()) return false;
    Frame& f = stack_.back();
    const bool space = c == ' ' || c == '\t' || c == '\n';
    if (space && InGap(f)) return GapByte(c);
    ws_ = 0;
    const JsonGrammar::Node& node = grammar_->node(f.node);
    switch (f.kind) {
      case kValue:
        return StartValue(f, c);

      case kObjectFrame: {
        const uint64_t all = AllBits(node.properties.size());
        switch (f.sub) {
          case kObjOpen:
          case kObjComma:
            if (c == '}' && f.sub == kObjOpen && (f.set & node.required) == node.required) {
              ValueDone();
              return true;
            }
            if (c != '"') return false;
            f.sub = kObjKey;
            if (node.open) {
              stack_.push_back({kStringFrame, kChars, 0, 0, 0, 0, nullptr});
            } else {
              const uint64_t left = all & ~f.set;
              if (left == 0) return false;
              stack_.push_back({kKey, 0, f.node, 0, 0, left, nullptr});
            }
            return true;
          case kObjColon:
            if (c != ':') return false;
            f.sub = kObjValue;
            stack_.push_back({kValue, 0, node.open ? 0 : node.properties[size_t(f.extra)].node, 0,
                              0, 0, nullptr});
            return true;
          case kObjAfter:
            if (c == '}' && (f.set & node.required) == node.required) {
              ValueDone();
              return true;
            }
            if (c != ',' || (!node.open && (all & ~f.set) == 0)) return false;
            f.sub = kObjComma;
            return true;
        }
        break;
      }

      case kKey: {
        const auto& props = node.properties;
        if (c == '"') {
          for (uint64_t s = f.set; s; s &= s - 1) {
            const int i = std::countr_zero(s);
            if (props[size_t(i)].key.size() == static_cast<size_t>(f.count)) {
              stack_.pop_back();
              stack_.back().extra = i;
              stack_.back().sub = kObjColon;
              return true;
            }
          }
          // An escaped quote inside a name continues it (no name can end there, see below).
        }
        uint64_t next = 0;
        for (uint64_t s = f.set; s; s &= s - 1) {
          const int i = std::countr_zero(s);
          const std::string& key = props[size_t(i)].key;
          if (key.size() > static_cast<size_t>(f.count) &&
              static_cast<uint8_t>(key[size_t(f.count)]) == c) {
            next |= uint64_t{1} << i;
          }
        }
        if (next == 0) return false;
        f.set = next;
        ++f.count;
        return true;
      }

      case kArrayFrame:
        switch (f.sub) {
          case kArrOpen:
          case kArrComma:
            if (c == ']' && f.sub == kArrOpen && node.min_items == 0) {
              ValueDone();
              return true;
            }
            if (f.count >= node.max_items) return false;
            f.sub = kArrValue;
            stack_.push_back({kValue, 0, node.items, 0, 0, 0, nullptr});
            continue;  // the byte starts the item
          case kArrAfter:
            if (c == ']' && f.count >= node.min_items) {
              ValueDone();
              return true;
            }
            if (c != ',' || f.count >= node.max_items) return false;
            f.sub = kArrComma;
            return true;
        }
        break;

      case kStringFrame:
        switch (f.sub) {
          case kChars:
            if (c == '"') {
              ValueDone();
            } else if (c == '\\') {
              f.sub = kEscape;
            } else if (c < 0x20) {
              return false;
            } else if (c >= 0x80) {
              // UTF-8: the continuation bytes left and the range of the next one (no overlong
              // forms, no surrogates, nothing past U+10FFFF).
              uint8_t lo = 0x80, hi = 0xbf;
              if (c >= 0xc2 && c <= 0xdf) {
                f.count = 1;
              } else if (c >= 0xe0 && c <= 0xef) {
                f.count = 2;
                if (c == 0xe0) lo = 0xa0;
                if (c == 0xed) hi = 0x9f;
              } else if (c >= 0xf0 && c <= 0xf4) {
                f.count = 3;
                if (c == 0xf0) lo = 0x90;
                if (c == 0xf4) hi = 0x8f;
              } else {
                return false;
              }
              f.sub = kUtf8;
              f.set = uint64_t{lo} << 8 | hi;
            }
            return true;
          case kUtf8:
            if (uint64_t{c} < (f.set >> 8) || uint64_t{c} > (f.set & 0xff)) return false;
            f.set = 0x80bf;
            if (--f.count == 0) f.sub = kChars;
            return true;
          case kEscape:
            if (c == 'u') {
              f.sub = kHex;
              f.count = 4;
              f.set = 0;
              return true;
            }
            if (std::string_view("\"\\/bfnrt").find(static_cast<char>(c)) ==
                std::string_view::npos) {
              return false;
            }
            f.sub = kChars;
            return true;
          case kHex:
            if (!IsHex(c)) return false;
            // \uD800-\uDFFF (surrogates) are refused: a lone one is not text.
            if (f.count == 4) f.set = (c == 'd' || c == 'D');
            if (f.count == 3 && f.set && !(c >= '0' && c <= '7')) return false;
            if (--f.count == 0) f.sub = kChars;
            return true;
        }
        break;

      case kNumberFrame: {
        const bool integer = !(node.types & kNumber);
        const int length = f.extra + 1;
        // A non-terminal state needs room for the digit that completes it.
        const auto go = [&](uint8_t sub) {
          if (length > kMaxNumberBytes || (!IsTerminal(sub) && length >= kMaxNumberBytes)) {
            return false;
          }
          f.sub = sub;
          f.extra = length;
          return true;
        };
        const bool digit = IsDigit(c);
        switch (f.sub) {
          case kSign:
            if (digit) return go(c == '0' ? kZero : kInt);
            return false;
          case kZero:
          case kInt:
          case kFrac:
            if (digit && f.sub != kZero) return go(f.sub);
            if (digit) return false;  // no leading zeros
            if (c == '.' && f.sub != kFrac && !integer) return go(kDot);
            if ((c == 'e' || c == 'E') && !integer) return go(kE);
            break;
          case kDot:
            return digit && go(kFrac);
          case kE:
            if (c == '+' || c == '-') return go(kESign);
            if (digit) {
              f.count = 1;  // exponent digits
              return go(kExp);
            }
            return false;
          case kESign:
            if (digit) {
              f.count = 1;
              return go(kExp);
            }
            return false;
          case kExp:
            if (digit) {
              if (f.count >= 2) return false;
              ++f.count;
              return go(kExp);
            }
            break;
        }
        ValueDone();  // `c` ends the number
        continue;
      }

      case kLiteral: {
        const auto& texts = *f.texts;
        const size_t at = static_cast<size_t>(f.count);
        uint64_t next = 0;
        for (uint64_t s = f.set; s; s &= s - 1) {
          const int i = std::countr_zero(s);
          if (texts[size_t(i)].size() > at && static_cast<uint8_t>(texts[size_t(i)][at]) == c) {
            next |= uint64_t{1} << i;
          }
        }
        if (next == 0) {
          if (!EndsHere(f)) return false;
          ValueDone();  // `c` follows a complete literal (a number that could have gone on)
          continue;
        }
        f.set = next;
        ++f.count;
        bool longer = false;
        for (uint64_t s = f.set; s; s &= s - 1) {
          longer |= texts[size_t(std::countr_zero(s))].size() > at + 1;
        }
        if (!longer) ValueDone();
        return true;
      }
    }
    return false;  // a frame in no known state
  }
}

// ---- vocabulary -----------------------------------------------------------------------------

JsonVocabulary::JsonVocabulary(const std::vector<std::string>& pieces, int64_t eos_id)
    : pieces_(pieces), eos_id_(eos_id) {
  std::vector<int> order(pieces_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return pieces_[size_t(a)] < pieces_[size_t(b)] ||
           (pieces_[size_t(a)] == pieces_[size_t(b)] && a < b);
  });
  // Sorted pieces share prefixes with their predecessor: `path` holds the trie nodes of the
  // previous piece, and a new piece branches off where it stops matching.
  trie_.emplace_back();
  std::vector<uint32_t> path = {0};
  std::string previous;
  for (const int id : order) {
    const std::string& p = pieces_[size_t(id)];
    if (p.empty()) continue;  // nothing to match: never allowed
    longest_ = std::max(longest_, p.size());
    size_t common = 0;
    while (common < p.size() && common < previous.size() && p[common] == previous[common]) {
      ++common;
    }
    path.resize(common + 1);
    for (size_t i = common; i < p.size(); ++i) {
      const auto child = static_cast<uint32_t>(trie_.size());
      TrieNode n;
      n.byte = static_cast<uint8_t>(p[i]);
      n.tokens_begin = n.tokens_end = static_cast<uint32_t>(tokens_.size());
      trie_.push_back(n);
      TrieNode& parent = trie_[path.back()];
      if (parent.first_child == 0) {
        parent.first_child = child;
      } else {  // after the last child, which has the largest byte so far
        uint32_t last = parent.first_child;
        while (trie_[last].next_sibling != 0) last = trie_[last].next_sibling;
        trie_[last].next_sibling = child;
      }
      path.push_back(child);
    }
    // A piece sorts before the pieces it prefixes: each node's ids are pushed one after another.
    TrieNode& end = trie_[path.back()];
    tokens_.push_back(id);
    end.tokens_end = static_cast<uint32_t>(tokens_.size());
    previous = p;
  }
}

std::shared_ptr<const JsonVocabulary> JsonVocabulary::FromTokenizer(const Tokenizer& tokenizer,
                                                                    int64_t vocab, int64_t eos_id) {
  std::vector<std::string> pieces(static_cast<size_t>(vocab));
  const int known = tokenizer.vocab_size();
  for (int id = 0; id < vocab && id < known; ++id) pieces[size_t(id)] = tokenizer.PieceBytes(id);
  return std::make_shared<JsonVocabulary>(pieces, eos_id);
}

void JsonVocabulary::Walk(uint32_t node, size_t depth, std::vector<JsonMatcher>* scratch,
                          std::vector<uint8_t>* allowed) const {
  for (uint32_t child = trie_[node].first_child; child != 0; child = trie_[child].next_sibling) {
    JsonMatcher& m = (*scratch)[depth + 1];
    m.AssignState((*scratch)[depth]);
    if (!m.Push(trie_[child].byte)) continue;
    const TrieNode& t = trie_[child];
    for (uint32_t i = t.tokens_begin; i < t.tokens_end; ++i) (*allowed)[size_t(tokens_[i])] = 1;
    if (t.first_child != 0) Walk(child, depth + 1, scratch, allowed);
  }
}

void JsonVocabulary::Allowed(const JsonMatcher& matcher, std::vector<JsonMatcher>* scratch,
                             std::vector<uint8_t>* allowed) const {
  allowed->assign(pieces_.size(), 0);
  if (scratch->size() < longest_ + 1) scratch->resize(longest_ + 1, matcher);
  (*scratch)[0] = matcher;
  Walk(0, 0, scratch, allowed);
  if (eos_id_ >= 0 && eos_id_ < size() && matcher.Complete()) (*allowed)[size_t(eos_id_)] = 1;
}

std::vector<int> JsonVocabulary::AllowedTokens(const JsonMatcher& matcher) const {
  std::vector<JsonMatcher> scratch;
  std::vector<uint8_t> allowed;
  Allowed(matcher, &scratch, &allowed);
  std::vector<int> ids;
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (allowed[i]) ids.push_back(static_cast<int>(i));
  }
  return ids;
}

// ---- constraint -----------------------------------------------------------------------------

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonGrammar> grammar,
                               std::shared_ptr<const JsonVocabulary> vocabulary)
    : matcher_(std::move(grammar)), vocabulary_(std::move(vocabulary)) {}

bool JsonConstraint::Mask(std::span<float> logits) {
  vocabulary_->Allowed(matcher_, &scratch_, &allowed_);
  bool any = false;
  const size_t n = std::min(logits.size(), allowed_.size());
  for (size_t i = 0; i < n; ++i) {
    if (allowed_[i]) {
      any = true;
    } else {
      logits[i] = -std::numeric_limits<float>::infinity();
    }
  }
  for (size_t i = n; i < logits.size(); ++i) logits[i] = -std::numeric_limits<float>::infinity();
  return any;
}

void JsonConstraint::Accept(int id) {
  // Mask allowed it, so every byte is accepted.
  if (id >= 0 && id < vocabulary_->size()) matcher_.Push(vocabulary_->piece(id));
}

}  // namespace zeroskip
