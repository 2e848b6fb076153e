// Raw logits of every position from llama.cpp (node-llama-cpp's prebuilt CPU binding).
// usage: node logits.mjs MODEL.gguf ID,ID,... OUT.f32 [THREADS]
// Writes little-endian float32 [T, V] (row t = logits after token t), and prints {"tokens":T,"vocab":V,...timings} last.
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, idList, outPath, threadsArg] = process.argv.slice(2);
if (!modelPath || !idList || !outPath) {
    console.error("usage: node logits.mjs MODEL.gguf ID,ID,... OUT.f32");
    process.exit(2);
}
const ids = idList.split(",").map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`bad token id '${s}'`);
    return n;
});

const started = performance.now();
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({
    contextSize: Math.max(64, ids.length + 8),
    batchSize: Math.max(8, ids.length),
    sequences: 1,
    // Tiny test models gain nothing from more threads, and spinning workers hurt on a busy machine.
    threads: threadsArg ? Number(threadsArg) : 1,
});
const sequence = context.getSequence();
const loaded = performance.now();
const results = await sequence.controlledEvaluate(ids.map((id) => [id, { generateNext: { logits: true } }]));

const evaluated = performance.now();
let vocab = -1;
let out = null;
for (let t = 0; t < ids.length; t++) {
    const logits = results[t]?.next?.logits;
    if (!logits) throw new Error(`no logits for position ${t}`);
    if (out === null) {
        vocab = logits.size;
        out = new Float32Array(ids.length * vocab);
    } else if (logits.size !== vocab) {
        throw new Error(`position ${t} has ${logits.size} logits, position 0 had ${vocab}`);
    }
    const row = t * vocab;
    for (const [token, value] of logits) {
        if (token < 0 || token >= vocab) throw new Error(`token ${token} outside the vocabulary`);
        out[row + token] = value;
    }
}
const bytes = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
if (!new Uint8Array(new Uint16Array([1]).buffer)[0]) throw new Error("big-endian hosts are not supported");
fs.writeFileSync(outPath, bytes);
await context.dispose();
await model.dispose();
await llama.dispose();
console.log(JSON.stringify({
    tokens: ids.length,
    vocab,
    loadSeconds: (loaded - started) / 1000,
    evaluateSeconds: (evaluated - loaded) / 1000,
}));
