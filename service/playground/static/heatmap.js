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
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

// Draw grid x grid bytes starting at `offset` onto the whole canvas.
export function drawGrid(canvas, bytes, offset, grid) {
  const image = new ImageData(grid, grid);
  for (let i = 0; i < grid * grid; i++) {
    const [r, g, b] = colour(bytes[offset + i] / 127.5 - 1);
    image.data.set([r, g, b, 255], i * 4);
  }
  const scratch = new OffscreenCanvas(grid, grid);
  scratch.getContext("2d").putImageData(image, 0, 0);
  const context = canvas.getContext("2d");
  context.drawImage(scratch, 0, 0, canvas.width, canvas.height);
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
