"""The playground (service/playground): its data sets, its JSON API and Server-Sent Events
on the REST port, and its page driven in a real Chromium through Playwright.

Every server is create_server(...) on free ports; polls are bounded (a deadline, never an
assertion on elapsed time). The browser tests skip, saying why, where Playwright or
/usr/bin/chromium is missing (CI installs both: .ci/run).
"""

import contextlib
import io
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from nnserve.model import Network
from nnserve.service.playground.data import generate, split
from service_support import pb, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
POLL_SECONDS = 120  # the bound of every wait below; the waits usually end in a second or two
# A classifier that has learnt nothing predicts 0.5 everywhere: binary cross-entropy
# ln 2 = 0.693. Below 0.25 the predicted probability of the true class averages (in
# geometric mean) above e^-0.25 = 0.78 on held-out points, which on the spiral needs the
# decision boundary to follow both arms; [2, 8, 8, 1] tanh reaches ~0.05 in a few
# thousand epochs.
SPIRAL_TEST_LOSS = 0.25


def poll(condition, what, seconds=POLL_SECONDS, interval=0.05):
    """condition()'s first truthy value within `seconds`; fails saying `what` otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"not within {seconds} s: {what}")


class Rest:
    """JSON calls to a server's playground API."""

    def __init__(self, port, token=None):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method, path, body=None):
        """(status, decoded JSON body)."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def ok(self, method, path, body=None):
        status, payload = self.call(method, path, body)
        assert status in (200, 201), payload
        return payload

    def create(self, **settings):
        return self.ok("POST", "/playground/api/models", settings)

    def act(self, key, action):
        return self.ok("POST", f"/playground/api/models/{key}/{action}")

    def frame(self, key):
        return self.ok("GET", f"/playground/api/models/{key}/frame")


def grpc_layers(running, model):
    return list(running.stub.GetModel(pb.GetModelRequest(model=model)).model.spec.layers)


GRAFANA = "http://grafana.example:3000"


@pytest.fixture(scope="module")
def server():
    with running_server(grafana_url=GRAFANA + "/") as running:
        yield running


@pytest.fixture
def rest(server):
    return Rest(server.server.http_port)


# -- data --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["circle", "xor", "gaussian", "spiral", "plane", "multi-gaussian"])
def test_data_sets_are_deterministic_in_their_seed(name):
    """The same (name, seed, noise) gives the same points; another seed other points."""
    points, targets = generate(name, 7, 25)
    again, again_targets = generate(name, 7, 25)
    other, _ = generate(name, 8, 25)
    np.testing.assert_array_equal(points, again)
    np.testing.assert_array_equal(targets, again_targets)
    assert not np.array_equal(points, other)
    assert points.dtype == np.float32 and points.shape[1] == 2 and len(targets) == len(points)
    if name in ("plane", "multi-gaussian"):
        assert len(points) == 1200 and np.all(np.abs(targets) <= 1)
    else:
        assert len(points) == 500 and set(np.unique(targets)) == {0.0, 1.0}


def test_split_keeps_the_train_ratio():
    """A 30% split has 30% of the points for training and the rest for testing."""
    points, targets = generate("circle", 1, 0)
    (train, _), (test, _) = split(points, targets, 1, 30)
    assert (len(train), len(test)) == (150, 350)


def test_layer_activations_end_with_predict():
    """Network.layer_activations gives every layer's activations; the last is predict's output."""
    network = Network([2, 8, 8, 1], ["tanh", "tanh", "sigmoid"], "binary_cross_entropy")
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    layers, version = network.layer_activations(x)
    assert [layer.shape for layer in layers] == [(7, 8), (7, 8), (7, 1)]
    assert version == network.version
    np.testing.assert_array_equal(layers[-1], network.predict(x))
    np.testing.assert_allclose(layers[0], np.tanh(x @ network.get_weights()[0][0]), rtol=1e-5, atol=1e-6)


# -- the API -----------------------------------------------------------------------------

def test_create_makes_a_registry_model_of_the_settings(server, rest):
    """A new playground model has one input per feature on and the hidden layers asked for, over gRPC too."""
    state = rest.create(dataset="xor", features=["x1", "x2", "x1_x2"], hidden=[5, 3], activation="relu")
    assert state["model"]["spec"]["layers"] == [3, 5, 3, 1]
    assert state["model"]["spec"]["activations"] == ["relu", "relu", "sigmoid"]
    assert grpc_layers(server, state["key"]) == [3, 5, 3, 1]
    assert len(state["points"]["train"]) == 250 and len(state["points"]["test"]) == 250
    assert state["epoch"] == 0 and not state["playing"]


def test_step_advances_exactly_one_epoch(rest):
    """Step trains one epoch: the epoch goes 0 -> 1 -> 2 with one train and one test loss each."""
    key = rest.create()["key"]
    assert rest.act(key, "step")["epoch"] == 1
    state = rest.act(key, "step")
    assert state["epoch"] == 2
    assert len(state["history"]["loss"]) == 2 and len(state["history"]["val_loss"]) == 2


def test_play_trains_until_paused_and_reset_starts_over(rest):
    """Play advances the epoch until pause; after pause it stays; reset gives epoch 0 and new weights."""
    key = rest.create(dataset="circle")["key"]
    rest.act(key, "play")
    poll(lambda: rest.frame(key)["epoch"] >= 3, "three epochs while playing")
    paused = rest.act(key, "pause")
    assert not paused["playing"] and paused["epoch"] >= 3
    weights = rest.frame(key)["weights"]
    assert rest.frame(key)["epoch"] == paused["epoch"]
    reset = rest.act(key, "reset")
    assert reset["epoch"] == 0 and reset["history"] == {"loss": [], "val_loss": []}
    assert rest.frame(key)["weights"] != weights


def test_an_invalid_learning_rate_is_refused_and_nothing_changes(rest):
    """A learning rate not in TF Playground's list is a 400 with a "got X, expected" message; the model stays."""
    state = rest.create()
    status, payload = rest.call("POST", f"/playground/api/models/{state['key']}/settings",
                                {"learning_rate": 0.5})
    assert status == 400 and payload["error"].startswith("learning_rate: got 0.5, expected one of")
    after = rest.ok("GET", f"/playground/api/models/{state['key']}")
    assert after["settings"] == state["settings"] and after["model"]["id"] == state["model"]["id"]


