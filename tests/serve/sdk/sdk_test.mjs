// The official OpenAI Node SDK (pinned by package-lock.json) against a running `zeroskip serve`.
// tests/serve/serve_test.py's `sdk` part starts the server and runs this with:
//   ZEROSKIP_URL    the server's base URL (http://127.0.0.1:PORT/v1)
//   ZEROSKIP_SLOW_URL  a server of a slower model (long generations, to abort)
//   ZEROSKIP_BIN    the zeroskip binary (for `zeroskip score` and `zeroskip run`)
//   ZEROSKIP_MODEL  the model the server serves
// Prints one line per case and exits non-zero if any fails.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import OpenAI from "openai";

const { ZEROSKIP_URL: baseURL, ZEROSKIP_SLOW_URL: slowURL, ZEROSKIP_BIN: bin,
        ZEROSKIP_MODEL: modelPath } = process.env;
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120000 });

function zeroskip(...args) {
  return JSON.parse(execFileSync(bin, [...args, "--json"], { encoding: "utf8" }).trim().split("\n").pop());
}

const cases = [];
const test = (name, fn) => cases.push([name, fn]);

test("models.list and models.retrieve", async () => {
  const list = await client.models.list();
  const id = list.data[0].id;
  assert.equal((await client.models.retrieve(id)).id, id);
  await assert.rejects(client.models.retrieve("no-such-model"), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.status, 404);
    assert.equal(e.code, "model_not_found");
    return true;
  });
});

test("completion equals zeroskip run", async () => {
  const r = await client.completions.create({
    model: "relu-ft", prompt: "ROMEO:", max_tokens: 20, temperature: 0,
  });
  const want = zeroskip("run", "-m", modelPath, "-p", "ROMEO:", "-n", "20", "--temp", "0");
  assert.equal(r.choices[0].text, want.text);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 20);
});

test("chat, streamed and not", async () => {
  const body = {
    model: "relu-ft", max_tokens: 16, temperature: 0.7, seed: 3,
    messages: [{ role: "developer", content: "A play." }, { role: "user", content: "Good morrow." }],
  };
  const whole = await client.chat.completions.create(body);
  let text = "";
  for await (const chunk of await client.chat.completions.create({ ...body, stream: true })) {
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.ok(Number.isSafeInteger(whole.seed));
});

test("a generated seed survives JavaScript numbers", async () => {
  const first = await client.completions.create({ model: "m", prompt: "KING:", max_tokens: 12 });
  assert.ok(Number.isSafeInteger(first.seed), String(first.seed));
  const again = await client.completions.create({
    model: "m", prompt: "KING:", max_tokens: 12, seed: first.seed,
  });
  assert.equal(again.choices[0].text, first.choices[0].text);
});

test("abort a stream: the server stops generating", async () => {
  // The slow model: 4000 tokens take far longer than the few chunks read before the abort.
  const slow = new OpenAI({ baseURL: slowURL, apiKey: "unused", maxRetries: 0 });
  const health = async () => (await fetch(new URL("../health", slowURL + "/"))).json();
  const before = (await health()).decoded_tokens;
  const controller = new AbortController();
  const stream = await slow.completions.create(
    { model: "m", prompt: "the", max_tokens: 4000, stream: true, ignore_eos: true, temperature: 0 },
    { signal: controller.signal });
  let chunks = 0;
  for await (const _ of stream) {
    if (++chunks === 3) {
      controller.abort();
      break;
    }
  }
  for (let i = 0; ; i++) {
    const h = await health();
    if (h.slots_processing === 0) {
      assert.ok(h.decoded_tokens - before < 4000, "the aborted generation ran to its end");
      break;
    }
    assert.ok(i < 2000, "the aborted request's slot stayed busy");
    await new Promise((r) => setTimeout(r, 25));
  }
});

test("errors are APIError with status, param and a string code", async () => {
  await assert.rejects(
    client.completions.create({ model: "m", prompt: "a", presence_penalty: 2.5 }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.param, "presence_penalty");
      assert.equal(e.type, "invalid_request_error");
      assert.equal(e.code, null);
      return true;
    });
  await assert.rejects(
    client.completions.create({ model: "m", prompt: "word ".repeat(400) }),
    (e) => e.status === 400 && e.code === "context_length_exceeded");
  await assert.rejects(
    client.chat.completions.create({
      model: "m", messages: [{ role: "user", content: "hi" }],
      tools: [{ type: "function", function: { name: "f", parameters: {} } }],
    }),
    (e) => e.status === 400 && e.param === "tools");
});

