"""What a subject reference may be: a short printable name for a person, never a path.

A reference (a booking reference, a passport number, a staff id) is shown on terminals and
in reports, written to the audit log and to exports, and matched byte for byte. So it must
look the same everywhere and mean one thing: no control or format characters (newlines
that forge log lines, NUL, bidirectional overrides such as U+202E that show
``PNR-1<U+202E>gpj.exe`` as something else, zero-width characters that make two
references look alike), no path separators or the names ``.`` and ``..`` (a reference is
not a file name and must never become one), and at most ``MAX_REFERENCE_LENGTH``
characters. Surrounding whitespace is dropped; spaces inside are kept.
"""

from __future__ import annotations

from airside.errors import AirsideError

MAX_REFERENCE_LENGTH = 200


class BadReference(AirsideError):
    """A subject reference that is empty, too long, or holds characters a reference may not."""

    code = "bad_reference"


def validate_reference(reference: str) -> str:
    """``reference`` without surrounding whitespace, or ``BadReference``. The message names
    an offending character by its code point, never by printing it."""
    if not isinstance(reference, str):
        raise BadReference(f"a subject reference must be text, not {type(reference).__name__}")
    ref = reference.strip()
    if not ref:
        raise BadReference("a subject reference must not be empty")
    if len(ref) > MAX_REFERENCE_LENGTH:
        raise BadReference(
            f"a subject reference must be at most {MAX_REFERENCE_LENGTH} characters "
            f"(this one has {len(ref)})"
        )
    if ref in (".", ".."):
        raise BadReference(f"{ref!r} is not a subject reference")
    for i, ch in enumerate(ref, start=1):
        if ch in "/\\":
            raise BadReference(
                f"a subject reference names a person, not a file: {ch!r} (character {i}) "
                "is not allowed"
            )
        # isprintable() is False for Unicode's "Other" categories (Cc controls such as NUL
        # and newline, Cf formats such as bidi overrides and zero-width characters, Cs, Co,
        # Cn) and for separators other than the ASCII space (Zl, Zp, and Zs such as U+00A0).
        if not ch.isprintable():
            raise BadReference(
                f"a subject reference must be printable: character {i} is U+{ord(ch):04X}, "
                "a control, format or invisible character"
            )
    return ref