def test_learning_rate_and_regularization_keep_the_weights(rest):
    """Changing the learning rate or regularization keeps the weights (and epoch) under the new spec."""
    key = rest.create()["key"]
    rest.act(key, "step")
    weights = rest.frame(key)["weights"]
    state = rest.ok("POST", f"/playground/api/models/{key}/settings",
                    {"learning_rate": 0.3, "regularization": "l1", "regularization_rate": 0.001})
    spec = state["model"]["spec"]
    assert (spec["learning_rate"], spec["l1"], spec["weight_decay"]) == (0.3, 0.001, 0.0)
    assert state["epoch"] == 1 and rest.frame(key)["weights"] == weights
    spec = rest.ok("POST", f"/playground/api/models/{key}/settings", {"regularization": "l2"})["model"]["spec"]
    assert (spec["l1"], spec["weight_decay"]) == (0.0, 0.001)


def test_layers_change_the_model_spec(server, rest):
    """Adding and removing hidden layers replaces the model under the same name, as gRPC sees it."""
    key = rest.create(hidden=[4])["key"]
    rest.ok("POST", f"/playground/api/models/{key}/settings", {"hidden": [4, 6]})
    assert grpc_layers(server, key) == [2, 4, 6, 1]
    rest.ok("POST", f"/playground/api/models/{key}/settings", {"hidden": []})
    assert grpc_layers(server, key) == [2, 1]


