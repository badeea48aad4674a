"""Networks: the diffusion U-Net, a time-conditioned MLP for 2-D data, a noise-conditional classifier,
the autoencoders' conv encoder and decoder, and the DCGAN generator and discriminator."""

from genlab.nets.autoencoder import ConvDecoder, ConvEncoder
from genlab.nets.classifier import EncoderClassifier
from genlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from genlab.nets.mlp import TimeMLP
from genlab.nets.unet import UNet, timestep_embedding

__all__ = ["ConvDecoder", "ConvEncoder", "DCGANDiscriminator", "DCGANGenerator", "EncoderClassifier", "MLPDiscriminator",
           "MLPGenerator", "TimeMLP", "UNet", "timestep_embedding"]
