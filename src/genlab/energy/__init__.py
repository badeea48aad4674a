"""Energy-based models the notes compare diffusion with: the Hopfield network, the RBM and the deep belief net."""

from genlab.energy.hopfield import Hopfield, binarize, capacity_curve, corrupt
from genlab.energy.rbm import RBM

__all__ = ["Hopfield", "RBM", "binarize", "capacity_curve", "corrupt"]
