"""What an uploaded file really is, judged by its bytes (never by its name or the browser's Content-Type).

`inspect_upload` accepts PNG, JPEG, GIF and WebP images (decoded by Pillow) and PDFs (parsed by pypdf) within
the configured limits, and raises a ValidationError that says in plain words what is wrong otherwise. It is a
pure function of the bytes, the name and the settings: nothing is stored here."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

# Pillow format name -> the media type the Messages API accepts.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
PDF_TYPE = "application/pdf"
# What a file name's extension claims, to catch disguised files (a PDF or text renamed .png).
EXTENSION_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": PDF_TYPE,
}
TYPE_NAMES = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    PDF_TYPE: "a PDF document",
}
ACCEPTED = "PNG, JPEG, GIF or WebP images and PDF documents"


@dataclass(frozen=True)
class Inspected:
    kind: str  # "image" | "pdf"
    media_type: str
    size: int
    sha256: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None


def safe_name(name: str) -> str:
    """The last path component, without control characters, at most 200 characters (display only)."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip() or "attachment"
    return cleaned[-200:]


def inspect_upload(data: bytes, name: str) -> Inspected:
    """Classify `data` by content and check the limits; ValidationError (code says which) otherwise."""
    shown = safe_name(name)
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    if not data:
        raise ValidationError(f"“{shown}” is empty.", code="empty")
    if len(data) > limit:
        raise ValidationError(
            f"“{shown}” is {filesizeformat(len(data))}; the limit is {filesizeformat(limit)} per file.",
            code="too_large",
        )
    claimed = EXTENSION_TYPES.get(PurePath(shown).suffix.lower())
    # PDF headers may follow up to 1 KB of junk; the API and pypdf both accept that.
    if b"%PDF-" in data[:1024]:
        result = _inspect_pdf(data, shown)
    else:
        try:
            result = _inspect_image(data, shown)
        except ValidationError as error:
            if error.code == "unsupported" and claimed is not None:
                raise ValidationError(
                    f"“{shown}” is named like {TYPE_NAMES[claimed]} but is not one, nor any other file we "
                    f"accept ({ACCEPTED}).",
                    code="disguised",
                ) from error
            raise
    # JPEG named .jpg/.jpeg/.jpe all claim image/jpeg: only a different kind of file is a disguise.
    if claimed is not None and claimed != result.media_type:
        raise ValidationError(
            f"“{shown}” is named like {TYPE_NAMES[claimed]} but is really {TYPE_NAMES[result.media_type]}. "
            "Rename it to match what it is, or attach the right file.",
            code="disguised",
        )
    return result


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inspect_image(data: bytes, shown: str) -> Inspected:
    unknown = ValidationError(
        f"“{shown}” is not a file we can attach: only {ACCEPTED} are accepted.", code="unsupported"
    )
    corrupt = ValidationError(
        f"“{shown}” looks like an image but is damaged or incomplete, so it cannot be read.", code="corrupt"
    )
    max_pixels = settings.CHAT_ATTACHMENT_MAX_PIXELS
    max_side = settings.CHAT_ATTACHMENT_MAX_SIDE
    with warnings.catch_warnings():
        # Pillow's own bomb guard warns (then errors) past Image.MAX_IMAGE_PIXELS; ours is stricter and
        # runs first, from the header alone, before any pixel is decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as image:
                media_type = IMAGE_TYPES.get(image.format or "")
                width, height = image.size
                if media_type is None:
                    raise unknown
                if width * height > max_pixels or max(width, height) > max_side:
                    raise ValidationError(
                        f"“{shown}” is {width}×{height} pixels; the limit is {max_pixels:,} pixels "  # noqa: RUF001
                        f"and {max_side:,} pixels per side. Scale it down and attach it again.",
                        code="too_many_pixels",
                    )
                image.verify()  # checksums and structure, without decoding
            # verify() leaves the image unusable: decode it for real from a fresh open.
            with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as image:
                image.load()
        except ValidationError:
            raise
        except UnidentifiedImageError as exc:
            raise unknown from exc
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValidationError(
                f"“{shown}” decodes to far more pixels than it should; it was refused.", code="bomb"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            # Pillow reports damaged files with any of these (truncated data, bad chunks, bad headers).
            raise corrupt from exc
    return Inspected("image", media_type, len(data), _digest(data), width=width, height=height)


THUMBNAIL_SIDE = 320  # pixels, the longer side; shown at up to 160 px high (sharp on 2x screens)


def make_thumbnail(data: bytes) -> bytes:
    """A small WebP of an image already accepted by `inspect_upload` (first frame of an animation), so the
    transcript never loads a multi-megabyte original to show a 160-pixel preview."""
    with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as image:
        image.seek(0)
        frame = image.convert("RGBA") if image.mode in ("P", "LA", "RGBA", "PA") else image.convert("RGB")
        frame.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        frame.save(buffer, format="WEBP", quality=80, method=4)
    return buffer.getvalue()


def _inspect_pdf(data: bytes, shown: str) -> Inspected:
    corrupt = ValidationError(
        f"“{shown}” looks like a PDF but is damaged or incomplete, so it cannot be read.", code="corrupt"
    )
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ValidationError(
                f"“{shown}” is password-protected; the model cannot read it. Remove the password first.",
                code="encrypted",
            )
        pages = len(reader.pages)
        if pages:
            reader.pages[0].mediabox  # noqa: B018 - touching the first page proves the page tree resolves
    except ValidationError:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise corrupt from exc
    if pages == 0:
        raise corrupt
    limit = settings.CHAT_ATTACHMENT_MAX_PAGES
    if pages > limit:
        raise ValidationError(
            f"“{shown}” has {pages:,} pages; the limit is {limit:,}. Attach the pages you need.",
            code="too_many_pages",
        )
    return Inspected("pdf", PDF_TYPE, len(data), _digest(data), pages=pages)
