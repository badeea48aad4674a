"""genlab: train, sample and honestly compare deep generative models."""

__version__ = "0.1.0"
