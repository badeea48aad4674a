"""Image grids and plots."""

from genlab.viz.grid import image_grid, save_grid, save_points, save_samples

__all__ = ["image_grid", "save_grid", "save_points", "save_samples"]
