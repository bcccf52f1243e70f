"""`nnserve bench playground`: the playground's heat-map frames per second for a 6x8
network while it trains, and its training speed with one page watching against none.

A server runs in this process (free ports). The viewer (`--viewer`) is the page itself in
Debian's Chromium, headless, driven by Playwright, counting the heat-map frames it drew
(the page's `data-heatmap-frames`): decoding and drawing take the same two cores as the
training. Or, where there is no browser, a separate Python process reading the model's
Server-Sent Events as a page does and counting frames with heat maps. Each round plays
the model for `--seconds` without a viewer and then with one, and measures epochs per
second from the frames' epoch counter; figures are medians over the rounds.
"""

import functools
import json
import statistics
import subprocess
import sys
import time
import urllib.request

__all__ = ["measure", "run"]

SETTINGS = {"dataset": "spiral", "hidden": [8] * 6, "activation": "tanh", "batch_size": 10}
CHROMIUM = "/usr/bin/chromium"
# Headless on a closed network: without the networking flags Chromium's background
# connections fail.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TARGET_FPS, TARGET_RATIO = 10, 0.8
# The viewer: reads the stream for a duration (or until it falls silent: paused); prints
# how many frames with heat maps it got and over how long (first to last).
VIEWER = r"""
import json, sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
frames, times = 0, []
with urllib.request.urlopen(url, timeout=2) as stream:
    print("connected", flush=True)
    kind, deadline = None, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            line = stream.readline().decode()
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: ") and kind == "frame" and json.loads(line[6:])["heatmaps"]:
                times.append(time.monotonic())
    except TimeoutError:
        pass
print(json.dumps({"frames": len(times), "seconds": times[-1] - times[0] if times else 0}), flush=True)
"""


def _call(base, method, path):
    request = urllib.request.Request(base + path, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _epochs_per_second(base, key, seconds):
    _call(base, "POST", f"/playground/api/models/{key}/play")
    time.sleep(0.5)  # past the job's start
    started, first = time.monotonic(), _call(base, "GET", f"/playground/api/models/{key}/frame")["epoch"]
    time.sleep(seconds)
    elapsed, last = time.monotonic() - started, _call(base, "GET", f"/playground/api/models/{key}/frame")["epoch"]
    _call(base, "POST", f"/playground/api/models/{key}/pause")
    return (last - first) / elapsed


def _watched_by_process(base, key, seconds):
    """(epochs/s, heat-map frames/s) of one turn watched by the Python viewer."""
    viewer = subprocess.Popen(
        [sys.executable, "-c", VIEWER, f"{base}/playground/api/models/{key}/events", str(seconds + 1.5)],
        stdout=subprocess.PIPE, text=True)
    viewer.stdout.readline()  # connected
    rate = _epochs_per_second(base, key, seconds)
    counts = json.loads(viewer.stdout.readline())
    viewer.wait(timeout=60)
    return rate, (counts["frames"] - 1) / counts["seconds"] if counts["seconds"] else 0.0


def _watched_by_chromium(browser, base, key, seconds):
    """_watched_by_process's twin: the page open in `browser`."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{base}/playground?model={key}")
        page.wait_for_selector("[data-testid=output-heatmap]")

        def drawn():
            return int(page.evaluate("Number(document.body.dataset.heatmapFrames || 0)"))

        _call(base, "POST", f"/playground/api/models/{key}/play")
        time.sleep(0.5)  # past the job's start and the page's first frames
        started, first_frame = time.monotonic(), drawn()
        first_epoch = _call(base, "GET", f"/playground/api/models/{key}/frame")["epoch"]
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        frames, last_epoch = drawn() - first_frame, _call(base, "GET", f"/playground/api/models/{key}/frame")["epoch"]
        _call(base, "POST", f"/playground/api/models/{key}/pause")
    finally:
        context.close()
    return (last_epoch - first_epoch) / elapsed, frames / elapsed


def measure(base, key, seconds, rounds, watch=_watched_by_process):
    """{"alone": epochs/s, "watched": epochs/s, "ratio": of watched to alone per round,
    "frames_per_second": heat-map frames the viewer got} (medians over the rounds)."""
    alone, watched, fps = [], [], []
    for _ in range(rounds):
        alone.append(_epochs_per_second(base, key, seconds))
        rate, frames = watch(base=base, key=key, seconds=seconds)
        watched.append(rate)
        fps.append(frames)
    return {"alone": statistics.median(alone), "watched": statistics.median(watched),
            "ratio": statistics.median(w / a for w, a in zip(watched, alone)),
            "frames_per_second": statistics.median(fps)}


def _browser():
    """Playwright and Chromium, started, or None when either is missing."""
    import os

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(CHROMIUM):
        return None
    playwright = sync_playwright().start()
    return playwright, playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=CHROMIUM_ARGS)


def run(args):
    from nnserve.service import Settings, create_server

    server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=-1))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        state = _call(base, "POST", "/playground/api/models")
        key = state["key"]
        request = urllib.request.Request(f"{base}/playground/api/models/{key}/settings",
                                         data=json.dumps(SETTINGS).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=60).read()
        _call(base, "POST", f"/playground/api/models/{key}/step")  # compiles before timing
        browser = _browser() if args.viewer == "chromium" else None
        if args.viewer == "chromium" and browser is None:
            print(f"nnserve bench playground: error: --viewer chromium needs the playwright package "
                  f"and {CHROMIUM} (apt-get install chromium); --viewer process needs neither",
                  file=sys.stderr)
            return 2
        try:
            watch = functools.partial(_watched_by_chromium, browser[1]) if browser else _watched_by_process
            figures = measure(base, key, args.seconds, args.rounds, watch)
        finally:
            if browser:
                browser[1].close()
                browser[0].stop()
    finally:
        server.stop(0).wait(10)
    figures["viewer"] = args.viewer
    print(f"playground, spiral [2, 8 x 6, 1] tanh, batch 10, {args.rounds} rounds of {args.seconds:g} s, "
          f"viewer: {'the page in Chromium' if args.viewer == 'chromium' else 'a Python process reading the events'}")
    print(f"  heat-map frames/s with one viewer while training: {figures['frames_per_second']:.1f} "
          f"(target >= {TARGET_FPS})")
    print(f"  epochs/s alone {figures['alone']:.0f}, with one viewer {figures['watched']:.0f}: "
          f"{figures['ratio']:.2f}x (target >= {TARGET_RATIO})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0
