// Binary masks <-> COCO run-length encoding. A mask is a Uint8Array of height * width (row-major,
// 1 inside); COCO runs go down the columns, starting with a run of zeros.

/** Run lengths of a COCO compressed counts string (pycocotools' rleFrString). */
export function decodeCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** Mask of a COCO RLE {size: [h, w], counts: string or run lengths}. */
export function rleToMask(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === 'string' ? decodeCounts(rle.counts) : rle.counts;
  const mask = new Uint8Array(height * width);
  let index = 0;  // position in column-major order
  counts.forEach((run, i) => {
    if (i % 2) {
      for (let j = index; j < index + run; j++) {
        const x = Math.floor(j / height);
        mask[(j - x * height) * width + x] = 1;
      }
    }
    index += run;
  });
  return mask;
}

/** Uncompressed COCO RLE {size, counts: run lengths} of a mask. */
export function maskToRle(mask, height, width) {
  const counts = [];
  let current = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const value = mask[y * width + x];
      if (value !== current) {
        counts.push(run);
        current = value;
        run = 0;
      }
      run += 1;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

/** Pixels inside a mask. */
export function maskArea(mask) {
  let area = 0;
  for (let i = 0; i < mask.length; i++) area += mask[i];
  return area;
}
