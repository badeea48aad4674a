"""The contrastive image-text model (CLIP, small): ``genlab train clip`` on captioned data."""

from genlab.clip.model import CLIP, info_nce, recall_at

__all__ = ["CLIP", "info_nce", "recall_at"]
