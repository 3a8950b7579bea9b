"""The annotation app's HTTP interface (FastAPI) and the page it serves.

The page computes masks itself: it fetches an image's embedding once (`/api/embedding/...`)
and runs the prompt encoder and mask decoder (`/api/decoder-page.onnx`) in ONNX Runtime Web on
every click. The server stores what annotators accept.
"""

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Union

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
import torch
from PIL import Image
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from ..amg import SamAutomaticMaskGenerator
from ..errors import SegAnyError
from ..export.onnx import prompt_layout
from ..image_io import read_image
from .catalog import BROWSER_SUFFIXES, Catalog
from .embeddings import EmbeddingService
from .export import coco_document, masks_by_image
from .errors import Conflict, NotFound
from .store import Annotator, MaskIn, Store

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "segany_token"
# Decoder graphs served at /api/NAME.onnx -> with the full-size `masks` output. "decoder": the
# official web demo's graph, for other clients; "decoder-page": without that output, which the
# page computes itself for the one candidate it shows.
DECODER_GRAPHS = {"decoder": True, "decoder-page": False}


@dataclass
class Services:
    """What the routes work with."""

    catalog: Catalog
    store: Store
    embeddings: EmbeddingService
    decoder_dir: Path  # DECODER_GRAPHS as NAME.onnx
    prefill: SamAutomaticMaskGenerator
    ort_dir: Path  # onnxruntime-web's dist folder
    model_name: str
    max_body_bytes: int  # larger request bodies are refused (413)


# Ids and versions are 32-bit integers in the database.
MAX_ID = 2**31 - 1


class RleBody(BaseModel):
    size: List[int]  # checked with the counts by segany.masks.check_rle
    counts: Union[List[int], str]


class MaskBody(BaseModel):
    rle: RleBody
    # numbers checked (finite, >= 0, points of 2) by segany.server.store.check_mask
    predicted_iou: Optional[float] = None
    point_coords: Optional[List[List[float]]] = None
    seconds: Optional[float] = None


class MaskUpdate(MaskBody):
    version: int = Field(ge=1, le=MAX_ID)


class Login(BaseModel):
    token: str


