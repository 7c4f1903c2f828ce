// JSON mode's automaton and token mask against hand-written cases; every valid case is also
// parsed by nlohmann::json, the independent reference.
#include "zeroskip/json_constraint.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <nlohmann/json.hpp>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// The whole text is accepted and complete.
bool Accepts(const std::shared_ptr<const JsonGrammar>& g, std::string_view text) {
  JsonMatcher m(g);
  return m.Push(text) && m.Complete();
}

bool ParsesAsJson(std::string_view text) {
  return !nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false).is_discarded();
}

const char* kValid[] = {
    "{}",
    "[]",
    "0",
    "-0",
    "12",
    "-3.25",
    "1e5",
    "1E+05",
    "2.5e-3",
    "true",
    "false",
    "null",
    "\"\"",
    "\"plain\"",
    "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
    "\"\\u00e9\\u20AC\"",
    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
    "{\"a\":1}",
    "{ \"a\" : [1, 2.5, \"x\", true, null, {\"b\": []}] }",
    "{\n  \"name\": \"Romeo\",\n  \"age\": 16\n}",
    "[[[[]]]]",
    "{\"a\":{\"a\":{\"a\":{}}}}",
    " {\"k\": \"v\"}",
    "{\"\": 0, \"a\\\"b\": -1}",
    "[1,\n\t2]",
};

const char* kInvalid[] = {
    "",          // nothing
    "{",         // unclosed
    "{\"a\"}",   // no value
    "{\"a\":}",  // no value
    "{\"a\":1,}",
    "[1,]",
    "[,1]",
    "{a:1}",
    "{'a':1}",
    "01",
    "1.",
    ".5",
    "-",
    "1e",
    "+1",
    "tru",
    "truee",
    "nul",
    "\"unterminated",
    "\"bad \\x escape\"",
    "\"\\u12g4\"",
    "\"tab\tinside\"",
    "\"line\nbreak\"",
    "\"\xc3\"",              // truncated UTF-8
    "\"\xc0\xaf\"",          // overlong
    "\"\xed\xa0\x80\"",      // a surrogate in UTF-8
    "\"\xf4\x90\x80\x80\"",  // past U+10FFFF
    "{}{}",
    "[] []",
    "{\"a\":1 \"b\":2}",
    "[1 2]",
};

// Valid JSON that JSON mode never generates (its bounds), so it must reject it too.
const char* kValidOutsideSubset[] = {
    "{  \"a\": 1}",               // two spaces in a row
    "{\n\n\"a\": 1}",             // two newlines
    "{\"a\": 1}\n",               // whitespace after the value
    "\"\\ud83d\\ude00\"",         // UTF-16 surrogates
    "1e100",                      // three exponent digits
    "1234567890123456789012345",  // 25 characters
    "\r\n{}",                     // carriage return
};

TEST(JsonMatcherTest, AcceptsValidJson) {
  const auto any = JsonGrammar::AnyValue();
  for (const char* text : kValid) {
    EXPECT_TRUE(ParsesAsJson(text)) << "the case itself is not JSON: " << text;
    EXPECT_TRUE(Accepts(any, text)) << text;
  }
}

TEST(JsonMatcherTest, RejectsInvalidJson) {
  const auto any = JsonGrammar::AnyValue();
  for (const char* text : kInvalid) {
    EXPECT_FALSE(ParsesAsJson(text)) << "the case itself is JSON: " << text;
    EXPECT_FALSE(Accepts(any, text)) << text;
  }
  for (const char* text : kValidOutsideSubset) {
    EXPECT_TRUE(ParsesAsJson(text)) << text;
    EXPECT_FALSE(Accepts(any, text)) << text;
  }
}

TEST(JsonMatcherTest, JsonObjectWantsAnObjectAtTheTop) {
  const auto object = JsonGrammar::AnyObject();
  EXPECT_TRUE(Accepts(object, "{\"a\": [1, {\"b\": null}]}"));
  for (const char* text : {"[]", "1", "\"s\"", "true", "null"}) {
    EXPECT_FALSE(Accepts(object, text)) << text;
  }
}

