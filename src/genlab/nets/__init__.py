"""Networks: the diffusion U-Net, a time-conditioned MLP for 2-D data, a noise-conditional classifier."""

from genlab.nets.classifier import EncoderClassifier
from genlab.nets.mlp import TimeMLP
from genlab.nets.unet import UNet, timestep_embedding

__all__ = ["EncoderClassifier", "TimeMLP", "UNet", "timestep_embedding"]
