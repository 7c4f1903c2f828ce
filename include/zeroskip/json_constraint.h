// JSON mode: constrained sampling whose output is one JSON value (the server's response_format).
//
// A JsonGrammar says which JSON texts are allowed: any object (json_object), any value, or the
// instances of a JSON schema in a supported subset (compiled once per request). A JsonMatcher is
// a byte-level pushdown automaton over it: it accepts a byte only if the text so far can still be
// completed into an allowed value, and says when the value is complete. A JsonVocabulary holds
// the model's token pieces as bytes in a trie, built once per model, and finds the tokens whose
// bytes the matcher accepts from its current state. JsonConstraint ties them to the generation
// loop (GenerateConfig::constraint). Nothing here knows about sessions or HTTP.
//
// What is generated is a subset of JSON: whitespace between tokens is at most one space, or one
// newline followed by at most 4 spaces or tabs per open container, 20 in all (so a model cannot
// idle in whitespace); numbers
// are at most 24 characters with at most two exponent digits; \u escapes of UTF-16 surrogates
// are refused; nesting is at most 64 deep; enum and const values are matched in their compact
// serialization.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/generate.h"

namespace zeroskip {

class Tokenizer;

class JsonGrammar {
 public:
  // Any JSON object (OpenAI's json_object), any JSON value.
  static std::shared_ptr<const JsonGrammar> AnyObject();
  static std::shared_ptr<const JsonGrammar> AnyValue();
  // A JSON schema (its text). The subset: "type" (a name or a list of names: object, array,
  // string, number, integer, boolean, null), "properties", "required", "additionalProperties"
  // (false only, and implied), "items" (a schema), "minItems", "maxItems", "enum", "const", and
  // annotations (title, description, default, examples, $schema, $id, $comment). Throws Error
  // naming the first keyword outside it and where it is (e.g. "#/properties/name").
  static std::shared_ptr<const JsonGrammar> FromSchema(std::string_view schema_json);

  struct Property {
    std::string key;  // JSON-escaped, without the quotes
    int node;
  };
  struct Node {
    uint8_t types = 0;  // JsonMatcher's type bits
    bool open = false;  // object: any keys, any values (json_object); else only `properties`
    std::vector<Property> properties;
    uint64_t required = 0;  // bit i: properties[i] must appear
    int items = 0;          // array element's node
    int64_t min_items = 0, max_items = INT64_MAX;
    std::vector<std::string> literals;  // enum/const: the value is one of these texts
  };
  const Node& node(int i) const { return nodes_[static_cast<size_t>(i)]; }
  int root() const { return root_; }

 private:
  friend class SchemaCompiler;
  JsonGrammar();
  std::vector<Node> nodes_;  // [0]: any value
  int root_ = 0;
};

class JsonMatcher {
 public:
  enum TypeBit : uint8_t {
    kObject = 1,
    kArray = 2,
    kString = 4,
    kNumber = 8,
    kInteger = 16,
    kBoolean = 32,
    kNull = 64,
  };
  explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar);

  // Takes one more byte; false if no allowed text continues this way (then the matcher must not
  // be used further: test bytes on a copy).
  bool Push(uint8_t byte);
  bool Push(std::string_view bytes);
  // The text so far is a whole allowed value (a number may still go on).
  bool Complete() const;
  // The value is complete and no byte may follow.
  bool Finished() const { return stack_.empty(); }
  // Takes `other`'s state (same grammar) without touching the grammar's reference count: the
  // trie walk copies a matcher per node.
  void AssignState(const JsonMatcher& other) {
    stack_ = other.stack_;
    ws_ = other.ws_;
  }

  // One level of the parse: a value not yet begun, or one being read.
  struct Frame {
    uint8_t kind;
    uint8_t sub;    // where in it
    int32_t node;   // the grammar node it is a value of
    int32_t extra;  // object: the property being read; number: its length
    int64_t count;  // array: items; literal/key: bytes matched; string: bytes or hex digits left
    uint64_t set;   // object: properties seen; literal/key: candidates left; string: byte range
    const std::vector<std::string>* texts;  // literal: its candidate texts
  };

 private:
  bool InGap(const Frame& f) const;
  bool GapByte(uint8_t byte);
  bool StartValue(Frame& f, uint8_t byte);
  void ValueDone();  // pops the finished top frame and tells its parent

  std::shared_ptr<const JsonGrammar> grammar_;
  std::vector<Frame> stack_;  // innermost last
  int ws_ = 0;                // the current whitespace run: 0 none, 1 closed, 2+k newline, k more
};

// The model's token pieces as bytes, in a trie (built once per model; immutable).
class JsonVocabulary {
 public:
  // pieces[id]: the bytes of token id (empty: never allowed); eos_id < 0: the model has none.
  JsonVocabulary(const std::vector<std::string>& pieces, int64_t eos_id);
  // `vocab` ids (the logits' size) from the tokenizer's PieceBytes.
  static std::shared_ptr<const JsonVocabulary> FromTokenizer(const Tokenizer& tokenizer,
                                                             int64_t vocab, int64_t eos_id);

  // allowed[id] = 1 for each token whose bytes `matcher` accepts, and EOS when the value is
  // complete; `scratch` holds the walk's matchers, reused between calls with matchers of the
  // same grammar.
  void Allowed(const JsonMatcher& matcher, std::vector<JsonMatcher>* scratch,
               std::vector<uint8_t>* allowed) const;
  std::vector<int> AllowedTokens(const JsonMatcher& matcher) const;  // sorted ids (tests)

  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string& piece(int id) const { return pieces_[static_cast<size_t>(id)]; }

 private:
  struct TrieNode {
    uint32_t first_child = 0, next_sibling = 0;  // 0: none (the root is no one's child)
    uint32_t tokens_begin = 0, tokens_end = 0;   // into tokens_: the ids spelled by this path
    uint8_t byte = 0;
  };
  void Walk(uint32_t node, size_t depth, std::vector<JsonMatcher>* scratch,
            std::vector<uint8_t>* allowed) const;

  std::vector<std::string> pieces_;  // [vocab]
  std::vector<TrieNode> trie_;       // [0]: root (the empty prefix)
  std::vector<int> tokens_;          // ids, grouped by trie node
  size_t longest_ = 0;               // bytes of the longest piece
  int64_t eos_id_;
};

// One generation's constraint: the matcher's state and the vocabulary's trie.
class JsonConstraint : public TokenConstraint {
 public:
  JsonConstraint(std::shared_ptr<const JsonGrammar> grammar,
                 std::shared_ptr<const JsonVocabulary> vocabulary);
  bool Mask(std::span<float> logits) override;
  void Accept(int id) override;
  bool Finished() const override { return matcher_.Finished(); }

 private:
  JsonMatcher matcher_;
  std::shared_ptr<const JsonVocabulary> vocabulary_;
  std::vector<JsonMatcher> scratch_;
  std::vector<uint8_t> allowed_;  // [vocab]
};

}  // namespace zeroskip