def test_heat_maps_are_what_the_model_computes(server, rest):
    """The output heat map is the model's prediction on the grid (2p - 1, one byte per point), one map per neuron per layer."""
    import base64

    state = rest.create(hidden=[3])
    key = state["key"]
    frame = rest.frame(key)
    grid = frame["grid"]
    maps = [np.frombuffer(base64.b64decode(encoded), np.uint8) for encoded in frame["heatmaps"]]
    assert [len(m) for m in maps] == [3 * grid * grid, grid * grid]
    centres = (np.arange(grid) + 0.5) / grid * 12 - 6
    x1, x2 = np.meshgrid(centres, centres[::-1])
    x = np.stack([x1.ravel(), x2.ravel()], axis=1)
    request = pb.PredictRequest(model=key, x=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=x.shape,
                                                       content=x.astype("<f4").tobytes()))
    reply = server.stub.Predict(request)
    p = np.frombuffer(reply.outputs.content, "<f4")
    np.testing.assert_allclose(maps[-1] / 127.5 - 1, 2 * p - 1, atol=1 / 127.5 + 1e-6)


def test_a_two_input_model_it_cannot_train_still_shows_its_heat_maps(server, rest):
    """A 2-input softmax classifier made over gRPC (3 classes: not trainable on playground
    data) opens with a heat map per neuron, each output's map its class probability on the
    grid as Predict gives it (2p - 1)."""
    import base64

    spec = pb.ModelSpec(layers=[2, 4, 3], activations=[pb.ACTIVATION_TANH, pb.ACTIVATION_SOFTMAX],
                        loss=pb.LOSS_CROSS_ENTROPY, optimizer=pb.OPTIMIZER_SGD,
                        init=pb.INIT_XAVIER, dtype=pb.DATA_TYPE_FLOAT32)
    server.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="three-classes"))
    state = rest.ok("GET", "/playground/api/models/three-classes")
    assert not state["trainable"] and state["settings"]["problem"] == "classification"
    frame = rest.frame("three-classes")
    grid = frame["grid"]
    maps = [np.frombuffer(base64.b64decode(encoded), np.uint8) for encoded in frame["heatmaps"]]
    assert [len(m) for m in maps] == [4 * grid * grid, 3 * grid * grid]
    centres = (np.arange(grid) + 0.5) / grid * 12 - 6
    x1, x2 = np.meshgrid(centres, centres[::-1])
    x = np.stack([x1.ravel(), x2.ravel()], axis=1)
    request = pb.PredictRequest(model="three-classes", x=pb.Tensor(
        dtype=pb.DATA_TYPE_FLOAT32, shape=x.shape, content=x.astype("<f4").tobytes()))
    p = np.frombuffer(server.stub.Predict(request).outputs.content, "<f4").reshape(-1, 3)
    np.testing.assert_allclose(maps[-1].reshape(3, -1).T / 127.5 - 1, 2 * p - 1,
                               atol=1 / 127.5 + 1e-6)


def test_events_stream_state_then_frames_as_training_runs(rest):
    """The SSE stream sends the state, then frames whose epochs grow while the model plays, with every epoch's losses once."""
    key = rest.create(dataset="gaussian")["key"]
    rest.act(key, "play")
    request = urllib.request.Request(f"{rest.base}/playground/api/models/{key}/events")
    events = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind = None
        deadline = time.monotonic() + POLL_SECONDS
        while time.monotonic() < deadline and sum(k == "frame" for k, _ in events) < 5:
            line = response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: "):])))
    rest.act(key, "pause")
    assert events[0][0] == "state"
    frames = [payload for kind, payload in events if kind == "frame"]
    assert len(frames) == 5
    epochs = [frame["epoch"] for frame in frames]
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
    sent = len(events[0][1]["history"]["loss"]) + sum(len(f["history"]["loss"]) for f in frames)
    assert sent == frames[-1]["epoch"]


