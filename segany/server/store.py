"""Annotation storage through SQLAlchemy: annotators and their masks, one transaction per change.

SQLite (a file, WAL mode: readers never block the writer) by default, PostgreSQL with a
`postgresql://` URL. Masks are stored as COCO compressed RLE in the image's pixel frame.
Every mask belongs to one annotator; an edit names the version it started from, so an edit
made on a stale copy is refused (409) instead of overwriting someone's newer save.
"""

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from sqlalchemy import (
    Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, delete, event,
    func, select, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ..errors import SegAnyError
from .errors import Conflict, NotFound
from ..masks import Rle, check_rle, compress_rle, rle_area, rles_to_boxes
from ..validation import check_number

SOURCES = ("manual", "prefill")
# A client's key for one save (the Idempotency-Key header): a retry with it returns the first save.
SAVE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class Base(DeclarativeBase):
    pass


class Annotator(Base):
    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MaskRow(Base):
    __tablename__ = "masks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image: Mapped[str] = mapped_column(String(1000), index=True)  # path relative to the images folder
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    counts: Mapped[str] = mapped_column(Text)  # COCO compressed RLE string
    area: Mapped[int] = mapped_column(Integer)
    bbox: Mapped[str] = mapped_column(String(100))  # JSON [x, y, w, h]
    predicted_iou: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    stability_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    point_coords: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # JSON [[x, y], ...]
    source: Mapped[str] = mapped_column(String(20))
    seconds: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # annotation time
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PrefillRun(Base):
    """One automatic prefill per image and annotator (a second request returns the first's masks)."""

    __tablename__ = "prefill_runs"
    __table_args__ = (UniqueConstraint("image", "annotator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image: Mapped[str] = mapped_column(String(1000))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SaveKey(Base):
    """The mask that a client's save key created (a retried save returns it instead of a copy)."""

    __tablename__ = "save_keys"
    __table_args__ = (UniqueConstraint("annotator_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    key: Mapped[str] = mapped_column(String(100))
    mask_id: Mapped[int] = mapped_column(ForeignKey("masks.id", ondelete="CASCADE"), index=True)


@dataclass
class MaskIn:
    """A mask as a client sends it; `check_mask` validates it."""

    rle: Rle  # {"size": [H, W], "counts": [run lengths] or compressed str}
    predicted_iou: Optional[float] = None
    stability_score: Optional[float] = None
    point_coords: Optional[List[List[float]]] = None
    seconds: Optional[float] = None
    source: str = "manual"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_db_url() -> str:
    return f"sqlite:///{Path('annotations.db').resolve()}"


def open_engine(url: str) -> Engine:
    """An engine for `url` with the schema created; SQLite files get WAL mode and a busy timeout."""
    if url.startswith(("postgresql://", "postgres://")):  # the driver installed with segany
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as err:  # bad URL or missing driver
        shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)  # no password in messages
        raise SegAnyError(f"--db {shown}: {' '.join(str(err).split())}") from None
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    try:
        Base.metadata.create_all(engine)
    except Exception as err:
        raise SegAnyError(f"--db {engine.url.render_as_string()}: cannot open ({' '.join(str(err).split())[:300]})") \
            from None
    return engine


def check_mask(mask: MaskIn, height: int, width: int) -> Tuple[Rle, int]:
    """The mask as compressed RLE and its area, or SegAnyError naming the field that is wrong."""
    rle = check_rle(mask.rle, "rle", (height, width))  # decoded: a whole mask of the image's size
    compressed = compress_rle(rle)
    area = rle_area(compressed)
    if area == 0:
        raise SegAnyError("rle: the mask is empty")
    for name in ("predicted_iou", "stability_score", "seconds"):
        value = getattr(mask, name)
        if value is not None:
            check_number(name, value, low=0)
    points = mask.point_coords
    if points is not None and (any(len(p) != 2 for p in points) or not np.isfinite(np.asarray(points, float)).all()):
        raise SegAnyError("point_coords: expected [[x, y], ...] of finite numbers")
    if mask.source not in SOURCES:
        raise SegAnyError(f"source must be one of {', '.join(SOURCES)}")
    return compressed, area


class Store:
    """Annotators and masks in one database."""

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def transaction(self) -> Iterator[Session]:
        """A session whose block is one transaction (committed at its end, rolled back on error)."""
        return self._sessions.begin()

    # Annotators

    def add_annotator(self, name: str) -> str:
        """Create an annotator; returns the token (shown once: only its hash is stored)."""
        name = name.strip()
        if not name:
            raise SegAnyError("annotator name is empty")
        token = secrets.token_urlsafe(24)
        try:
            with self.transaction() as session:
                session.add(Annotator(name=name, token_sha256=hash_token(token), active=True, created_at=now()))
        except IntegrityError:
            raise SegAnyError(f"annotator {name!r} exists already") from None
        return token

    def annotators(self) -> List[Dict[str, Any]]:
        with self.transaction() as session:
            rows = session.scalars(select(Annotator).order_by(Annotator.id)).all()
            return [{"id": a.id, "name": a.name, "active": a.active, "created_at": _utc_text(a.created_at)}
                    for a in rows]

    def revoke(self, name: str) -> None:
        with self.transaction() as session:
            changed = session.execute(update(Annotator).where(Annotator.name == name).values(active=False)).rowcount
        if not changed:
            raise SegAnyError(f"no annotator named {name!r}")

    def annotator_for_token(self, token: str) -> Optional[Annotator]:
        with self.transaction() as session:
            return session.scalar(
                select(Annotator).where(Annotator.token_sha256 == hash_token(token), Annotator.active.is_(True))
            )

    # Masks

    def masks(self, image: Optional[str] = None, annotator_id: Optional[int] = None) -> List[Dict[str, Any]]:
        """Masks of one image (or all), of one annotator (or all), oldest first."""
        query = select(MaskRow, Annotator.name).join(Annotator).order_by(MaskRow.id)
        if image is not None:
            query = query.where(MaskRow.image == image)
        if annotator_id is not None:
            query = query.where(MaskRow.annotator_id == annotator_id)
        with self.transaction() as session:
            return [_mask_dict(row, name) for row, name in session.execute(query)]

    def mask_counts(self, annotator_id: Optional[int] = None) -> Dict[str, int]:
        """Masks per image, of one annotator (or all)."""
        query = select(MaskRow.image, func.count()).group_by(MaskRow.image)
        if annotator_id is not None:
            query = query.where(MaskRow.annotator_id == annotator_id)
        with self.transaction() as session:
            return {image: count for image, count in session.execute(query)}

    def add_masks(self, image: str, annotator_id: int, masks: List[MaskIn], height: int, width: int,
                  session: Optional[Session] = None) -> List[Dict[str, Any]]:
        """Insert masks in one transaction (all or none): `session`'s, else a new one."""
        if session is None:
            with self.transaction() as session:
                return self.add_masks(image, annotator_id, masks, height, width, session)
        rles, areas = zip(*[check_mask(mask, height, width) for mask in masks]) if masks else ((), ())
        boxes = rles_to_boxes(list(rles))
        stamp = now()
        rows = [
            MaskRow(image=image, annotator_id=annotator_id, height=height, width=width, counts=rle["counts"],
                    area=area, bbox=json.dumps([int(v) for v in box]),
                    predicted_iou=mask.predicted_iou, stability_score=mask.stability_score,
                    point_coords=None if mask.point_coords is None else json.dumps(mask.point_coords),
                    source=mask.source, seconds=mask.seconds, version=1, created_at=stamp, updated_at=stamp)
            for mask, rle, area, box in zip(masks, rles, areas, boxes)
        ]
        session.add_all(rows)
        session.flush()
        name = session.get(Annotator, annotator_id).name
        return [_mask_dict(row, name) for row in rows]

    def add_mask_once(self, image: str, annotator_id: int, mask: MaskIn, height: int, width: int,
                      key: str) -> Tuple[Dict[str, Any], bool]:
        """Insert a mask unless this annotator's save `key` already made one: (the mask, whether it is new)."""
        if not SAVE_KEY.match(key):
            raise SegAnyError("Idempotency-Key: 1 to 100 characters of letters, digits and ._:-")
        for _attempt in range(2):  # a concurrent save with the same key wins the race: return its mask
            with self.transaction() as session:
                found = session.execute(
                    select(MaskRow, Annotator.name).join(SaveKey, SaveKey.mask_id == MaskRow.id)
                    .join(Annotator, Annotator.id == MaskRow.annotator_id)
                    .where(SaveKey.annotator_id == annotator_id, SaveKey.key == key)
                ).first()
                if found is not None:
                    if found[0].image != image:
                        raise Conflict(f"Idempotency-Key {key} was used for a mask of another image")
                    return _mask_dict(*found), False
            try:
                with self.transaction() as session:
                    [saved] = self.add_masks(image, annotator_id, [mask], height, width, session)
                    session.add(SaveKey(annotator_id=annotator_id, key=key, mask_id=saved["id"]))
                    session.flush()
                return saved, True
            except IntegrityError:
                continue
        raise Conflict(f"Idempotency-Key {key}: concurrent saves; retry")

    def update_mask(self, mask_id: int, annotator_id: int, version: int, mask: MaskIn) -> Dict[str, Any]:
        """Replace a mask's pixels if it is still at `version`; returns the new row (version + 1)."""
        height, width = (mask.rle.get("size") or (0, 0)) if isinstance(mask.rle, dict) else (0, 0)
        rle, area = check_mask(mask, height, width)
        [box] = rles_to_boxes([rle])
        values = dict(counts=rle["counts"], area=area, bbox=json.dumps([int(v) for v in box]),
                      version=version + 1, updated_at=now())
        if mask.seconds is not None:  # time spent on a mask adds up over its edits
            values["seconds"] = func.coalesce(MaskRow.seconds, 0.0) + mask.seconds
        with self.transaction() as session:
            # Write first, with every condition in the statement: of two edits of the same
            # version exactly one matches, and no read lock has to be upgraded (SQLite).
            changed = session.execute(
                update(MaskRow).where(MaskRow.id == mask_id, MaskRow.annotator_id == annotator_id,
                                      MaskRow.version == version, MaskRow.height == height, MaskRow.width == width)
                .values(**values)
            ).rowcount
            row = session.get(MaskRow, mask_id)
            if row is None or row.annotator_id != annotator_id:
                raise NotFound(f"no mask {mask_id} of yours")
            if (row.height, row.width) != (height, width):
                raise SegAnyError(f"rle.size {[height, width]} is not the image's [{row.height}, {row.width}]")
            if not changed:
                raise Conflict(f"mask {mask_id} changed since version {version}; reload it")
            return _mask_dict(row, session.get(Annotator, annotator_id).name)

    def delete_mask(self, mask_id: int, annotator_id: int) -> None:
        with self.transaction() as session:
            deleted = session.execute(
                delete(MaskRow).where(MaskRow.id == mask_id, MaskRow.annotator_id == annotator_id)
            ).rowcount
        if not deleted:
            raise NotFound(f"no mask {mask_id} of yours")

    def prefilled(self, image: str, annotator_id: int) -> bool:
        with self.transaction() as session:
            return session.scalar(select(PrefillRun.id).where(PrefillRun.image == image,
                                                              PrefillRun.annotator_id == annotator_id)) is not None

    @staticmethod
    def record_prefill(session: Session, image: str, annotator_id: int) -> None:
        """Record the prefill of (image, annotator) in `session`: IntegrityError if one is recorded."""
        session.add(PrefillRun(image=image, annotator_id=annotator_id, created_at=now()))
        session.flush()


def _utc_text(stamp: dt.datetime) -> str:
    """ISO 8601 in UTC; SQLite gives back the stored UTC times without their zone."""
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).isoformat()


def _mask_dict(row: MaskRow, annotator: str) -> Dict[str, Any]:
    return {
        "id": row.id, "image": row.image, "annotator": annotator,
        "segmentation": {"size": [row.height, row.width], "counts": row.counts},
        "area": row.area, "bbox": json.loads(row.bbox), "predicted_iou": row.predicted_iou,
        "stability_score": row.stability_score,
        "point_coords": None if row.point_coords is None else json.loads(row.point_coords),
        "source": row.source, "seconds": row.seconds, "version": row.version,
        "created_at": _utc_text(row.created_at), "updated_at": _utc_text(row.updated_at),
    }