TEST(JsonMatcherTest, CompleteAndFinished) {
  JsonMatcher number(JsonGrammar::AnyValue());
  ASSERT_TRUE(number.Push("12"));
  EXPECT_TRUE(number.Complete());
  EXPECT_FALSE(number.Finished());  // 123 would go on
  ASSERT_TRUE(number.Push("."));
  EXPECT_FALSE(number.Complete());

  JsonMatcher object(JsonGrammar::AnyObject());
  ASSERT_TRUE(object.Push("{\"a\": 1"));
  EXPECT_FALSE(object.Complete());
  ASSERT_TRUE(object.Push("}"));
  EXPECT_TRUE(object.Complete());
  EXPECT_TRUE(object.Finished());
  EXPECT_FALSE(JsonMatcher(object).Push(' '));  // nothing after the value
}

TEST(JsonMatcherTest, WhitespaceIsBounded) {
  const auto any = JsonGrammar::AnyValue();
  // Up to 4 spaces or tabs of indentation per open container, 20 in all.
  EXPECT_TRUE(Accepts(any, "[\n    1]"));
  EXPECT_FALSE(Accepts(any, "[\n     1]"));
  EXPECT_TRUE(Accepts(any, "[[\n\t\t\t\t  \t\t1]]"));
  EXPECT_FALSE(Accepts(any, "[[\n         1]]"));
  EXPECT_TRUE(Accepts(any, "[[[[[[\n" + std::string(20, ' ') + "1]]]]]]"));
  EXPECT_FALSE(Accepts(any, "[[[[[[\n" + std::string(21, ' ') + "1]]]]]]"));
  EXPECT_TRUE(Accepts(any, "\n1"));
  EXPECT_FALSE(Accepts(any, "\n 1"));  // no indentation outside every container
  EXPECT_TRUE(Accepts(any, "[1 ,\n\t2 ]"));
  EXPECT_FALSE(Accepts(any, "[1  ]"));
}

std::string Repeat(std::string_view piece, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += piece;
  return out;
}

// 64 nested containers, arrays or objects, and not 65.
TEST(JsonMatcherTest, NestingIsBounded) {
  const auto any = JsonGrammar::AnyValue();
  EXPECT_TRUE(Accepts(any, std::string(64, '[') + std::string(64, ']')));
  EXPECT_FALSE(Accepts(any, std::string(65, '[') + std::string(65, ']')));
  EXPECT_TRUE(Accepts(any, Repeat("{\"a\":", 64) + "1" + std::string(64, '}')));
  EXPECT_FALSE(Accepts(any, Repeat("{\"a\":", 65) + "1" + std::string(65, '}')));
}

// A number of 24 characters and not 25, whichever character ends it; the 24th may not leave it
// unfinished.
TEST(JsonMatcherTest, NumberLengthIsBounded) {
  const auto any = JsonGrammar::AnyValue();
  EXPECT_TRUE(Accepts(any, std::string(24, '7')));
  EXPECT_FALSE(Accepts(any, std::string(25, '7')));
  EXPECT_TRUE(Accepts(any, std::string("-").append(23, '7')));
  EXPECT_TRUE(Accepts(any, std::string(22, '7') + ".5"));
  JsonMatcher unfinished(any);  // the '.' would need a digit past the limit
  EXPECT_TRUE(unfinished.Push(std::string(23, '7')));
  EXPECT_FALSE(unfinished.Push("."));
  EXPECT_FALSE(Accepts(any, std::string(23, '7') + ".5"));
}

// ---- schemas ----------------------------------------------------------------------------------

struct SchemaCase {
  const char* schema;
  std::vector<const char*> accepted, rejected;
};

