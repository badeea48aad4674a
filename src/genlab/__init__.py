"""genlab: train, sample and honestly compare deep generative models.

The library calls behind the CLI, usable from Python (no argparse anywhere but genlab.cli)::

    import genlab
    from genlab.config import resolve
    from genlab.evaluate import SamplingSpec, draw_samples, measure_quality

    summary = genlab.train(resolve("digits"), "runs/digits")      # trains, then the test bits/dim
    cfg, family, _, step = genlab.RunDir("runs/digits").load()    # EMA weights
    x, protocol = draw_samples(family, cfg, SamplingSpec(n=1000, sampler="ddim", steps=50))
    print(measure_quality(x, cfg)["fid"])
"""

from genlab.run import RunDir
from genlab.train import train

__version__ = "0.1.0"
__all__ = ["RunDir", "train", "__version__"]
