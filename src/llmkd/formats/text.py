"""Data files as text: the encoding rules every reader shares.

* ``data.encoding: utf-8`` (the default) reads a file that starts with a UTF-8 byte order mark
  (BOM, as Excel writes CSV) without the mark (Python's ``utf-8-sig``), so it never becomes part
  of the first header name, label or token.
* A file that starts with a BOM of another encoding than ``data.encoding`` names (a UTF-8 BOM
  read as latin-1, a UTF-16 BOM read as UTF-8) is rejected naming the encoding to set.
* Bytes that are not valid in ``data.encoding`` are rejected naming ``file:line`` and the byte.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import DataError

UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def codec_name(encoding: str) -> str:
    """The codec's canonical name (``"UTF8"`` -> ``"utf-8"``); DataError for an unknown encoding."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None


def decoding(encoding: str) -> str:
    """The codec to open a file with: ``utf-8-sig`` for UTF-8 (a leading BOM is dropped)."""
    return "utf-8-sig" if codec_name(encoding) == "utf-8" else encoding


def check_bom(head: bytes, encoding: str, source: str) -> None:
    """Reject a byte order mark that contradicts ``encoding`` (``head``: the file's first bytes)."""
    name = codec_name(encoding)
    if head.startswith(UTF8_BOM) and name not in ("utf-8", "utf-8-sig"):
        raise DataError(f"{source}: starts with a UTF-8 byte order mark (BOM), so it is UTF-8 text, but "
                        f"data.encoding is {encoding!r}; set data.encoding: utf-8 (the mark is then skipped)")
    if head.startswith(_UTF16_BOMS) and not name.startswith(("utf-16", "utf-32")):
        raise DataError(f"{source}: starts with a UTF-16 byte order mark (BOM), but data.encoding is "
                        f"{encoding!r}; set data.encoding: utf-16")


def decode(data: bytes, encoding: str, source: str) -> str:
    """``data`` decoded (BOM checked, a UTF-8 BOM dropped, newlines normalised to ``\\n``), or
    DataError naming ``source:line`` of the first undecodable byte and the setting to change."""
    check_bom(data[:4], encoding, source)
    skip = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0  # utf-8 only, after check_bom
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        start = exc.start + skip
        line = data.count(b"\n", 0, start) + 1
        col = start - (data.rfind(b"\n", 0, start) + 1)
        raise DataError(
            f"{source}:{line}: not valid {encoding} ({exc.reason} at byte {col} of the line); "
            "set data.encoding to the file's encoding, e.g. latin-1"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of a data file (see :func:`decode`)."""
    path = Path(path)
    return decode(path.read_bytes(), encoding, str(path))
