"""Energy-based models the notes compare diffusion with: the Hopfield network and the RBM."""

from genlab.energy.hopfield import Hopfield, binarize, capacity_curve, corrupt
from genlab.energy.rbm import RBM

__all__ = ["Hopfield", "RBM", "binarize", "capacity_curve", "corrupt"]
