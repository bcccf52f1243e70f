"""XOR, the lecture's first network, trained through an nnserve server.

    nnserve serve &
    python clients/examples/xor.py --target localhost:50051 --plot xor.png

A [2, 4, 1] network (tanh hidden layer, sigmoid output, binary cross-entropy) cannot
separate XOR's four points before training; after 2000 full-batch SGD steps it does.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from nnserve.clients import DEFAULT_TARGET, Client

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([0, 1, 1, 0], dtype=np.float32)


def run(target, *, epochs=2000, plot=None, out=sys.stdout):
    """Train XOR on the server at `target`; return (predictions before, after, history)."""
    with Client(target) as client:
        model = client.create_model([2, 4, 1], ["tanh", "sigmoid"], "binary_cross_entropy",
                                    learning_rate=0.5, init="xavier", seed=1)
        try:
            before = model.predict(X).ravel()
            history = model.fit(X, Y, epochs=epochs, batch_size=len(X), shuffle=False)
            after = model.predict(X).ravel()
        finally:
            model.delete()
    print(" x1 x2 | target | before | after", file=out)
    for (x1, x2), target_value, p_before, p_after in zip(X, Y, before, after):
        print(f" {x1:2.0f} {x2:2.0f} | {target_value:6.0f} | {p_before:6.3f} | {p_after:5.3f}", file=out)
    solved = bool(np.all((after >= 0.5) == (Y >= 0.5)))
    print(f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f} after {epochs} steps; "
          f"{'solved' if solved else 'not solved'}", file=out)
    if plot:
        from plotting import save_loss_curve

        save_loss_curve(history, plot, "XOR, [2, 4, 1] tanh/sigmoid, SGD lr 0.5")
        print(f"loss curve: {plot}", file=out)
    return before, after, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"server host:port (default {DEFAULT_TARGET})")
    parser.add_argument("--epochs", type=int, default=2000, help="full-batch train steps (default 2000)")
    parser.add_argument("--plot", metavar="PATH", type=Path, help="save the loss curve as a PNG")
    args = parser.parse_args(argv)
    _, after, _ = run(args.target, epochs=args.epochs, plot=args.plot)
    return 0 if np.all((after >= 0.5) == (Y >= 0.5)) else 1


if __name__ == "__main__":
    sys.exit(main())
