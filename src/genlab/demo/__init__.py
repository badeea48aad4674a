"""The browser demo behind ``genlab serve``: :mod:`~genlab.demo.actions` (what the page does, on plain
values, no web library) and :mod:`~genlab.demo.app` (the Gradio page over it, the optional extra
``genlab[demo]``; imported only by ``genlab serve``)."""

from genlab.demo.actions import MAX_IMAGES, Demo, to_rgb_grid

__all__ = ["MAX_IMAGES", "Demo", "to_rgb_grid"]
