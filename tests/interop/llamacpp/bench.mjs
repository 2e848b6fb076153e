// Prefill and greedy decode speed of llama.cpp (node-llama-cpp's prebuilt CPU binding).
// usage: node bench.mjs MODEL.gguf PROMPT_TOKENS NEW_TOKENS [THREADS]
// The prompt is deterministic token ids; decoding samples natively (greedy) one token at a time.
// Prints one JSON object as its last line.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, promptArg, newArg, threadsArg] = process.argv.slice(2);
if (!modelPath || !promptArg || !newArg) {
    console.error("usage: node bench.mjs MODEL.gguf PROMPT_TOKENS NEW_TOKENS [THREADS]");
    process.exit(2);
}
const promptTokens = Number(promptArg), newTokens = Number(newArg);
const threads = threadsArg ? Number(threadsArg) : undefined;

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({
    contextSize: promptTokens + newTokens + 16,
    batchSize: Math.max(32, promptTokens),
    sequences: 1,
    ...(threads ? { threads } : {}),
});
const sequence = context.getSequence();

// Ids spread over the vocabulary but clear of the first few (often special) tokens.
const nVocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? 256;
const prompt = Array.from({ length: promptTokens }, (_, i) => 3 + ((i * 7919) % Math.max(1, Math.min(nVocab, 50000) - 3)));

const greedy = { token: true, options: { temperature: 0 } };

// One untimed pass over the same work first, as llama-bench does: the first touch of the memory-mapped weights and
// the thread pool's start-up are not what a prefill or decode costs. Arwkv's bench warms up the same way.
async function run() {
    const t0 = performance.now();
    const pre = await sequence.controlledEvaluate(prompt.map((id, i) => (i === prompt.length - 1 ? [id, { generateNext: greedy }] : id)));
    const t1 = performance.now();
    let next = pre[prompt.length - 1]?.next?.token;
    if (next == null) throw new Error("prefill produced no token");
    const generated = [next];
    const t2 = performance.now();
    for (let i = 1; i < newTokens; i++) {
        const r = await sequence.controlledEvaluate([[next, { generateNext: greedy }]]);
        next = r[0]?.next?.token;
        if (next == null) throw new Error(`decode step ${i} produced no token`);
        generated.push(next);
    }
    const t3 = performance.now();
    return { t0, t1, t2, t3, generated };
}
await run();
await sequence.clearHistory();
const { t0, t1, t2, t3, generated } = await run();

await context.dispose();
await model.dispose();
await llama.dispose();
const decodeSteps = newTokens - 1;
console.log(JSON.stringify({
    engine: "llama.cpp (node-llama-cpp)",
    promptTokens,
    newTokens,
    threads: threads ?? null,
    prefillSeconds: (t1 - t0) / 1000,
    prefillTokensPerSecond: promptTokens / ((t1 - t0) / 1000),
    decodeSeconds: (t3 - t2) / 1000,
    decodeTokensPerSecond: decodeSteps > 0 ? decodeSteps / ((t3 - t2) / 1000) : null,
    generated,
}));