test("n choices, each its own, reproducible by seed", async () => {
  const body = { model: "m", prompt: "JULIET:", max_tokens: 10, temperature: 1, seed: 40, n: 3 };
  const r = await client.completions.create(body);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(r.usage.completion_tokens, 30);
  // Choice i samples with seed + i: alone with that seed it is the same text.
  for (const c of r.choices) {
    const one = await client.completions.create({ ...body, n: 1, seed: 40 + c.index });
    assert.equal(one.choices[0].text, c.text);
  }
  const chat = await client.chat.completions.create({
    model: "m", n: 2, max_tokens: 6, seed: 1, messages: [{ role: "user", content: "Speak." }],
  });
  assert.equal(chat.choices.length, 2);
});

test("chat logprobs", async () => {
  const r = await client.chat.completions.create({
    model: "m", max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3,
    messages: [{ role: "user", content: "Speak." }],
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.equal(t.logprob, t.top_logprobs[0].logprob);
    assert.ok(t.logprob <= 0);
  }
});

test("JSON mode: a schema's reply parses and holds to it; what the subset lacks is a 400", async () => {
  const schema = {
    type: "object",
    properties: { mood: { enum: ["merry", "sad"] }, count: { type: "integer" },
                  tags: { type: "array", items: { type: "boolean" }, maxItems: 3 } },
    required: ["mood", "count", "tags"],
    additionalProperties: false,
  };
  for (const seed of [1, 2, 3]) {
    const r = await client.chat.completions.create({
      model: "m", max_tokens: 96, temperature: 1, seed,
      messages: [{ role: "user", content: "Report." }],
      response_format: { type: "json_schema", json_schema: { name: "report", schema, strict: true } },
    });
    assert.equal(r.choices[0].finish_reason, "stop", r.choices[0].message.content);
    const v = JSON.parse(r.choices[0].message.content);
    assert.deepEqual(Object.keys(v).sort(), ["count", "mood", "tags"]);
    assert.ok(["merry", "sad"].includes(v.mood), v.mood);
    assert.ok(Number.isInteger(v.count), String(v.count));
    assert.ok(Array.isArray(v.tags) && v.tags.length <= 3 && v.tags.every((t) => typeof t === "boolean"));
  }
  await assert.rejects(client.chat.completions.create({
    model: "m", max_tokens: 4, messages: [{ role: "user", content: "x" }],
    response_format: { type: "json_schema",
                       json_schema: { name: "p", schema: { type: "string", pattern: "^a" } } },
  }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, "response_format");
    assert.match(e.message, /pattern/);
    return true;
  });
});

test("lm-eval's loglikelihood request equals zeroskip score", async () => {
  const context = zeroskip("run", "-m", modelPath, "-p", "ROMEO:\nWhat light", "-n", "0").prompt_tokens;
  const whole = zeroskip("run", "-m", modelPath, "-p", "ROMEO:\nWhat light through yonder window",
                         "-n", "0").prompt_tokens;
  assert.deepEqual(whole.slice(0, context.length), context);
  // As lm-evaluation-harness's local-completions sends it: token ids, echo, no new tokens.
  const r = await client.completions.create({
    model: "m", prompt: [whole], echo: true, max_tokens: 0, logprobs: 1, temperature: 0,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.token_logprobs.length, whole.length);
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.tokens.length, whole.length);
  assert.equal(lp.text_offset.length, whole.length);
  const summed = lp.token_logprobs.slice(context.length).reduce((a, b) => a + b, 0);
  const want = zeroskip("score", "-m", modelPath, "--tokens", whole.join(","),
                        "--from", String(context.length));
  assert.ok(Math.abs(summed - want.log_likelihood) < 1e-4, `${summed} vs ${want.log_likelihood}`);
  // is_greedy as lm-eval computes it: each token's logprob is its top alternative's.
  for (const [i, top] of lp.top_logprobs.entries()) {
    if (i === 0) continue;
    assert.equal(Object.keys(top).length, 1);
    assert.ok(Object.values(top)[0] >= lp.token_logprobs[i] - 1e-12);
  }
});

let failed = 0;
for (const [name, fn] of cases) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n${e.stack ?? e}`);
  }
}
console.log(`${cases.length - failed}/${cases.length} passed`);
process.exit(failed ? 1 : 0);
