"""Names the API accepts and the integer codes the compiled kernels branch on.

The tuples are the registries: a name's code is its position. The names are the proto's
enum value names, lower-cased and without their prefix. Numba freezes these module
constants into the kernels at compile time, which is what constants are for.
"""

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax")
IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = range(len(ACTIVATIONS))

# PyTorch's default negative slope for nn.LeakyReLU.
LEAKY_RELU_SLOPE = 0.01

LOSSES = ("mse", "binary_cross_entropy", "cross_entropy")
MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY = range(len(LOSSES))

OPTIMIZERS = ("sgd", "adam")
SGD, ADAM = range(len(OPTIMIZERS))

# he: Kaiming normal (std sqrt(2 / n_in)), for relu-family layers.
# xavier: Glorot uniform (bound sqrt(6 / (n_in + n_out))), for sigmoid/tanh layers.
INITS = ("he", "xavier")

DTYPES = ("float32", "float64")

# Optimizer state slots, named as torch.optim names them.
SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}
