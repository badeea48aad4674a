"""Measuring generative models: the feature network, FID/KID, precision/recall, speed."""