const SchemaCase kSchemaCases[] = {
    {R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
         "required": ["name", "age"], "additionalProperties": false})",
     {R"({"name": "Juliet", "age": 13})", R"({"age": 13, "name": ""})",
      R"({ "name" : "a\"b", "age" : -2 })"},
     {R"({"name": "Juliet"})", R"({"name": "J", "age": 13.5})", R"({"name": 1, "age": 1})",
      R"({"name": "J", "age": 1, "extra": 1})", R"({"name": "J", "name": "K", "age": 1})",
      R"({"nam": "J", "age": 1})", R"({"names": "J", "age": 1})", R"(["name", "age"])",
      R"({"name": "J", "age": 1e2})"}},
    {R"({"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}}})",
     {"{}", R"({"a": true})", R"({"b": null, "a": false})"},
     {R"({"a": 1})", R"({"b": false})", R"({"c": null})"}},
    {R"({"enum": ["red", "green", 7, 70, true, null]})",
     {R"("red")", R"("green")", "7", "70", "true", "null"},
     {R"("blue")", R"("re")", "77", "7.0", "false", R"("Red")"}},
    {R"({"type": "string", "enum": ["a", 1]})", {R"("a")"}, {"1"}},
    {R"({"const": {"k": [1, 2]}})", {R"({"k":[1,2]})"}, {R"({"k":[1,3]})", R"({"k":[1]})"}},
    {R"({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3})",
     {"[1]", "[1, 2.5, -3e2]"},
     {"[]", "[1, 2, 3, 4]", R"(["1"])", "[1,]"}},
    {R"({"type": "array", "maxItems": 0})", {"[]"}, {"[1]"}},
    {R"({"type": ["string", "null"]})", {R"("x")", "null"}, {"1", "{}", "true"}},
    {R"({"type": "object", "properties": {"items": {"type": "array", "items": {
         "type": "object", "properties": {"id": {"type": "integer"}, "tags": {"type": "array",
         "items": {"enum": ["x", "y"]}}}, "required": ["id"]}}}, "required": ["items"]})",
     {R"({"items": []})", R"({"items": [{"id": 1}, {"tags": ["x", "y", "x"], "id": 2}]})"},
     {R"({"items": [{}]})", R"({"items": [{"id": 1, "tags": ["z"]}]})", "{}"}},
    {R"({"type": "object", "properties": {"s\"q": {"type": "integer"}}, "required": ["s\"q"]})",
     {R"({"s\"q": 1})"},
     {R"({"s": 1})", R"({"s\"": 1})"}},
    {"{}", {"1", R"({"any": [true]})"}, {"{", ""}},
    {R"({"type": "integer"})", {"0", "-12"}, {"1.5", "1e3", "01"}},
    {R"({"type": "number"})", {"0", "1.5", "-1e3"}, {"\"1\"", "NaN", "Infinity"}},
};

TEST(JsonSchemaTest, AcceptsInstancesAndRejectsTheRest) {
  for (const SchemaCase& c : kSchemaCases) {
    const auto g = JsonGrammar::FromSchema(c.schema);
    for (const char* text : c.accepted) {
      EXPECT_TRUE(ParsesAsJson(text)) << text;
      EXPECT_TRUE(Accepts(g, text)) << c.schema << " should accept " << text;
    }
    for (const char* text : c.rejected) {
      EXPECT_FALSE(Accepts(g, text)) << c.schema << " should reject " << text;
    }
  }
}