def test_an_existing_model_opens_by_name(server, rest):
    """A 2-input registry model made over gRPC opens by name, with its spec, trainable on playground data."""
    spec = pb.ModelSpec(layers=[2, 5, 1], activations=[pb.ACTIVATION_TANH, pb.ACTIVATION_SIGMOID],
                        loss=pb.LOSS_BINARY_CROSS_ENTROPY, optimizer=pb.OPTIMIZER_SGD,
                        init=pb.INIT_XAVIER, dtype=pb.DATA_TYPE_FLOAT32)
    server.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="made-over-grpc"))
    state = rest.ok("GET", "/playground/api/models/made-over-grpc")
    assert state["model"]["name"] == "made-over-grpc" and state["trainable"] and not state["owned"]
    assert state["settings"]["hidden"] == [5] and state["settings"]["activation"] == "tanh"
    assert state["links"] == {"grpc_port": server.port, "tls": False, "grafana": GRAFANA}
    assert rest.act("made-over-grpc", "step")["epoch"] == 1
    status, payload = rest.call("POST", "/playground/api/models/made-over-grpc/settings", {"hidden": [2]})
    assert status == 400 or status == 412, payload
    status, payload = rest.call("GET", "/playground/api/models/no-such-model")
    assert status == 404 and "no-such-model" in payload["error"]


def test_a_model_the_playground_did_not_make_keeps_its_spec_id_and_weights(server, rest):
    """An Adam float64 model opened in the playground: a learning-rate or regularization
    change is refused (400, naming what may change) and the model is untouched; a batch
    size change is taken."""
    spec = pb.ModelSpec(layers=[2, 4, 1], activations=[pb.ACTIVATION_RELU, pb.ACTIVATION_SIGMOID],
                        loss=pb.LOSS_BINARY_CROSS_ENTROPY, optimizer=pb.OPTIMIZER_ADAM,
                        init=pb.INIT_XAVIER, dtype=pb.DATA_TYPE_FLOAT64, learning_rate=0.003)
    made = server.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="adam-over-grpc")).model
    assert rest.act("adam-over-grpc", "step")["epoch"] == 1
    before = server.stub.GetState(pb.GetStateRequest(model=made.id))
    for change in ({"learning_rate": 0.1}, {"regularization": "l2", "regularization_rate": 0.01}):
        status, payload = rest.call("POST", "/playground/api/models/adam-over-grpc/settings", change)
        assert status == 400 and "batch_size" in payload["error"], payload
    after = server.stub.GetState(pb.GetStateRequest(model=made.id))
    assert after == before
    model = server.stub.GetModel(pb.GetModelRequest(model="adam-over-grpc")).model
    assert model.id == made.id and model.spec == made.spec
    rest.ok("POST", "/playground/api/models/adam-over-grpc/settings", {"batch_size": 5})


def test_deleting_a_playground_model_over_grpc_drops_its_session_and_data(server, rest):
    """DeleteModel on a playground model removes its two data sets; the playground then answers 404 for it."""
    key = rest.create()["key"]
    datasets = len(server.stub.ListDatasets(pb.ListDatasetsRequest(page_size=1000)).datasets)
    server.stub.DeleteModel(pb.DeleteModelRequest(model=key))
    assert len(server.stub.ListDatasets(pb.ListDatasetsRequest(page_size=1000)).datasets) == datasets - 2
    assert rest.call("GET", f"/playground/api/models/{key}")[0] == 404


@contextlib.contextmanager
def token_server(tmp_path):
    read, write = tmp_path / "read", tmp_path / "write"
    read.write_text("reader-token-0123456789\n")
    write.write_text("writer-token-0123456789\n")
    with running_server(read_tokens_file=str(read), write_tokens_file=str(write)) as running:
        yield running


