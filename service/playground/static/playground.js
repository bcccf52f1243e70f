// The page: one state object, filled from the server (a `state` event when settings, data
// or model change; a `frame` event when the weights do) and rendered from; every control
// sends its change to the server, which trains, and every page watching the model
// follows. The URL names the model (?model=<id or name>); without one a new one is made.

import {Api, ApiError} from "./api.js";
import {drawLosses} from "./chart.js";
import {decode, drawGrid, drawPoints} from "./heatmap.js";
import {NetworkDrawing} from "./network.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const api = new Api();
const state = {key: null, revision: -1, settings: null, model: null, points: null, trainable: true,
               history: {loss: [], val_loss: []}, frame: null, choices: null, links: null};
let drawing, pendingFrame = null;

function showMessage(text) {
  const message = $("message");
  message.textContent = text;
  message.hidden = !text;
}

async function attempt(action) {
  try {
    const result = await action();
    showMessage("");
    return result;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showMessage(error.message);
    renderControls();  // back to what the server holds
    return null;
  }
}

const change = (update) => attempt(async () => applyState(await api.update(state.key, update)));
const act = (action) => attempt(async () => applyState(await api.act(state.key, action)));

// -- rendering ---------------------------------------------------------------------------

function renderControls() {
  const s = state.settings;
  if (!s) return;
  const c = state.choices;
  $("datasets").replaceChildren(...c.datasets.map((name) => {
    const button = document.createElement("button");
    button.textContent = name;
    button.setAttribute("data-testid", `dataset-${name}`);
    button.classList.toggle("selected", name === s.dataset);
    button.onclick = () => change({dataset: name});
    return button;
  }));
  $("learning-rate").value = s.learning_rate;
  document.getElementById("learning-rates").replaceChildren(...c.learning_rates.map((rate) => new Option("", rate)));
  $("regularization-rate").replaceChildren(...c.regularization_rates.map((rate) => new Option(rate, rate)));
  $("regularization-rate").value = s.regularization_rate;
  for (const key of ["activation", "regularization", "problem"]) $(key).value = s[key];
  for (const [testid, key] of [["train-ratio", "train_ratio"], ["noise", "noise"], ["batch-size", "batch_size"]]) {
    $(testid).value = s[key];
    $(`${testid}-value`).textContent = s[key];
  }
  $("seed").textContent = s.seed;
  $("layer-count").textContent = s.hidden.length;
  $("add-layer").disabled = s.hidden.length >= c.max_layers;
  $("remove-layer").disabled = s.hidden.length === 0;
}

function renderModel() {
  const {model} = state;
  $("model-id").textContent = model.id;
  $("model-name").textContent = model.name;
  const name = model.name || model.id;
  const host = location.hostname || "localhost";
  const {grpc_port: port, tls, grafana} = state.links;
  const token = api.token ? ` -H 'Authorization: Bearer ${api.token}'` : "";
  const clientOptions = (tls ? ", tls=True" : "") + (api.token ? `, token='${api.token}'` : "");
  const width = model.spec.layers[0];
  const row = Array(width).fill(0.5);
  $("predict-command").textContent =
    `python -c "from nnserve.clients import Client; print(Client('${host}:${port}'${clientOptions}).get_model('${name}').predict([${JSON.stringify(row)}]))"`;
  $("curl-command").textContent =
    `curl${token} -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,${width}],"data":${JSON.stringify(row)}}]}' ${location.origin}/v2/models/${name}/infer`;
  $("promql").textContent =
    `nnserve_train_loss{model="${name}"} and rate(nnserve_training_job_steps_total{model="${name}"}[1m])`;
  // The shipped dashboard (deploy/grafana, uid nnserve), its model variable set to this one.
  const link = $("grafana-link");
  link.hidden = !grafana;
  if (grafana) link.href = `${grafana}/d/nnserve/nnserve?var-model=${encodeURIComponent(name)}`;
}

function renderPoints() {
  const canvas = $("output-points");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  if (!state.points) return;
  const classification = state.settings.problem === "classification";
  drawPoints(canvas, state.points.train, classification, false);
  if ($("show-test").checked) drawPoints(canvas, state.points.test, classification, true);
}

function renderNumbers(frame) {
  $("epoch").textContent = frame.epoch;
  const format = (value) => (value === null || value === undefined ? "\u2013" : value.toFixed(3));
  $("train-loss").textContent = format(frame.train_loss);
  $("test-loss").textContent = format(frame.test_loss);
  $("play").disabled = frame.playing || !state.trainable;
  $("pause").disabled = !frame.playing;
  $("step").disabled = !state.trainable;
}

