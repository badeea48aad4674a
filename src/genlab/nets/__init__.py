"""Networks: the diffusion U-Net and a time-conditioned MLP for 2-D data."""

from genlab.nets.mlp import TimeMLP
from genlab.nets.unet import UNet, timestep_embedding

__all__ = ["TimeMLP", "UNet", "timestep_embedding"]
