"""The examples' loss curves: one PNG per run, drawn with matplotlib (the `plot` extra)."""


def save_loss_curve(history, path, title):
    """Write the training (and validation) loss per epoch of a fit's history to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = range(1, len(history["loss"]) + 1)
    axes.plot(epochs, history["loss"], label="training loss")
    if "val_loss" in history:
        axes.plot(epochs, history["val_loss"], label="test loss")
    axes.set(xlabel="epoch", ylabel="loss", title=title, yscale="log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
