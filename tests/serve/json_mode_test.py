#!/usr/bin/python3
"""JSON mode of `zeroskip serve` (response_format) end to end on the demo model.

    /usr/bin/python3 tests/serve/json_mode_test.py ZEROSKIP_BIN WORK_DIR

Sampled outputs are parsed with Python's json module and checked with a validator for the schema
subset written here, independent of the server's C++ automaton.
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_test  # noqa: E402  (the Server helper and the models)

# Every value bounded (no free string: the Shakespeare model seldom closes one, see
# test_json_object_samples_parse), so each sample completes within the demo's context.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"enum": ["ROMEO", "JULIET", "MERCUTIO"]},
        "age": {"type": "integer"},
        "alive": {"type": "boolean"},
        "mood": {"type": ["boolean", "null"]},
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 2},
        "house": {"const": "Capulet"},
        "friend": {"type": "object", "properties": {"loyal": {"type": "boolean"}},
                   "required": ["loyal"], "additionalProperties": False},
    },
    "required": ["name", "age", "alive", "scores"],
    "additionalProperties": False,
}


def same(a, b):
    # JSON equality: True is not 1, 1 is 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b if not isinstance(a, (dict, list)) else json.dumps(a) == json.dumps(b)


def type_ok(v, t):
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {"object": isinstance(v, dict), "array": isinstance(v, list),
            "string": isinstance(v, str), "boolean": isinstance(v, bool), "null": v is None,
            "integer": number and isinstance(v, int), "number": number}[t]


def validate(v, s, where="#"):
    """Raises AssertionError where `v` breaks schema `s` (the subset JSON mode supports)."""
    if "const" in s:
        assert same(v, s["const"]), f"{where}: {v!r} is not the const"
    if "enum" in s:
        assert any(same(v, e) for e in s["enum"]), f"{where}: {v!r} is not in the enum"
    if "type" in s:
        types = [s["type"]] if isinstance(s["type"], str) else s["type"]
        assert any(type_ok(v, t) for t in types), f"{where}: {v!r} is not {types}"
    if isinstance(v, dict):
        props = s.get("properties", {})
        for k, sub in v.items():
            assert k in props, f"{where}: unexpected property {k!r}"
            validate(sub, props[k], f"{where}/{k}")
        for k in s.get("required", []):
            assert k in v, f"{where}: {k!r} is missing"
    if isinstance(v, list):
        assert len(v) >= s.get("minItems", 0), f"{where}: too few items"
        assert len(v) <= s.get("maxItems", len(v)), f"{where}: too many items"
        for i, item in enumerate(v):
            validate(item, s.get("items", {}), f"{where}/{i}")


class ValidatorTest(unittest.TestCase):
    """The validator itself, so a lenient one cannot pass everything."""

    def test_rejects(self):
        for bad in [{"name": "ROMEO", "age": 1.5, "alive": True, "scores": [1]},
                    {"name": "TYBALT", "age": 1, "alive": True, "scores": [1]},
                    {"name": "ROMEO", "age": 1, "alive": 1, "scores": [1]},
                    {"name": "ROMEO", "age": 1, "alive": True, "scores": []},
                    {"name": "ROMEO", "age": 1, "alive": True, "scores": [1], "x": 0},
                    {"name": "ROMEO", "age": 1, "alive": True, "scores": [1], "house": "M"},
                    {"name": "ROMEO", "age": 1, "alive": True, "scores": [1], "friend": {}},
                    {"name": "ROMEO", "age": 1, "alive": True}]:
            with self.assertRaises(AssertionError, msg=bad):
                validate(bad, SCHEMA)
        validate({"name": "ROMEO", "age": 1, "alive": True, "scores": [1, 2.5],
                  "friend": {"loyal": False}, "mood": None}, SCHEMA)
        with self.assertRaises(AssertionError):
            validate({"name": "ROMEO", "age": 1, "alive": True, "scores": [1], "mood": "x"},
                     SCHEMA)


class JsonMode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        demo, _ = serve_test.prepare_models()
        cls.server = serve_test.Server(demo, "--parallel", "4")

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, "the server did not exit cleanly"

    def chat(self, response_format, seed, **extra):
        body = {"messages": [{"role": "user", "content": "Tell me of a Verona lord, as JSON."}],
                "response_format": response_format, "seed": seed, "temperature": 1,
                "top_k": 0, "top_p": 1, "min_p": 0, **extra}
        status, _, answer = self.server.post("/v1/chat/completions", body)
        self.assertEqual(status, 200, answer)
        return answer["choices"][0]

    def test_json_object_samples_parse(self):
        # The demo model, sampled at temperature 1, often rambles in a key it opened until the
        # context is full: such a reply ends with "length" and is incomplete, as with OpenAI.
        complete = 0
        for seed in range(1, 21):
            choice = self.chat({"type": "json_object"}, seed)
            text = choice["message"]["content"]
            if choice["finish_reason"] == "length":
                with self.assertRaises(ValueError, msg=text):
                    json.loads(text)
                continue
            self.assertEqual(choice["finish_reason"], "stop", text)
            self.assertIsInstance(json.loads(text), dict, text)
            complete += 1
        self.assertGreater(complete, 0)

    def test_json_schema_samples_validate(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "lord", "schema": SCHEMA,
                                                      "strict": True}}
        for seed in range(1, 21):
            choice = self.chat(fmt, seed)
            text = choice["message"]["content"]
            self.assertEqual(choice["finish_reason"], "stop", text)
            validate(json.loads(text), SCHEMA)

    def test_greedy_completions_and_stream(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "lord", "schema": SCHEMA}}
        body = {"prompt": "ROMEO:", "response_format": fmt, "temperature": 0}
        status, _, answer = self.server.post("/v1/completions", body)
        self.assertEqual(status, 200, answer)
        text = answer["choices"][0]["text"]
        validate(json.loads(text), SCHEMA)
        # Streamed, the same text arrives in pieces.
        events = self.server.stream("/v1/completions", {**body, "seed": 3})
        streamed = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
        self.assertEqual(streamed, text)
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "stop")

    def test_length_leaves_it_incomplete(self):
        choice = self.chat({"type": "json_object"}, 1, max_tokens=3)
        self.assertEqual(choice["finish_reason"], "length")
        with self.assertRaises(ValueError):
            json.loads(choice["message"]["content"])

    def test_text_is_unconstrained(self):
        body = {"prompt": "ROMEO:", "max_tokens": 20, "seed": 5}
        plain = self.server.post("/v1/completions", body)[2]["choices"][0]["text"]
        text = self.server.post("/v1/completions", {**body, "response_format": {"type": "text"}})
        self.assertEqual(text[2]["choices"][0]["text"], plain)

    def test_refusals_name_the_keyword(self):
        def refused(fmt, needle):
            status, _, answer = self.server.post(
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "hi"}], "response_format": fmt})
            self.assertEqual(status, 400, answer)
            error = answer["error"]
            self.assertEqual(error["type"], "invalid_request_error")
            self.assertEqual(error["param"], "response_format")
            self.assertIn(needle, error["message"])

        def schema(s):
            return {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}

        refused(schema({"type": "string", "pattern": "^a"}), "'pattern'")
        refused(schema({"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}}), "'$")
        refused(schema({"anyOf": [{"type": "string"}]}), "'anyOf'")
        refused(schema({"type": "object", "properties": {"d": {"type": "string",
                                                               "format": "date"}}}),
                "'format' (at #/properties/d) is not supported")
        refused(schema({"type": "object", "additionalProperties": True}), "additionalProperties")
        refused({"type": "json_schema", "json_schema": {"schema": {}}}, "name")
        refused({"type": "json_schema", "json_schema": {"name": "x"}}, "schema")
        refused({"type": "yaml"}, "text, json_object or json_schema")
        refused("json", "'response_format' must be an object")


if __name__ == "__main__":
    serve_test.BIN, serve_test.WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(serve_test.WORK, exist_ok=True)
    result = unittest.main(argv=sys.argv[:1], exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
