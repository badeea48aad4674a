"""Energy-based models the notes compare diffusion with: the Hopfield network."""

from genlab.ebm.hopfield import Hopfield, binarize, capacity_curve, corrupt

__all__ = ["Hopfield", "binarize", "capacity_curve", "corrupt"]
