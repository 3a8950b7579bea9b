"""Image embeddings for the annotation app: computed once per image and model, queued, cached on disk.

All model work (the image encoder, the automatic mask generator) runs on one worker thread,
so concurrent requests queue instead of competing for the CPU; requests for an image whose
embedding is being computed wait for that computation instead of starting another.
"""

import hashlib
import threading
import zipfile
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple, TypeVar

import numpy as np
import torch

from ..fileio import atomic_path
from ..image_io import read_image
from ..modeling import Sam
from ..predictor import SamPredictor

T = TypeVar("T")
MEMORY_ENTRIES = 16  # embeddings kept in memory besides the disk cache


@dataclass
class ImageEmbedding:
    embedding: np.ndarray  # (1, C, g, g) float32, the image encoder's output
    original_size: Tuple[int, int]  # (H, W) of the image
    input_size: Tuple[int, int]  # (h, w) after resizing its long side to the model's input size
    seconds: float  # encoder time when it was computed
    # The decoder's other image inputs (`SamPredictor.get_high_res_features`; SAM-HQ's), each (1, ...).
    high_res_features: Tuple[np.ndarray, ...] = ()


def model_key(model: Sam) -> str:
    """A fingerprint of a model's weights: cached embeddings of other weights are never reused."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


class EmbeddingService:
    def __init__(self, model: Sam, cache_dir: Path, dtype: torch.dtype = torch.float32) -> None:
        """cache_dir: embeddings go to cache_dir/<model key>/<image content hash>.npz."""
        self.model = model
        self.predictor = SamPredictor(model, dtype=dtype)
        self.key = model_key(model)
        self.cache_dir = Path(cache_dir) / self.key
        self.encoder_runs = 0  # images encoded by this process (not read from the cache)
        self.encoder_seconds: List[float] = []
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="segany-model")
        self._lock = threading.RLock()
        self._pending: Dict[str, Future] = {}
        self._memory: "OrderedDict[str, ImageEmbedding]" = OrderedDict()
        self._digests: Dict[Tuple[str, int, int], str] = {}  # (path, mtime ns, size) -> content hash

    def get(self, path: Path) -> ImageEmbedding:
        """The embedding of the image file at `path` (computed, or from the cache). Not from the worker."""
        key = self._content_key(path)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
            future = self._pending.get(key)
            if future is None:
                future = self._worker.submit(self._load_or_compute, path, key)
                self._pending[key] = future
                future.add_done_callback(lambda done: self._settle(key, done))
        return future.result()

    def _content_key(self, path: Path) -> str:
        """The file's content hash, read once per version of the file (not on every request)."""
        stat = path.stat()
        version = (str(path), stat.st_mtime_ns, stat.st_size)
        if version not in self._digests:
            self._digests[version] = file_digest(path)
        return self._digests[version]

    def run(self, work: Callable[..., T], *args, **kwargs) -> T:
        """Run other model work on the worker thread, after what is queued; wait for its result."""
        return self._worker.submit(work, *args, **kwargs).result()

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _settle(self, key: str, done: Future) -> None:
        with self._lock:
            self._pending.pop(key, None)
            if done.exception() is None:
                self._memory[key] = done.result()
                while len(self._memory) > MEMORY_ENTRIES:
                    self._memory.popitem(last=False)

    def _load_or_compute(self, path: Path, key: str) -> ImageEmbedding:
        cached = self.cache_dir / f"{key}.npz"
        if cached.exists():
            try:
                shapes = self.model.high_res_feature_shapes()
                with np.load(cached, allow_pickle=False) as data:
                    found = ImageEmbedding(data["embedding"], tuple(data["original_size"].tolist()),
                                           tuple(data["input_size"].tolist()), float(data["seconds"]),
                                           tuple(data[name] for name in self.model.mask_decoder.image_feature_names))
                expected = [(1, self.model.prompt_encoder.embed_dim, *self.model.prompt_encoder.image_embedding_size)]
                expected += [(1, *shape) for shape in shapes]
                arrays = [found.embedding, *found.high_res_features]
                if [a.shape for a in arrays] == expected and all(np.isfinite(a).all() for a in arrays):
                    return found
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # truncated or foreign file: compute it again
        image = read_image(path)
        began = time.perf_counter()
        self.predictor.set_image(image)
        seconds = time.perf_counter() - began
        result = ImageEmbedding(self.predictor.get_image_embedding().cpu().numpy(), self.predictor.original_size,
                                self.predictor.input_size, seconds,
                                tuple(f.cpu().numpy() for f in self.predictor.get_high_res_features()))
        self.predictor.reset_image()
        self.encoder_runs += 1
        self.encoder_seconds.append(seconds)
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as file:
                np.savez(file, embedding=result.embedding, original_size=np.array(result.original_size),
                         input_size=np.array(result.input_size), seconds=np.array(seconds),
                         **dict(zip(self.model.mask_decoder.image_feature_names, result.high_res_features)))
        return result
