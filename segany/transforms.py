"""Image conversion to the model's RGB uint8 input, and resizing of images and prompts.

Accepted images (numpy arrays or PIL images), all converted to (H, W, 3) uint8 RGB:
- uint8 (H, W, 3): used as is (BGR is flipped when `image_format="BGR"`).
- (H, W) or (H, W, 1) grayscale: the channel is repeated three times.
- (H, W, 4) RGBA / BGRA: the alpha channel is dropped.
- uint16 (e.g. 16-bit PNG/TIFF): scaled by 255/65535 and rounded.
- other integer types: values must lie in 0..255 (taken as 8-bit) or 0..65535 (taken as 16-bit).
- bool: False -> 0, True -> 255.
- float: values must lie in [0, 1]; scaled by 255 and rounded.
"""

from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .errors import ImageError

ImageLike = Union[np.ndarray, Image.Image]


def to_rgb_uint8(image: ImageLike, image_format: str = "RGB") -> np.ndarray:
    """Convert an image to (H, W, 3) uint8 RGB as described in the module docstring."""
    if image_format not in ("RGB", "BGR"):
        raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, Image.Image):
        image = pil_to_array(image)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) == 0:
        raise ImageError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    image = _to_uint8(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        low, high = float(np.min(image)), float(np.max(image))
        if not (0.0 <= low and high <= 1.0):
            raise ImageError(
                f"float image values must lie in [0, 1], found {low:g}..{high:g} "
                "(pass 0-255 images as uint8)"
            )
        return np.round(image * 255.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(np.min(image)), int(np.max(image))
        if low < 0 or high > 65535:
            raise ImageError(f"integer image values must lie in 0..65535, found {low}..{high}")
        if image.dtype == np.uint16 or high > 255:
            return np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return image.astype(np.uint8)
    raise ImageError(f"unsupported image dtype {image.dtype}")


def pil_to_array(image: Image.Image) -> np.ndarray:
    """Pixels of a PIL image, keeping 16-bit depth; palette and CMYK images become RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.uint16)
    if image.mode in ("I", "F", "L", "LA", "RGB", "RGBA", "1"):
        return np.asarray(image)
    return np.asarray(image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"))


class ResizeLongestSide:
    """Resize images so their longest side is `target_length`, and map coordinates alike."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after scaling (oldh, oldw) so the longest side is long_side_length."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return int(oldh * scale + 0.5), int(oldw * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8, bilinear (PIL, as the official predictor)."""
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def _scale_coords(self, coords, original_size: Tuple[int, ...]):
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 2) x,y pixel coordinates in the original image -> in the resized image."""
        return self._scale_coords(np.array(coords, dtype=float), original_size)

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 4) x0,y0,x1,y1 boxes -> (N, 4) in the resized image."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, 3, h, w), bilinear with antialiasing."""
        h, w = self.get_preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        return self._scale_coords(coords.to(torch.float).clone(), original_size)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


class ResizeSquare(ResizeLongestSide):
    """Resize images to `target_length` x `target_length` (SAM 2's input), and map coordinates alike.

    Images are resized as float (bilinear with antialiasing, as SAM 2 resizes its tensors), not
    rounded back to uint8.
    """

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        return long_side_length, long_side_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) float32 in 0-255."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        return self.apply_image_torch(tensor)[0].permute(1, 2, 0).numpy()


def resize_for(model: torch.nn.Module) -> ResizeLongestSide:
    """The image and prompt resizing of a `Sam` (`Sam.resize`)."""
    size = model.image_encoder.img_size
    return ResizeSquare(size) if model.resize == "square" else ResizeLongestSide(size)
