// The network drawing: a column of input features (buttons that turn them on and off, with
// their heat maps), a column per hidden layer and the output, each neuron a small heat-map
// canvas; SVG lines between them, coloured by the weight's sign, as wide as its magnitude.

import {colour, drawGrid, featureGrid} from "./heatmap.js";

const NODE = 40, ROW = 52, TOP = 40, SVG_NS = "http://www.w3.org/2000/svg";

export const FEATURE_FUNCTIONS = {
  x1: (a, b) => a, x2: (a, b) => b, x1_sq: (a, b) => a * a, x2_sq: (a, b) => b * b,
  x1_x2: (a, b) => a * b, sin_x1: (a, b) => Math.sin(a), sin_x2: (a, b) => Math.sin(b),
};
export const FEATURE_LABELS = {x1: "x\u2081", x2: "x\u2082", x1_sq: "x\u2081\u00b2",
  x2_sq: "x\u2082\u00b2", x1_x2: "x\u2081x\u2082", sin_x1: "sin(x\u2081)", sin_x2: "sin(x\u2082)"};

export class NetworkDrawing {
  // actions: {toggleFeature(name), addNeuron(layer), removeNeuron(layer), hover(text)}
  constructor(container, actions) {
    this.container = container;
    this.actions = actions;
    this.lines = [];  // per weight layer: [from][to] -> SVG line
    this.nodes = [];  // per computed layer: [neuron] -> canvas
  }

  // Rebuild for `layers` ([n_in, ...hidden, 1]) with the `features` on (null: unknown).
  build(layers, features, hidden) {
    const container = this.container;
    container.replaceChildren();
    const columns = layers.length;
    const width = Math.max(container.clientWidth, 400);
    const x = (column) => 70 + (column * (width - 70 - NODE - 10)) / (columns - 1);  // features' buttons left of column 0
    const height = TOP + ROW * Math.max(7, ...layers) + 10;
    container.style.height = `${height}px`;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    container.append(svg);
    container.dataset.layers = JSON.stringify(layers);

    // Input column: every feature as a button; the ones on also get a heat map.
    const inputs = [];
    const names = features ? Object.keys(FEATURE_FUNCTIONS) : [...Array(layers[0]).keys()].map((i) => `input ${i}`);
    names.forEach((name, row) => {
      const on = !features || features.includes(name);
      const y = TOP + row * ROW;
      if (features) {
        const button = document.createElement("button");
        button.className = `feature ${on ? "on" : "off"}`;
        button.setAttribute("data-testid", `feature-${name}`);
        button.textContent = FEATURE_LABELS[name];
        button.style.left = "0px";
        button.style.top = `${y + 10}px`;
        button.onclick = () => this.actions.toggleFeature(name);
        container.append(button);
      }
      if (on) {
        this.node(x(0), y, features ? featureGrid(FEATURE_FUNCTIONS[name], 20) : null);
        inputs.push([x(0) + NODE, y + NODE / 2]);
      }
    });

    // Computed columns and their +/- controls.
    this.nodes = [];
    const centres = [inputs];
    for (let column = 1; column < columns; column++) {
      const canvases = [], columnCentres = [];
      for (let neuron = 0; neuron < layers[column]; neuron++) {
        const y = TOP + neuron * ROW;
        canvases.push(this.node(x(column), y, null));
        columnCentres.push([x(column), y + NODE / 2]);
      }
      if (column < columns - 1 && hidden) {
        const controls = document.createElement("div");
        controls.className = "neurons";
        controls.style.left = `${x(column) - 6}px`;
        controls.style.top = "0px";
        const layer = column - 1;
        for (const [label, action, testid] of [["+", "addNeuron", "add-neuron"], ["\u2212", "removeNeuron", "remove-neuron"]]) {
          const button = document.createElement("button");
          button.textContent = label;
          button.setAttribute("data-testid", `${testid}-${layer}`);
          button.onclick = () => this.actions[action](layer);
          controls.append(button);
        }
        controls.append(` ${layers[column]}`);
        container.append(controls);
      }
      this.nodes.push(canvases);
      centres.push(columnCentres);
    }

    // Lines, one per weight.
    this.lines = [];
    for (let layer = 0; layer < columns - 1; layer++) {
      const rows = centres[layer].map(([x1, y1], from) => centres[layer + 1].map(([x2, y2], to) => {
        const line = document.createElementNS(SVG_NS, "line");
        Object.entries({x1, y1, x2, y2}).forEach(([k, v]) => line.setAttribute(k, v));
        line.setAttribute("stroke-width", 1);
        line.setAttribute("stroke", "#ccc");
        line.classList.add("weight");
        const title = document.createElementNS(SVG_NS, "title");
        line.append(title);
        line.addEventListener("mouseenter", () => this.actions.hover(title.textContent));
        svg.append(line);
        return line;
      }));
      this.lines.push(rows);
    }
  }

  node(left, top, bytes) {
    const canvas = document.createElement("canvas");
    canvas.className = "node";
    canvas.width = canvas.height = 20;
    canvas.style.left = `${left}px`;
    canvas.style.top = `${top}px`;
    if (bytes) drawGrid(canvas, bytes, 0, 20);
    this.container.append(canvas);
    return canvas;
  }

  // weights: [{w: [[...]], b: [...]}] per layer
  setWeights(weights) {
    weights.forEach(({w}, layer) => w.forEach((row, from) => row.forEach((value, to) => {
      const line = this.lines[layer]?.[from]?.[to];
      if (!line) return;
      const [r, g, b] = colour(Math.sign(value));
      line.setAttribute("stroke", `rgb(${r},${g},${b})`);
      line.setAttribute("stroke-width", Math.min(8, 0.5 + Math.abs(value) * 4).toFixed(2));
      line.dataset.weight = value;
      line.firstChild.textContent = `weight ${value.toFixed(4)} (layer ${layer + 1}, from ${from} to ${to})`;
    })));
  }

  // heatmaps: per computed layer, base64 bytes neuron after neuron
  setHeatmaps(heatmaps, grid, decode) {
    heatmaps.forEach((encoded, layer) => {
      const bytes = decode(encoded);
      (this.nodes[layer] || []).forEach((canvas, neuron) => {
        canvas.width = canvas.height = grid;
        drawGrid(canvas, bytes, neuron * grid * grid, grid);
      });
    });
  }
}