// An enum of 64 values and an object of 64 properties compile (the candidates are bit sets of
// 64), 65 are refused; so is a schema nesting 33 levels below the root, not one of 32.
TEST(JsonSchemaTest, CandidateAndNestingLimits) {
  const auto values = [](int n) {
    nlohmann::json e = nlohmann::json::array();
    for (int i = 0; i < n; ++i) e.push_back(i);
    return nlohmann::json{{"enum", e}}.dump();
  };
  const auto properties = [](int n) {
    nlohmann::json p = nlohmann::json::object();
    for (int i = 0; i < n; ++i) p[std::string("p").append(std::to_string(i))] = {{"type", "integer"}};
    return nlohmann::json{{"type", "object"}, {"properties", p}, {"required", {"p63"}}}.dump();
  };
  const auto nested = [](int levels) {
    nlohmann::json s = {{"type", "integer"}};
    for (int i = 0; i < levels; ++i) s = {{"type", "array"}, {"items", s}};
    return s.dump();
  };
  const auto refusal = [](const std::string& schema) -> std::string {
    try {
      JsonGrammar::FromSchema(schema);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(refusal(values(64)), "");
  EXPECT_TRUE(Accepts(JsonGrammar::FromSchema(values(64)), "63"));
  EXPECT_NE(refusal(values(65)).find("more than 64 values"), std::string::npos);
  EXPECT_EQ(refusal(properties(64)), "");
  EXPECT_NE(refusal(properties(65)).find("more than 64 properties"), std::string::npos);
  EXPECT_EQ(refusal(nested(32)), "");
  EXPECT_TRUE(Accepts(JsonGrammar::FromSchema(nested(32)), std::string(32, '[') + std::string(32, ']')));
  EXPECT_NE(refusal(nested(33)).find("nests more than 32 levels"), std::string::npos);
}

// maxItems is enforced at the comma: after the last item allowed, a ',' is refused (it could
// only lead to a dead end, which the token mask would then offer).
TEST(JsonSchemaTest, NoCommaAfterMaxItems) {
  const auto three = JsonGrammar::FromSchema(R"({"type": "array", "maxItems": 3})");
  JsonMatcher m(three);
  EXPECT_TRUE(m.Push("[1, 2"));
  EXPECT_TRUE(m.Push(","));
  EXPECT_TRUE(m.Push(" 3"));
  EXPECT_FALSE(m.Push(","));
  EXPECT_TRUE(Accepts(three, "[1, 2, 3]"));
}

TEST(JsonSchemaTest, RefusesWhatTheSubsetDoesNotCover) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type": "string", "pattern": "^a"})", "'pattern'"},
      {R"({"$ref": "#/$defs/x"})", "'$ref'"},
      {R"({"anyOf": [{"type": "string"}]})", "'anyOf'"},
      {R"({"oneOf": [{"type": "string"}]})", "'oneOf'"},
      {R"({"type": "string", "format": "date"})", "'format'"},
      {R"({"type": "string", "minLength": 1})", "'minLength'"},
      {R"({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}})",
       "#/properties/a"},
      {R"({"type": "object", "additionalProperties": true})", "additionalProperties"},
      {R"({"type": "object", "additionalProperties": {"type": "string"}})", "additionalProperties"},
      {R"({"type": "date"})", "'type'"},
      {R"({"type": "object", "properties": {}, "required": ["a"]})", "'required'"},
      {R"({"type": "array", "items": [{"type": "string"}]})", "'items'"},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "'minItems'"},
      {R"({"enum": []})", "'enum'"},
      {R"({"type": "integer", "enum": ["a"]})", "'enum'"},
      {R"(["not", "a", "schema"])", "must be an object"},
      {"{", "not JSON"},
  };
  for (const auto& [schema, needle] : cases) {
    try {
      JsonGrammar::FromSchema(schema);
      ADD_FAILURE() << "accepted " << schema;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << schema << ": " << e.what();
    }
  }
}

// ---- token mask -------------------------------------------------------------------------------

// A hand-made vocabulary; id 0 is EOS (no bytes), id 1 a control piece (no bytes either).
const std::vector<std::string> kPieces = {
    "",    "",    "{",  "}", "\"", "a", "\"a\"", ":",    ",",    " ",   "  ", "1",  "12", "true",
    "{\"", "\"}", "\n", "x", "]",  "[", "\"a",   "\xc3", "\xa9", "\\u", "e",  "1.", "{}", "\n  "};

std::vector<int> AllowedAfter(const std::shared_ptr<const JsonGrammar>& g, const JsonVocabulary& v,
                              std::string_view text) {
  JsonMatcher m(g);
  EXPECT_TRUE(m.Push(text)) << text;
  return v.AllowedTokens(m);
}