def test_with_tokens_a_read_token_watches_and_a_write_token_trains(tmp_path):
    """No token: 401; a read token: state, frame and events but 403 on play; a write token: play."""
    with token_server(tmp_path) as running:
        port = running.server.http_port
        key = Rest(port, "writer-token-0123456789").create()["key"]
        assert Rest(port).call("GET", f"/playground/api/models/{key}")[0] == 401
        reader = Rest(port, "reader-token-0123456789")
        assert reader.call("GET", f"/playground/api/models/{key}")[0] == 200
        assert reader.call("GET", f"/playground/api/models/{key}/frame")[0] == 200
        status, payload = reader.call("POST", f"/playground/api/models/{key}/play")
        assert status == 403 and "write scope" in payload["error"]
        assert reader.call("POST", "/playground/api/models", {})[0] == 403
        assert Rest(port, "writer-token-0123456789").act(key, "step")["epoch"] == 1


def test_the_page_and_its_files_are_served(rest):
    """GET /playground is the page; its modules come from /playground/static; other names are 404."""
    with urllib.request.urlopen(rest.base + "/playground", timeout=30) as response:
        page = response.read().decode()
    assert 'data-testid="output-heatmap"' in page
    for name in ("playground.js", "api.js", "heatmap.js", "network.js", "chart.js", "playground.css"):
        with urllib.request.urlopen(f"{rest.base}/playground/static/{name}", timeout=30) as response:
            assert response.status == 200
    status, payload = rest.call("GET", "/playground/static/..%2Fsessions.py")
    assert status == 404


# -- the page in Chromium ----------------------------------------------------------------

def _browser_missing():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"no browser at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


