// Heat maps over the input square [-DOMAIN, DOMAIN]^2 in TF Playground's colours: the
// server sends a byte per grid point, 0..255 for -1..1 (row 0 at the top: x2 = +DOMAIN).

export const DOMAIN = 6;
const NEGATIVE = [245, 147, 34], NEUTRAL = [232, 234, 235], POSITIVE = [8, 119, 189];

export function colour(value) {  // value in [-1, 1]
  const v = Math.max(-1, Math.min(1, value));
  const [from, to, t] = v < 0 ? [NEUTRAL, NEGATIVE, -v] : [NEUTRAL, POSITIVE, v];
  return from.map((c, i) => Math.round(c + (to[i] - c) * t));
}

export function decode(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// The RGBA pixel of every byte value, as one 32-bit word each: a frame draws ~50 maps of
// 1,600 points, and a table lookup per point (no arrays made per pixel) keeps the page's
// share of the two cores small enough for the training beside it.
const PALETTE = new Uint32Array(256);
const paletteBytes = new Uint8Array(PALETTE.buffer);
for (let value = 0; value < 256; value++) {
  paletteBytes.set([...colour(value / 127.5 - 1), 255], value * 4);
}
let scratch = null;  // one grid-sized canvas, reused by every map

// Draw grid x grid bytes starting at `offset` onto the whole canvas.
export function drawGrid(canvas, bytes, offset, grid) {
  if (scratch === null || scratch.width !== grid) scratch = new OffscreenCanvas(grid, grid);
  const context = scratch.getContext("2d");
  const image = context.createImageData(grid, grid);
  const pixels = new Uint32Array(image.data.buffer);
  for (let i = 0; i < grid * grid; i++) pixels[i] = PALETTE[bytes[offset + i]];
  context.putImageData(image, 0, 0);
  canvas.getContext("2d").drawImage(scratch, 0, 0, canvas.width, canvas.height);
}

// Bytes of a feature function over the grid, scaled by its largest magnitude.
export function featureGrid(feature, grid) {
  const values = new Float64Array(grid * grid);
  for (let row = 0; row < grid; row++) {
    for (let col = 0; col < grid; col++) {
      const x1 = ((col + 0.5) / grid) * 2 * DOMAIN - DOMAIN;
      const x2 = DOMAIN - ((row + 0.5) / grid) * 2 * DOMAIN;
      values[row * grid + col] = feature(x1, x2);
    }
  }
  const scale = Math.max(...values.map(Math.abs)) || 1;
  return Uint8Array.from(values, (v) => Math.round((v / scale + 1) * 127.5));
}

// Points [x1, x2, target] as dots coloured by target (a class 0/1, or a value in [-1, 1]).
export function drawPoints(canvas, points, classification, outlined) {
  const context = canvas.getContext("2d");
  for (const [x1, x2, target] of points) {
    const x = ((x1 + DOMAIN) / (2 * DOMAIN)) * canvas.width;
    const y = ((DOMAIN - x2) / (2 * DOMAIN)) * canvas.height;
    const [r, g, b] = colour(classification ? 2 * target - 1 : target);
    context.beginPath();
    context.arc(x, y, 3, 0, 2 * Math.PI);
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fill();
    context.strokeStyle = outlined ? "black" : "white";
    context.stroke();
  }
}
