"""Automatic annotation at scale (data engine stage 3) on Ray: `segany engine run`."""

from ..extras import require

require("engine", "segany.engine")

from .pipeline import EngineConfig, Summary, run_engine
from .shards import read_manifest, read_shard
from .sources import ImageSource, list_images

__all__ = ["EngineConfig", "ImageSource", "Summary", "list_images", "read_manifest", "read_shard", "run_engine"]