def create_app(services: Services) -> FastAPI:
    api = FastAPI(title="segany annotation", docs_url="/api/docs", openapi_url="/api/openapi.json")
    prefill_lock = threading.Lock()  # one prefill computation at a time per server

    @api.exception_handler(SegAnyError)
    def _bad_input(_request: Request, err: SegAnyError) -> JSONResponse:
        status = 409 if isinstance(err, Conflict) else 404 if isinstance(err, NotFound) else 422
        return JSONResponse({"detail": str(err)}, status_code=status)

    @api.exception_handler(RequestValidationError)
    def _invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        # One line naming the field; never the input itself (it may be NaN, which JSON cannot carry, or huge).
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        return JSONResponse({"detail": f"{where}: {first['msg']}{more}"}, status_code=422)

    @api.middleware("http")
    async def _isolate(request: Request, call_next):
        # Cross-origin isolation lets ONNX Runtime Web use WebAssembly threads.
        response = await call_next(request)
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        return response

    def annotator(request: Request) -> Annotator:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        found = services.store.annotator_for_token(token) if token else None
        if found is None:
            raise HTTPException(401, "sign in with an annotator token (segany annotators add NAME)")
        return found

    @api.post("/api/login")
    def login(body: Login, response: Response) -> Dict[str, str]:
        found = services.store.annotator_for_token(body.token.strip())
        if found is None:
            raise HTTPException(401, "unknown or revoked token")
        response.set_cookie(TOKEN_COOKIE, body.token.strip(), httponly=True, samesite="strict")
        return {"annotator": found.name}

    @api.post("/api/logout")
    def logout(response: Response) -> Dict[str, bool]:
        response.delete_cookie(TOKEN_COOKIE)
        return {"ok": True}

    @api.get("/api/info")
    def info(who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        model = services.embeddings.model
        encoder = model.image_encoder
        grid = model.prompt_encoder.image_embedding_size
        times = services.embeddings.encoder_seconds
        return {
            "annotator": who.name, "model": services.model_name, "model_key": services.embeddings.key,
            "image_size": encoder.img_size, "mask_threshold": model.mask_threshold,
            "embedding_shape": [1, model.prompt_encoder.embed_dim, *grid],
            # The decoder graph's other image inputs, after the embedding in /api/embedding's body.
            "image_features": [{"name": name, "shape": [1, *shape]} for name, shape in
                               zip(model.mask_decoder.image_feature_names, model.high_res_feature_shapes())],
            "prompt_layout": prompt_layout(model), "resize": model.resize,
            "decoder": "/api/decoder-page.onnx", "encoder_runs": services.embeddings.encoder_runs,
            "encoder_seconds_mean": sum(times) / len(times) if times else None,
        }

    @api.get("/api/images")
    def images(who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        mine, everyone = services.store.mask_counts(who.id), services.store.mask_counts()
        return {"images": [{"name": name, "masks": mine.get(name, 0), "all_masks": everyone.get(name, 0)}
                           for name in services.catalog.names()]}

    @api.get("/api/file/{name:path}")
    def image_file(name: str, _who: Annotator = Depends(annotator)) -> Response:
        path = services.catalog.path(name)
        if path.suffix.lower() in BROWSER_SUFFIXES:
            return FileResponse(path)
        buffer = io.BytesIO()  # TIFF and the like: browsers cannot show them
        Image.fromarray(read_image(path)).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @api.get("/api/embedding/{name:path}")
    def embedding(name: str, _who: Annotator = Depends(annotator)) -> Response:
        """The image embedding as raw little-endian float32, then the decoder's other image inputs
        (/api/info's image_features, in that order); its shape and sizes in headers."""
        result = services.embeddings.get(services.catalog.path(name))
        arrays = [result.embedding, *result.high_res_features]
        return Response(
            b"".join(a.astype("<f4").tobytes() for a in arrays), media_type="application/octet-stream",
            headers={
                "X-Embedding-Shape": ",".join(map(str, result.embedding.shape)),
                "X-Original-Size": ",".join(map(str, result.original_size)),
                "X-Input-Size": ",".join(map(str, result.input_size)),
                "X-Encoder-Seconds": f"{result.seconds:.4f}",
                "Cache-Control": "private, max-age=86400",
            },
        )

    @api.get("/api/{name}.onnx")
    def decoder(name: str, _who: Annotator = Depends(annotator)) -> FileResponse:
        if name not in DECODER_GRAPHS:
            raise NotFound(f"no graph named {name}.onnx")
        return FileResponse(services.decoder_dir / f"{name}.onnx", media_type="application/octet-stream")

    @api.get("/api/masks/{name:path}")
    def list_masks(name: str, everyone: bool = False, who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        services.catalog.path(name)
        return {"masks": services.store.masks(name, None if everyone else who.id)}

    @api.post("/api/masks/{name:path}", status_code=201)
    def add_mask(name: str, body: MaskBody, response: Response, who: Annotator = Depends(annotator),
                 idempotency_key: Optional[str] = Header(None)) -> Dict[str, Any]:
        """A new mask. With an Idempotency-Key header, a retry of the same save returns the first (200)."""
        height, width = services.catalog.size(name)
        if idempotency_key is None:
            [saved] = services.store.add_masks(name, who.id, [_mask_in(body)], height, width)
            return saved
        saved, created = services.store.add_mask_once(name, who.id, _mask_in(body), height, width, idempotency_key)
        if not created:
            response.status_code = 200
        return saved

    MaskId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]

    @api.put("/api/mask/{mask_id}")
    def update_mask(mask_id: MaskId, body: MaskUpdate, who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        return services.store.update_mask(mask_id, who.id, body.version, _mask_in(body))

    @api.delete("/api/mask/{mask_id}")
    def delete_mask(mask_id: MaskId, who: Annotator = Depends(annotator)) -> Dict[str, bool]:
        services.store.delete_mask(mask_id, who.id)
        return {"deleted": True}

    @api.post("/api/prefill/{name:path}")
    def prefill(name: str, who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        """Stage 2: the automatic generator's confident masks, saved once per image and annotator."""
        path = services.catalog.path(name)
        height, width = services.catalog.size(name)
        added = 0
        with prefill_lock:  # in this process, a second request sees the first one's result
            if not services.store.prefilled(name, who.id):
                found = services.embeddings.get(path)
                records = services.embeddings.run(services.prefill.generate, read_image(path),
                                                  torch.from_numpy(found.embedding),
                                                  tuple(torch.from_numpy(f) for f in found.high_res_features))
                masks = [MaskIn(rle=r["segmentation"], predicted_iou=r["predicted_iou"],
                                stability_score=r["stability_score"], point_coords=r["point_coords"],
                                source="prefill") for r in records]
                try:
                    with services.store.transaction() as session:  # the run's record and its masks: both or neither
                        services.store.record_prefill(session, name, who.id)
                        services.store.add_masks(name, who.id, masks, height, width, session)
                    added = len(masks)
                except IntegrityError:  # another server process prefilled this image first
                    pass
        return {"added": added, "masks": services.store.masks(name, who.id)}

    @api.get("/api/export/coco")
    def export_coco(_who: Annotator = Depends(annotator)) -> Dict[str, Any]:
        return coco_document(services.catalog, masks_by_image(services.store))

    api.mount("/vendor/ort", StaticFiles(directory=services.ort_dir), name="ort")
    api.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return BodyLimit(api, services.max_body_bytes)


class BodyLimit:
    """ASGI wrapper: a request whose body exceeds `limit` bytes gets 413 before the app reads it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        chunks, size = [], 0
        while True:  # read the body (it is small, or refused): its real size, whatever the headers say
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes (segany serve --max-body-bytes)"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


def _mask_in(body: MaskBody) -> MaskIn:
    return MaskIn(rle=body.rle.model_dump(), predicted_iou=body.predicted_iou, point_coords=body.point_coords,
                  seconds=body.seconds)