# Where .ci/run runs (it installs the browser and sets NNSERVE_CI), a missing browser
# fails these tests instead of skipping them.
browser_test = pytest.mark.skipif(_browser_missing() is not None and not os.environ.get("NNSERVE_CI"),
                                  reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """open_page(port, model=None): a page in a browser context of its own, loaded; every
    context is closed after the test (so no stream outlives it)."""
    contexts = []

    def open_(port, model=None):
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/playground" + (f"?model={model}" if model else ""))
        page.wait_for_selector("body[data-ready=true]", state="attached")
        return page

    yield open_
    for context in contexts:
        context.close()


def shown_epoch(page):
    return int(page.get_by_test_id("epoch").text_content())


def model_key(page):
    return page.get_by_test_id("model-name").text_content()


def set_up_spiral(page):
    """Spiral, two hidden layers of 8 tanh neurons, through the page's controls."""
    page.get_by_test_id("dataset-spiral").click()
    page.get_by_test_id("activation").select_option("tanh")
    page.get_by_test_id("remove-layer").click()
    page.wait_for_function("document.querySelector('[data-testid=layer-count]').textContent === '1'")
    page.get_by_test_id("add-layer").click()
    page.wait_for_function("document.querySelector('[data-testid=layer-count]').textContent === '2'")
    for layer in (0, 1):
        for _ in range(8):
            count = json.loads(page.get_by_test_id("network").get_attribute("data-layers"))[layer + 1]
            if count == 8:
                break
            page.get_by_test_id(f"add-neuron-{layer}").click()
            page.wait_for_function(
                f"JSON.parse(document.querySelector('[data-testid=network]').dataset.layers)[{layer + 1}] === {count + 1}")


@browser_test
def test_the_page_trains_the_spiral_and_draws_its_boundary(server, open_page, rest, tmp_path):
    """Spiral with 2x8 tanh: play until the shown test loss < SPIRAL_TEST_LOSS, pause; the output heat map's colour agrees with most training points' labels."""
    from PIL import Image

    page = open_page(server.server.http_port)
    assert "model=playground-" in page.url
    set_up_spiral(page)
    key = model_key(page)
    assert grpc_layers(server, key) == [2, 8, 8, 1]
    page.get_by_test_id("play").click()
    poll(lambda: page.get_by_test_id("test-loss").text_content() not in ("\u2013", "")
         and float(page.get_by_test_id("test-loss").text_content()) < SPIRAL_TEST_LOSS,
         f"a shown test loss below {SPIRAL_TEST_LOSS}", interval=0.25)
    page.get_by_test_id("pause").click()
    page.wait_for_function("document.querySelector('[data-testid=pause]').disabled")
    epoch = shown_epoch(page)
    assert epoch > 0 and epoch == rest.ok("GET", f"/playground/api/models/{key}")["epoch"]
    page.wait_for_timeout(300)  # the last frame's requestAnimationFrame
    # The points are drawn on a canvas over the heat map: hide it to see the heat map's pixels.
    page.get_by_test_id("output-points").evaluate("canvas => canvas.style.visibility = 'hidden'")
    picture = Image.open(io.BytesIO(page.get_by_test_id("output-heatmap").screenshot())).convert("RGB")
    page.get_by_test_id("output-points").evaluate("canvas => canvas.style.visibility = 'visible'")
    page.screenshot(path=str(tmp_path / "spiral.png"), full_page=True)
    width, height = picture.size
    points = rest.ok("GET", f"/playground/api/models/{key}")["points"]["train"]
    agree = 0
    for x1, x2, label in points:
        column = min(width - 1, int((x1 + 6) / 12 * width))
        row = min(height - 1, int((6 - x2) / 12 * height))
        red, _, blue = picture.getpixel((column, row))
        agree += (blue > red) == (label == 1.0)  # blue: class 1, orange: class 0
    assert agree >= 0.85 * len(points), f"{agree} of {len(points)} points on their colour"


@browser_test
def test_step_reset_and_layers_in_the_page(server, open_page, rest):
    """Step shows one more epoch; reset shows epoch 0 and new weights; +/- layer redraws the network and changes the spec over gRPC.
    The page's commands name this server's gRPC port and the model, and its Grafana link the shipped dashboard for the model."""
    page = open_page(server.server.http_port)
    key = model_key(page)
    command = page.get_by_test_id("predict-command").text_content()
    assert f"Client('127.0.0.1:{server.port}')" in command and f"get_model('{key}')" in command
    assert f"/v2/models/{key}/infer" in page.get_by_test_id("curl-command").text_content()
    assert page.get_by_test_id("grafana-link").get_attribute("href") == f"{GRAFANA}/d/nnserve/nnserve?var-model={key}"
    page.get_by_test_id("step").click()
    page.wait_for_function("document.querySelector('[data-testid=epoch]').textContent === '1'")
    page.get_by_test_id("step").click()
    page.wait_for_function("document.querySelector('[data-testid=epoch]').textContent === '2'")
    assert shown_epoch(page) == 2
    weights = rest.frame(key)["weights"]
    drawn = page.locator("line.weight").evaluate_all("lines => lines.map(l => l.dataset.weight)")
    page.get_by_test_id("reset").click()
    page.wait_for_function("document.querySelector('[data-testid=epoch]').textContent === '0'")
    assert rest.frame(key)["weights"] != weights
    page.wait_for_function(f"JSON.stringify([...document.querySelectorAll('line.weight')].map(l => l.dataset.weight)) !== {json.dumps(json.dumps(drawn))}")

    layers = grpc_layers(server, key)
    lines = page.locator("line.weight").count()
    page.get_by_test_id("add-layer").click()
    page.wait_for_function(f"document.querySelectorAll('line.weight').length !== {lines}")
    assert grpc_layers(server, key) == layers[:-1] + [2, 1]
    assert json.loads(page.get_by_test_id("network").get_attribute("data-layers")) == layers[:-1] + [2, 1]
    page.get_by_test_id("remove-layer").click()
    page.wait_for_function(f"document.querySelectorAll('line.weight').length === {lines}")
    assert grpc_layers(server, key) == layers


@browser_test
def test_the_pages_data_and_feature_controls_and_its_weight_hover(server, open_page, rest):
    """A feature button changes the model's inputs (gRPC spec); regenerate shows the next
    seed; the train-ratio and batch-size sliders reach the settings; "show test data" draws
    more points; hovering a weight line shows its value; two stepped epochs draw the loss
    curve, and the epoch shown is the server's after each step."""
    page = open_page(server.server.http_port)
    key = model_key(page)
    width = grpc_layers(server, key)[0]
    page.get_by_test_id("feature-x1_x2").click()
    page.wait_for_function(f"document.querySelectorAll('line.weight').length > 0 && "
                           f"JSON.parse(document.querySelector('[data-testid=network]').dataset.layers)[0] === {width + 1}")
    assert grpc_layers(server, key)[0] == width + 1
    assert "x1_x2" in rest.ok("GET", f"/playground/api/models/{key}")["settings"]["features"]

    seed = int(page.get_by_test_id("seed").text_content())
    page.get_by_test_id("regenerate").click()
    page.wait_for_function(f"document.querySelector('[data-testid=seed]').textContent === '{seed + 1}'")
    for testid, key_name, value in (("train-ratio", "train_ratio", "70"), ("batch-size", "batch_size", "25")):
        page.get_by_test_id(testid).fill(value)  # a range input: fill sets it and fires change
        page.wait_for_function(f"document.querySelector('[data-testid={testid}-value]').textContent === '{value}'")
    settings = rest.ok("GET", f"/playground/api/models/{key}")["settings"]
    assert (settings["train_ratio"], settings["batch_size"]) == (70, 25)

    def painted(testid):
        return page.get_by_test_id(testid).evaluate(
            "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v).length")

    points = painted("output-points")
    page.get_by_test_id("show-test").check()
    page.wait_for_function(f"(c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                           f".filter((v, i) => i % 4 === 3 && v).length > {points})"
                           f"(document.querySelector('[data-testid=output-points]'))")

    page.wait_for_function("document.querySelector('line.weight').dataset.weight !== undefined")  # a frame's weights drawn
    line = page.locator("line.weight").first
    line.dispatch_event("mouseenter")  # what a pointer over the line fires
    page.wait_for_function("document.querySelector('[data-testid=weight-hover]').textContent.startsWith('weight ')")
    shown = page.get_by_test_id("weight-hover").text_content()
    assert shown.split()[1] == f"{float(line.get_attribute('data-weight')):.4f}"

    blank = painted("loss-chart")
    for epoch in ("1", "2"):  # a curve needs two epochs: one is a point, which strokes nothing
        page.get_by_test_id("step").click()
        page.wait_for_function(f"document.querySelector('[data-testid=epoch]').textContent === '{epoch}'")
    page.wait_for_function(f"(c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                           f".filter((v, i) => i % 4 === 3 && v).length > {blank})"
                           f"(document.querySelector('[data-testid=loss-chart]'))")


