// ClipCap in the browser: captions the chosen images with an export_onnx.py directory and onnxruntime-web's
// WebAssembly backend, as clipcap.onnx_runtime does in Python with greedy search (num_beams=1):
//   1. the processor's image transform (RGB, shortest edge resize, centre crop, rescale, normalize) -> NCHW float32;
//   2. vision_encoder.onnx makes each image's prefix embeddings;
//   3. decoder_model_merged.onnx reads the prefix, then one token a step (embedded by embed_tokens.onnx) with its
//      key/value cache, following generation_config.json (max_new_tokens, eos_token_id, no_repeat_ngram_size,
//      min_new_tokens); finished rows are fed pad_token_id until every row is done;
//   4. GPT-2's byte-level BPE turns the ids back into text (special tokens skipped, then trimmed).
// The int8 graphs quantize activations per call over the whole batch, so their captions depend on how the calls are
// cut: this page runs the chosen images as one batch, cut as Python cuts them (the prefix's cache first, then its
// last position), and gets Python's captions for the same batch (tests/test_web.py checks it).
//
// Serve the repository (e.g. `python -m http.server` in its root, after `npm ci --prefix web`) and open
// http://localhost:8000/web/?model=/outputs/demo-onnx/&dtype=int8

const statusEl = document.getElementById("status");
const filesEl = document.getElementById("files");
const listEl = document.getElementById("captions");
const ORT_DIST = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
}

// wasm-feature-detect's SIMD probe: a function returning i8x16.popcnt(i8x16.splat(0)).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);
const hasWasmSimd = () => typeof WebAssembly === "object" && WebAssembly.validate(SIMD_PROBE);

async function fetchOk(url, as = "json") {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  return as === "json" ? response.json() : new Uint8Array(await response.arrayBuffer());
}

// ---------------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------------

async function loadModel(ort, base, dtype) {
  const config = await fetchOk(new URL("config.json", base)); // first, so a wrong URL is reported by this file
  const [generation, processor, tokenizer] = await Promise.all(
    ["generation_config.json", "processor_config.json", "tokenizer.json"].map((name) => fetchOk(new URL(name, base))),
  );
  if (!config.onnx_export) throw new Error(`${base} is a model, not an export: run export_onnx.py on it`);
  const graphs = config.onnx_export.graphs[dtype];
  if (!graphs) throw new Error(`${base} has no ${dtype} graphs (it has ${Object.keys(config.onnx_export.graphs)})`);
  const sessions = {};
  for (const name of ["vision_encoder", "embed_tokens", "decoder_model_merged"]) {
    setStatus(`loading ${graphs[name]}…`);
    const bytes = await fetchOk(new URL(graphs[name], base), "bytes");
    sessions[name] = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  }
  return { ort, config, generation, image: processor.image_processor, tokenizer: makeDecoder(tokenizer), sessions };
}

// ---------------------------------------------------------------------------------------------------------------
// Images: BitImageProcessor's transform
// ---------------------------------------------------------------------------------------------------------------