TEST(JsonTokenMaskTest, PinnedAllowedSets) {
  const JsonVocabulary vocab(kPieces, /*eos_id=*/0);
  const auto object = JsonGrammar::AnyObject();
  // The start: an object opens, or one gap of whitespace (no indentation: nothing is open).
  EXPECT_EQ(AllowedAfter(object, vocab, ""), (std::vector<int>{2, 9, 14, 16, 26}));
  // After '{': a key, the end, whitespace. `"}` and `"a` begin keys; `"a"` is a whole key.
  EXPECT_EQ(AllowedAfter(object, vocab, "{"), (std::vector<int>{3, 4, 6, 9, 15, 16, 20, 27}));
  // Inside a key: any string content, and the closing quote (but `"a"`, `"}` and `"a` put a byte
  // where ':' must come). Not a raw newline; `\u` is an escape's start; 0xC3 starts a two-byte
  // character, 0xA9 alone cannot.
  EXPECT_EQ(
      AllowedAfter(object, vocab, "{\"k"),
      (std::vector<int>{2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19, 21, 23, 24, 25, 26}));
  // Mid-character: only the continuation byte.
  EXPECT_EQ(AllowedAfter(object, vocab, "{\"k\xc3"), (std::vector<int>{22}));
  // A value after ':' and one space: no second space; `"}` is a string that starts with '}'.
  EXPECT_EQ(AllowedAfter(object, vocab, "{\"k\": "),
            (std::vector<int>{2, 4, 6, 11, 12, 13, 14, 15, 19, 20, 25, 26}));
  // After the number 1: more digits or what ends it; no EOS (the object is open).
  EXPECT_EQ(AllowedAfter(object, vocab, "{\"k\":1"),
            (std::vector<int>{3, 8, 9, 11, 12, 16, 24, 25, 27}));
  // The object is complete: only EOS.
  EXPECT_EQ(AllowedAfter(object, vocab, "{\"k\":1}"), (std::vector<int>{0}));

  // A top-level number may end (EOS) or go on.
  const auto any = JsonGrammar::AnyValue();
  EXPECT_EQ(AllowedAfter(any, vocab, "1"), (std::vector<int>{0, 11, 12, 24, 25}));
}

TEST(JsonTokenMaskTest, SchemaMasksKeysAndValues) {
  const JsonVocabulary vocab(kPieces, /*eos_id=*/0);
  const auto g = JsonGrammar::FromSchema(
      R"({"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]})");
  // Only the key "a" (no end before it).
  EXPECT_EQ(AllowedAfter(g, vocab, "{"), (std::vector<int>{4, 6, 9, 16, 20, 27}));
  EXPECT_EQ(AllowedAfter(g, vocab, "{\""), (std::vector<int>{5}));
  // The value is a boolean: `true` whole, nothing else here.
  EXPECT_EQ(AllowedAfter(g, vocab, "{\"a\":"), (std::vector<int>{9, 13, 16, 27}));
  // No second property exists: no ','.
  EXPECT_EQ(AllowedAfter(g, vocab, "{\"a\":true"), (std::vector<int>{3, 9, 16, 27}));
}

TEST(JsonTokenMaskTest, ConstraintMasksLogits) {
  auto vocab = std::make_shared<JsonVocabulary>(kPieces, 0);
  JsonConstraint constraint(JsonGrammar::AnyObject(), vocab);
  std::vector<float> logits(kPieces.size(), 1.0f);
  ASSERT_TRUE(constraint.Mask(logits));
  for (size_t id = 0; id < logits.size(); ++id) {
    const bool allowed = id == 2 || id == 9 || id == 14 || id == 16 || id == 26;
    EXPECT_EQ(logits[id], allowed ? 1.0f : -std::numeric_limits<float>::infinity()) << id;
  }
  constraint.Accept(26);  // "{}"
  EXPECT_TRUE(constraint.Finished());
}

}  // namespace
}  // namespace zeroskip