def test_the_events_draw_a_new_model_at_once_though_its_version_is_the_old_ones(rest):
    """A layer added before any training: the stream sends the new state and then a frame of
    the new network (both at weights version 0), not only the state."""
    key = rest.create(hidden=[3])["key"]
    request = urllib.request.Request(f"{rest.base}/playground/api/models/{key}/events")
    events, kind = [], None
    with urllib.request.urlopen(request, timeout=60) as response:
        deadline = time.monotonic() + POLL_SECONDS
        changed = False
        while time.monotonic() < deadline:
            line = response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: "):])))
                if not changed and kind == "frame":
                    rest.ok("POST", f"/playground/api/models/{key}/settings", {"hidden": [3, 5]})
                    changed = True
                elif changed and kind == "frame":
                    break
    assert [k for k, _ in events][:2] == ["state", "frame"]
    last_state = [payload for k, payload in events if k == "state"][-1]
    assert last_state["model"]["spec"]["layers"] == [2, 3, 5, 1]
    frame = events[-1][1]
    assert events[-1][0] == "frame" and frame["version"] == 0
    assert [len(layer["b"]) for layer in frame["weights"]] == [3, 5, 1]


def test_a_regression_model_trains_on_the_plane(rest):
    """Problem regression on the plane data: a linear output trained by mean squared error,
    its train and test loss falling over a few epochs."""
    state = rest.create(problem="regression", dataset="plane", hidden=[4], learning_rate=0.03)
    key = state["key"]
    assert state["model"]["spec"]["loss"] == "mse" and state["model"]["spec"]["activations"][-1] == "identity"
    first = rest.act(key, "step")["history"]
    for _ in range(9):
        last = rest.act(key, "step")["history"]
    assert len(last["loss"]) == 10
    assert last["loss"][-1] < first["loss"][0] and last["val_loss"][-1] < first["val_loss"][0]


