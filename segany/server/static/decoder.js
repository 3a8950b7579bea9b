// The prompt encoder and mask decoder in the page: ONNX Runtime Web over the graph of
// `segany export-onnx` (the official web demo's inputs and outputs, plus the image features
// SAM-HQ's and SAM 2's decoders take).
import * as ort from '/vendor/ort/ort.wasm.min.mjs';

ort.env.wasm.wasmPaths = '/vendor/ort/';

export class Decoder {
  /**
   * Load the decoder graph at `url`; `info` is the server's /api/info. `threads`: WebAssembly
   * threads (default: ONNX Runtime's choice, half the logical cores up to 4).
   */
  static async load(url, info, threads = null) {
    if (threads) ort.env.wasm.numThreads = threads;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`decoder: ${response.status} ${response.statusText}`);
    const session = await ort.InferenceSession.create(await response.arrayBuffer(), {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
    return new Decoder(session, info);
  }

  constructor(session, info) {
    this.session = session;
    this.threshold = info.mask_threshold;
    this.imageSize = info.image_size;  // the model's padded input square
    this.embeddingShape = info.embedding_shape;
    this.features = info.image_features;  // [{name, shape}] after the embedding in /api/embedding
    this.promptLayout = info.prompt_layout;  // 'sam' or 'sam2' (segany.export.prompt_layout)
    this.square = info.resize === 'square';  // SAM 2: images resized to the square, not padded
    const [, , gh, gw] = info.embedding_shape;
    this.noMask = new ort.Tensor('float32', new Float32Array(16 * gh * gw), [1, 1, 4 * gh, 4 * gw]);
    this.latencies = [];  // ms per session.run
    this.threads = ort.env.wasm.numThreads;
  }

  /** An image embedding and the decoder's other image inputs from /api/embedding's bytes and headers. */
  embedding(buffer, headers) {
    const shape = headers.get('X-Embedding-Shape').split(',').map(Number);
    const tensors = {};
    let offset = 0;
    for (const { name, shape: dims } of [{ name: 'image_embeddings', shape }, ...this.features]) {
      const count = dims.reduce((a, b) => a * b, 1);
      if ((offset + count) * 4 > buffer.byteLength) throw new Error(`embedding: the response has no ${name}`);
      tensors[name] = new ort.Tensor('float32', new Float32Array(buffer, offset * 4, count), dims);
      offset += count;
    }
    return {
      tensors,
      originalSize: headers.get('X-Original-Size').split(',').map(Number),  // [H, W]
      inputSize: headers.get('X-Input-Size').split(',').map(Number),  // [h, w] after resizing
      encoderSeconds: Number(headers.get('X-Encoder-Seconds')),
    };
  }

  /**
   * Candidate masks for points [{x, y, label}] (label 1 foreground, 0 background) and an optional
   * box [x0, y0, x1, y1], all in image pixels: for a single click the three ambiguity-aware
   * masks, else the one mask of the single-mask output, as SAM advises (several prompts leave
   * little ambiguity).
   */
  async run(embedding, points, box) {
    const [H, W] = embedding.originalSize;
    const [h, w] = embedding.inputSize;
    const sx = w / W, sy = h / H;  // as ResizeLongestSide.apply_coords
    // The graph's point order (segany.export.graph_prompts): SAM's points then the box's
    // corners, or a padding point without a box; SAM 2's corners, points, always a padding point.
    const coords = [], labels = [];
    const addBox = () => {
      coords.push(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy);
      labels.push(2, 3);
    };
    const addPadding = () => { coords.push(0, 0); labels.push(-1); };
    if (box && this.promptLayout === 'sam2') addBox();
    for (const p of points) { coords.push(p.x * sx, p.y * sy); labels.push(p.label); }
    if (this.promptLayout === 'sam2' || !box) addPadding();
    else addBox();
    const n = labels.length;
    const feeds = {
      ...embedding.tensors,
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labels), [1, n]),
      mask_input: this.noMask,
      has_mask_input: new ort.Tensor('float32', new Float32Array([0]), [1]),
      orig_im_size: new ort.Tensor('float32', new Float32Array([H, W]), [2]),
    };
    for (const name of Object.keys(feeds)) {
      if (!this.session.inputNames.includes(name)) delete feeds[name];  // the page's graph has no orig_im_size
    }
    const began = performance.now();
    // Only the low-resolution logits: the page upscales the one candidate it shows (Candidates),
    // where the graph would upscale all four to the image size.
    const out = await this.session.run(feeds, ['iou_predictions', 'low_res_masks']);
    this.latencies.push(performance.now() - began);
    const chosen = points.length !== 1 || box ? [0] : [1, 2, 3];
    return new Candidates(out.low_res_masks, chosen, out.iou_predictions.data, embedding, this);
  }
}

