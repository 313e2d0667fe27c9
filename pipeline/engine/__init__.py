"""The from-scratch NumPy network: no Hydra, no MLflow, no I/O."""

from pipeline.engine.activations import ACTIVATIONS, Activation, make_activation
from pipeline.engine.clipping import GradientClipper, global_norm
from pipeline.engine.initializers import INITIALIZERS, make_initializer
from pipeline.engine.losses import LOSSES, REGRESSION_LOSSES, Loss, make_loss
from pipeline.engine.model import Network
from pipeline.engine.network import MLP, layer_name
from pipeline.engine.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from pipeline.engine.recurrent import RECURRENT_INITS, RecurrentNet, spectral_radius
from pipeline.engine.regularizers import REGULARIZERS, Regularizer, make_regularizer
from pipeline.engine.training import Trainer, minibatches

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "make_activation",
    "GradientClipper",
    "global_norm",
    "INITIALIZERS",
    "make_initializer",
    "LOSSES",
    "Loss",
    "make_loss",
    "REGRESSION_LOSSES",
    "Network",
    "RECURRENT_INITS",
    "RecurrentNet",
    "spectral_radius",
    "MLP",
    "layer_name",
    "OPTIMIZERS",
    "Optimizer",
    "make_optimizer",
    "REGULARIZERS",
    "Regularizer",
    "make_regularizer",
    "Trainer",
    "minibatches",
]