async function pixelValues(files, image) {
  const { height: cropH, width: cropW } = image.crop_size;
  // transformers' torchvision backend works in float32 and folds the rescale into the mean and std
  const fold = image.do_rescale ? Math.fround(1 / image.rescale_factor) : 1;
  const mean = image.image_mean.map((m) => Math.fround(Math.fround(m) * fold));
  const std = image.image_std.map((s) => Math.fround(Math.fround(s) * fold));
  const out = new Float32Array(files.length * 3 * cropH * cropW);
  for (const [index, file] of files.entries()) {
    const bitmap = await createImageBitmap(file);
    // Shortest edge to size.shortest_edge, the other in proportion (rounded down, as transformers does). The
    // canvas's resampling only approximates the processor's (PIL / torchvision bicubic or bilinear): the pixels are
    // exactly Python's when the image already has that size (the centre crop is then exact), close otherwise.
    // Transparency is dropped, as convert("RGB") does, but the canvas premultiplies it first.
    const edge = image.size.shortest_edge, short = Math.min(bitmap.width, bitmap.height);
    const w = bitmap.width === short ? edge : Math.floor((edge * bitmap.width) / short);
    const h = bitmap.height === short ? edge : Math.floor((edge * bitmap.height) / short);
    const canvas = new OffscreenCanvas(w, h);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, w, h);
    const left = Math.floor((w - cropW) / 2), top = Math.floor((h - cropH) / 2);
    const rgba = context.getImageData(left, top, cropW, cropH).data;
    const plane = cropH * cropW, offset = index * 3 * plane;
    for (let p = 0; p < plane; p++)
      for (let c = 0; c < 3; c++) {
        const value = rgba[4 * p + c];
        out[offset + c * plane + p] = image.do_normalize
          ? Math.fround(value - mean[c]) / std[c]
          : value * (image.do_rescale ? Math.fround(image.rescale_factor) : 1);
      }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Greedy decoding
// ---------------------------------------------------------------------------------------------------------------

async function caption(model, pixels, batch) {
  const { ort, config, generation, sessions } = model;
  const { num_layers: layers, num_heads: heads, head_dim: headDim } = config.onnx_export;
  const size = config.image_size;
  const input = new ort.Tensor("float32", pixels, [batch, 3, size, size]);
  const prefix = (await sessions.vision_encoder.run({ pixel_values: input })).inputs_embeds;
  const [, prefixLength, width] = prefix.dims;

  const eos = [generation.eos_token_id ?? []].flat();
  const pad = generation.pad_token_id ?? eos[0];
  const ngram = generation.no_repeat_ngram_size ?? 0;
  const maxNew = generation.max_new_tokens ?? (generation.max_length ? generation.max_length - prefixLength : 20);
  const minNew = generation.min_new_tokens ?? Math.max((generation.min_length ?? 0) - prefixLength, 0);

  let past = {};
  for (let i = 0; i < layers; i++)
    for (const kind of ["key", "value"])
      past[`past_key_values.${i}.${kind}`] = new ort.Tensor("float32", new Float32Array(), [batch, heads, 0, headDim]);
  let pastLength = 0;
  async function decode(embeds) {
    pastLength += embeds.dims[1];
    const mask = new ort.Tensor("int64", new BigInt64Array(batch * pastLength).fill(1n), [batch, pastLength]);
    const outputs = await sessions.decoder_model_merged.run({ inputs_embeds: embeds, attention_mask: mask, ...past });
    past = {};
    for (let i = 0; i < layers; i++)
      for (const kind of ["key", "value"]) past[`past_key_values.${i}.${kind}`] = outputs[`present.${i}.${kind}`];
    return outputs.logits;
  }
  const positions = (from, to) =>
    new ort.Tensor("float32", sliceRows(prefix.data, batch, prefixLength, width, from, to), [batch, to - from, width]);

  // The prefix's cache without its last position, then that position, as clipcap.onnx_runtime cuts them.
  if (prefixLength > 1) await decode(positions(0, prefixLength - 1));
  let logits = await decode(positions(prefixLength - 1, prefixLength));
  const ids = Array.from({ length: batch }, () => []);
  const done = new Array(batch).fill(false);
  for (let step = 0; step < maxNew; step++) {
    const [, seq, vocab] = logits.dims;
    const next = ids.map((row, b) => {
      if (done[b]) return pad;
      const scores = logits.data.slice((b * seq + seq - 1) * vocab, (b * seq + seq) * vocab);
      for (const banned of bannedTokens(row, ngram)) scores[banned] = -Infinity;
      if (row.length < minNew) for (const token of eos) scores[token] = -Infinity;
      let best = 0;
      for (let t = 1; t < vocab; t++) if (scores[t] > scores[best]) best = t;
      return best;
    });
    next.forEach((token, b) => {
      ids[b].push(token);
      done[b] ||= eos.includes(token);
    });
    if (done.every(Boolean) || step === maxNew - 1) break;
    const tokens = new ort.Tensor("int64", BigInt64Array.from(next, BigInt), [batch, 1]);
    logits = await decode((await sessions.embed_tokens.run({ input_ids: tokens })).inputs_embeds);
  }
  return ids.map((row) => model.tokenizer(row));
}

function sliceRows(data, batch, length, width, from, to) {
  const out = new Float32Array(batch * (to - from) * width);
  for (let b = 0; b < batch; b++)
    out.set(data.subarray((b * length + from) * width, (b * length + to) * width), b * (to - from) * width);
  return out;
}

// The tokens that would repeat an n-gram of the generated tokens (transformers' NoRepeatNGramLogitsProcessor).
function bannedTokens(row, n) {
  if (n <= 0 || row.length < n) return [];
  const tail = row.slice(row.length - n + 1).join(",");
  const banned = [];
  for (let start = 0; start + n <= row.length; start++)
    if (row.slice(start, start + n - 1).join(",") === tail) banned.push(row[start + n - 1]);
  return banned;
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens to text: GPT-2's byte-level BPE, as tokenizers' ByteLevel decoder and the processor's batch_decode
// ---------------------------------------------------------------------------------------------------------------

function makeDecoder(tokenizer) {
  const tokens = [], special = new Set();
  for (const [token, id] of Object.entries(tokenizer.model.vocab)) tokens[id] = token;
  for (const added of tokenizer.added_tokens ?? []) {
    tokens[added.id] = added.content;
    if (added.special) special.add(added.id);
  }
  // GPT-2's bytes_to_unicode, inverted: printable bytes stand for themselves, the others for 256 + n.
  const byteOf = new Map();
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174;
    byteOf.set(String.fromCodePoint(printable ? byte : 256 + shifted++), byte);
  }
  const utf8 = new TextEncoder();
  // Invalid UTF-8 becomes U+FFFD as in Rust's from_utf8_lossy; a leading BOM is kept, as there.
  const text = new TextDecoder("utf-8", { ignoreBOM: true });
  // Python's str.strip() whitespace, which differs from JavaScript's trim() (U+FEFF; U+001C-U+001F and U+0085).
  const space = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+";
  const strip = new RegExp(`^${space}|${space}$`, "g");
  return (ids) => {
    const bytes = [];
    for (const id of ids) {
      if (special.has(id) || tokens[id] === undefined) continue;
      const chars = [...tokens[id]];
      // a token with a character outside the byte alphabet (an added token) stands for its own UTF-8
      if (chars.every((c) => byteOf.has(c))) bytes.push(...chars.map((c) => byteOf.get(c)));
      else bytes.push(...utf8.encode(tokens[id]));
    }
    return text.decode(new Uint8Array(bytes)).replace(strip, "");
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------------------------

async function main() {
  if (!hasWasmSimd()) {
    setStatus(
      "This browser has no WebAssembly SIMD, which onnxruntime-web needs: " +
        "use a current Chrome, Firefox, Safari or Edge",
      true,
    );
    return;
  }
  const params = new URLSearchParams(location.search);
  if (!params.get("model")) {
    setStatus("Give the URL of an export_onnx.py directory: add ?model=URL&dtype=int8 to this page's address", true);
    return;
  }
  const base = new URL(params.get("model").replace(/\/?$/, "/"), location.href);
  const dtype = params.get("dtype") ?? "int8";
  let model;
  try {
    const ort = await import(`${ORT_DIST}ort.wasm.min.mjs`);
    ort.env.wasm.wasmPaths = ORT_DIST;
    ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give
    model = await loadModel(ort, base, dtype);
  } catch (error) {
    setStatus(`Could not load the model from ${base} (${dtype}): ${error.message ?? error}`, true);
    return;
  }
  filesEl.disabled = false;
  setStatus("ready");
  filesEl.addEventListener("change", async () => {
    const files = [...filesEl.files];
    if (!files.length) return;
    filesEl.disabled = true;
    setStatus(`captioning ${files.length} image${files.length > 1 ? "s" : ""}…`);
    try {
      const started = performance.now();
      const captions = await caption(model, await pixelValues(files, model.image), files.length);
      listEl.replaceChildren(
        ...files.map((file, i) => {
          const item = document.createElement("li");
          const image = Object.assign(document.createElement("img"), { src: URL.createObjectURL(file), alt: "" });
          const text = document.createElement("div");
          text.append(
            Object.assign(document.createElement("span"), { className: "name", textContent: file.name }),
            Object.assign(document.createElement("span"), { className: "caption", textContent: captions[i] }),
          );
          item.append(image, text);
          return item;
        }),
      );
      console.log(`captioned ${files.length} images in ${((performance.now() - started) / 1000).toFixed(2)} s`);
      setStatus("ready");
    } catch (error) {
      setStatus(`Captioning failed: ${error.message ?? error}`, true);
    } finally {
      filesEl.disabled = false;
    }
  });
}

main();