/** Bilinear taps of the first `count` outputs when resizing `inSize` to `outSize` (torch, align_corners=False). */
function taps(inSize, outSize, count) {
  const scale = inSize / outSize;
  const i0 = new Int32Array(count), i1 = new Int32Array(count), w1 = new Float32Array(count);
  for (let o = 0; o < count; o++) {
    const source = Math.max(scale * (o + 0.5) - 0.5, 0);
    const a = Math.floor(source);
    i0[o] = a;
    i1[o] = a < inSize - 1 ? a + 1 : a;
    w1[o] = source - a;
  }
  return { i0, i1, w1, count };
}

/**
 * Resize an (inH, inW) float image with row and column taps, one axis at a time; with a
 * `threshold`, the result is thresholded on the way out (Uint8Array, 1 above it).
 */
function resize(source, inH, inW, rows, cols, threshold = null) {
  const across = new Float32Array(inH * cols.count);
  for (let r = 0; r < inH; r++) {
    const from = r * inW, to = r * cols.count;
    for (let c = 0; c < cols.count; c++) {
      const a = source[from + cols.i0[c]];
      across[to + c] = a + (source[from + cols.i1[c]] - a) * cols.w1[c];
    }
  }
  const size = rows.count * cols.count;
  const out = threshold === null ? new Float32Array(size) : new Uint8Array(size);
  for (let r = 0; r < rows.count; r++) {
    const a = rows.i0[r] * cols.count, b = rows.i1[r] * cols.count, weight = rows.w1[r], to = r * cols.count;
    if (threshold === null) {
      for (let c = 0; c < cols.count; c++) {
        const va = across[a + c];
        out[to + c] = va + (across[b + c] - va) * weight;
      }
    } else {
      for (let c = 0; c < cols.count; c++) {
        const va = across[a + c];
        out[to + c] = va + (across[b + c] - va) * weight > threshold ? 1 : 0;
      }
    }
  }
  return out;
}

/**
 * The decoder's candidate masks. Full-size masks are made on demand, as SAM's postprocessing
 * makes them: low-res logits upscaled to the padded input square, cropped to the resized
 * image, upscaled to the image, thresholded.
 */
class Candidates {
  constructor(lowRes, chosen, scores, embedding, decoder) {
    const [, , lh, lw] = lowRes.dims;
    this.low = chosen.map((k) => lowRes.data.subarray(k * lh * lw, (k + 1) * lh * lw));
    this.lowSize = [lh, lw];
    this.scores = chosen.map((k) => scores[k]);
    this.count = chosen.length;
    this.embedding = embedding;
    this.threshold = decoder.threshold;
    this.padSize = decoder.imageSize;
    this.square = decoder.square;
    this.full = new Map();
  }

  /** Candidate k as a Uint8Array of H * W (1 inside). */
  mask(k) {
    if (!this.full.has(k)) {
      const [lh, lw] = this.lowSize;
      const [h, w] = this.embedding.inputSize;
      const [H, W] = this.embedding.originalSize;
      if (this.square) {  // as SAM 2: the logits resized to the image directly
        this.full.set(k, resize(this.low[k], lh, lw, taps(lh, H, H), taps(lw, W, W), this.threshold));
      } else {
        const input = resize(this.low[k], lh, lw, taps(lh, this.padSize, h), taps(lw, this.padSize, w));
        this.full.set(k, resize(input, h, w, taps(h, H, H), taps(w, W, W), this.threshold));
      }
    }
    return this.full.get(k);
  }

  /** Candidate k at low resolution, the image's part of the padded square in its aspect: {mask, width, height}. */
  thumbnail(k) {
    const [lh, lw] = this.lowSize;
    const [h, w] = this.embedding.inputSize;
    const [H, W] = this.embedding.originalSize;
    // The low-res cells that show the image: a corner of the padded square, or (SAM 2) all of it.
    const rows = this.square ? lh : Math.max(1, Math.round(h * lh / this.padSize));
    const cols = this.square ? lw : Math.max(1, Math.round(w * lw / this.padSize));
    const long = Math.max(H, W);
    const height = this.square ? Math.max(1, Math.round(H * lh / long)) : rows;
    const width = this.square ? Math.max(1, Math.round(W * lw / long)) : cols;
    const mask = new Uint8Array(height * width);
    for (let y = 0; y < height; y++) {
      const row = Math.floor(y * rows / height) * lw;
      for (let x = 0; x < width; x++) {
        mask[y * width + x] = this.low[k][row + Math.floor(x * cols / width)] > this.threshold ? 1 : 0;
      }
    }
    return { mask, width, height };
  }
}
