// The loss curve: train (grey) and test (black) loss per epoch, on a canvas, at most one
// point per pixel column (a run reaches thousands of epochs a second).

function largest(values, from) {
  let top = from;
  for (const value of values) if (value > top) top = value;
  return top;
}

export function drawLosses(canvas, history) {
  const context = canvas.getContext("2d");
  const {width, height} = canvas;
  context.clearRect(0, 0, width, height);
  const n = Math.max(history.loss.length, 2);
  const stride = Math.max(1, Math.floor(n / width));
  const top = largest(history.val_loss, largest(history.loss, 1e-9));
  for (const [values, stroke] of [[history.loss, "#999"], [history.val_loss, "#000"]]) {
    context.beginPath();
    for (let epoch = 0; epoch < values.length; epoch += stride) {
      const x = (epoch / (n - 1)) * width;
      const y = height - (values[epoch] / top) * (height - 2);
      if (epoch === 0) context.moveTo(x, y); else context.lineTo(x, y);
    }
    context.strokeStyle = stroke;
    context.stroke();
  }
}