@browser_test
def test_a_second_viewer_sees_the_training_live(server, open_page, rest):
    """A second browser context on the same model sees its epoch advance without pressing anything, and a settings change by the first."""
    first = open_page(server.server.http_port)
    key = model_key(first)
    second = open_page(server.server.http_port, model=key)
    assert model_key(second) == key
    first.get_by_test_id("play").click()
    poll(lambda: shown_epoch(second) >= 5, "the second page's epoch advancing")
    first.get_by_test_id("pause").click()
    # The server's frame says the training stopped (settings of a running job do not change).
    poll(lambda: first.get_by_test_id("play").is_enabled(), "the first page to show the pause")
    first.get_by_test_id("noise").fill("25")
    first.get_by_test_id("noise").dispatch_event("change")
    poll(lambda: second.get_by_test_id("noise-value").text_content() == "25", "the second page's noise")


@browser_test
def test_an_invalid_learning_rate_is_refused_in_the_page(server, open_page, rest):
    """A typed learning rate outside TF Playground's list shows the server's message; the setting and model stay."""
    page = open_page(server.server.http_port)
    key = model_key(page)
    before = rest.ok("GET", f"/playground/api/models/{key}")
    field = page.get_by_test_id("learning-rate")
    field.fill("0.5")
    field.press("Enter")
    field.blur()
    message = page.get_by_test_id("message")
    message.wait_for(state="visible")
    assert "learning_rate: got 0.5" in message.text_content()
    assert field.input_value() == "0.03"
    after = rest.ok("GET", f"/playground/api/models/{key}")
    assert after["settings"] == before["settings"] and after["model"]["id"] == before["model"]["id"]


@browser_test
def test_with_tokens_a_read_token_watches_but_cannot_train(tmp_path, open_page):
    """With tokens on, a page given a read token shows the model training (by another) but its play is refused visibly."""
    with token_server(tmp_path) as running:
        port = running.server.http_port
        writer = Rest(port, "writer-token-0123456789")
        key = writer.create()["key"]
        page = open_page(port, model=key)
        assert "authorization" in page.get_by_test_id("message").text_content()
        page.get_by_test_id("token").fill("reader-token-0123456789")
        page.get_by_test_id("token").dispatch_event("change")
        page.wait_for_function(f"document.querySelector('[data-testid=model-name]').textContent === '{key}'")
        page.get_by_test_id("play").click()
        message = page.get_by_test_id("message")
        poll(lambda: "write scope" in (message.text_content() or ""), "the refusal shown", seconds=15)
        assert writer.ok("GET", f"/playground/api/models/{key}")["epoch"] == 0
        writer.act(key, "play")
        poll(lambda: shown_epoch(page) >= 3, "the read-token page watching the epoch advance")
        writer.act(key, "pause")


def test_the_page_is_package_data():
    """Every file of the page matches pyproject's package-data for nnserve.service.playground, so an install serves it."""
    import fnmatch
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parent.parent
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "nnserve.service.playground" in setuptools["packages"]
    patterns = setuptools["package-data"]["nnserve.service.playground"]
    static = root / "service" / "playground" / "static"
    files = [path.relative_to(static.parent).as_posix() for path in static.iterdir()]
    assert files and all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in files)