function renderFrame() {
  pendingFrame = null;
  const frame = state.frame;
  if (!frame) return;
  renderNumbers(frame);
  drawing.setWeights(frame.weights);
  if (frame.heatmaps) {
    drawing.setHeatmaps(frame.heatmaps, frame.grid, decode);
    drawGrid($("output-heatmap"), decode(frame.heatmaps[frame.heatmaps.length - 1]), 0, frame.grid);
    // Heat-map frames drawn so far: what `nnserve bench playground` counts in a browser.
    document.body.dataset.heatmapFrames = String(Number(document.body.dataset.heatmapFrames || 0) + 1);
  }
  drawLosses($("loss-chart"), state.history);
}

function applyState(received) {
  // A stream's state may arrive after a newer one a POST answered with: keep the newer.
  if (received.key === state.key && received.revision < state.revision) return;
  state.key = received.key;
  state.revision = received.revision;
  state.settings = received.settings;
  state.model = received.model;
  state.points = received.points;
  state.trainable = received.trainable;
  state.choices = received.choices;
  state.links = received.links;
  state.history = received.history;
  const url = new URL(location.href);
  if (url.searchParams.get("model") !== received.key) {
    url.searchParams.set("model", received.key);
    history.replaceState(null, "", url);
  }
  renderControls();
  renderModel();
  const {layers} = received.model.spec;
  drawing.build(layers, received.owned || layers[0] === 2 ? received.settings.features : null,
                received.owned);
  renderPoints();
  if (state.frame) renderFrame();
  // The frame's numbers stand only if it is newer than this state (same model, later epoch).
  const frame = state.frame;
  if (!frame || frame.revision !== received.revision || frame.epoch < received.epoch) {
    renderNumbers({epoch: received.epoch, playing: received.playing,
                   train_loss: received.history.loss.at(-1), test_loss: received.history.val_loss.at(-1)});
  }
}

function applyFrame(frame) {
  if (frame.revision < state.revision) return;
  state.history.loss.push(...frame.history.loss);
  state.history.val_loss.push(...frame.history.val_loss);
  state.frame = frame;
  if (pendingFrame === null) pendingFrame = requestAnimationFrame(renderFrame);
}

// -- wiring ------------------------------------------------------------------------------

function wireControls() {
  for (const action of ["play", "pause", "step", "reset"]) $(action).onclick = () => act(action);
  $("learning-rate").onchange = (event) => {
    const typed = event.target.value.trim();
    const value = Number(typed);
    change({learning_rate: typed === "" || Number.isNaN(value) ? typed : value});
  };
  for (const key of ["activation", "regularization", "problem"]) $(key).onchange = (event) => change({[key]: event.target.value});
  $("regularization-rate").onchange = (event) => change({regularization_rate: Number(event.target.value)});
  for (const [testid, key] of [["train-ratio", "train_ratio"], ["noise", "noise"], ["batch-size", "batch_size"]]) {
    $(testid).oninput = (event) => { $(`${testid}-value`).textContent = event.target.value; };
    $(testid).onchange = (event) => change({[key]: Number(event.target.value)});
  }
  $("regenerate").onclick = () => change({seed: state.settings.seed + 1});
  $("add-layer").onclick = () => change({hidden: [...state.settings.hidden, 2]});
  $("remove-layer").onclick = () => change({hidden: state.settings.hidden.slice(0, -1)});
  $("show-test").onchange = renderPoints;
  $("token").value = api.token;
  $("token").onchange = (event) => {  // also fired by a blur after a synthetic change
    const token = event.target.value.trim();
    if (token === api.token) return;
    api.setToken(token);
    load();
  };
  $("open-model").onkeydown = (event) => {
    if (event.key === "Enter" && event.target.value.trim()) location.search = `?model=${encodeURIComponent(event.target.value.trim())}`;
  };
  drawing = new NetworkDrawing($("network"), {
    toggleFeature: (name) => {
      const on = state.settings.features;
      change({features: on.includes(name) ? on.filter((f) => f !== name) : [...on, name]});
    },
    addNeuron: (layer) => change({hidden: state.settings.hidden.map((n, i) => (i === layer ? n + 1 : n))}),
    removeNeuron: (layer) => change({hidden: state.settings.hidden.map((n, i) => (i === layer ? n - 1 : n))}),
    hover: (text) => { $("weight-hover").textContent = text; },
  });
}

let streaming = null;

async function connect() {
  streaming?.abort();
  const controller = streaming = new AbortController();
  while (!controller.signal.aborted) {
    try {
      await api.stream(state.key, (kind, payload) => (kind === "state" ? applyState(payload) : applyFrame(payload)),
                       controller.signal);
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError) showMessage(error.message);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

// The URL's model, or a new one; again whenever the token changes.
async function load() {
  const model = new URL(location.href).searchParams.get("model");
  const received = await attempt(() => (model ? api.state(model) : api.create({})));
  if (received) {
    applyState(received);
    connect();
  }
  document.body.dataset.ready = "true";
}

wireControls();
load();
