"""Text by display width: what a terminal or a mail reader's fixed-width font shows, column by column.

A wide character (Chinese, Japanese, Korean, full-width forms: Unicode's East Asian Width W and F)
takes two columns; a combining mark or a format character none. The text part is filled to 78
columns this way, so a line of Japanese stays within 78 columns rather than 78 characters.
Scripts without spaces between words may break between any two wide characters, except before
closing punctuation (。、」) and after opening punctuation (「), as CJK line breaking does.
"""

from __future__ import annotations

import functools
import unicodedata

# No line starts with these (closing brackets, stops, prolonged sound mark, iteration marks)...
_CLOSING = frozenset("、。，．・：；？！）」』】〕〉》〗〙〛’”ー々ゝゞヽヾぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮ"
                     "…‥,.;:!?)]}%")
# ... and none ends with these.
_OPENING = frozenset("（「『【〔〈《〖〘〚‘“([{")


@functools.lru_cache(maxsize=4096)
def char_width(char: str) -> int:
    """Return the columns CHAR takes: 2 for a wide character, 0 for a combining or format one, else 1."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Return the columns TEXT takes on one line."""
    if text.isascii():
        return len(text)
    return sum(map(char_width, text))


def fill(text: str, width: int, first: str, rest: str) -> str:
    """Fill single-spaced TEXT to WIDTH columns; FIRST starts the first line, REST the others.

    Words (and, in CJK text, characters) are never cut: a URL or another word longer than the line
    stays whole on a line of its own, since a broken URL no longer works.
    """
    if text.isascii() and first.isascii() and rest.isascii():
        return _fill_ascii(text, width, first, rest)
    lines: list[str] = []
    line: list[str] = []
    prefix, room = first, width - display_width(first)
    used = 0
    for atom, atom_width, spaced in _atoms(text):
        gap = 1 if spaced and line else 0
        if line and used + gap + atom_width > room:
            lines.append(prefix + "".join(line))
            prefix, room, line, used, gap = rest, width - display_width(rest), [], 0, 0
        line.append(" " * gap + atom)
        used += gap + atom_width
    if line:
        lines.append(prefix + "".join(line))
    return "\n".join(lines) or first.rstrip()


def _atoms(text: str) -> list[tuple[str, int, bool]]:
    """Return the unbreakable pieces of TEXT: (piece, its width, whether a space comes before it)."""
    atoms: list[tuple[str, int, bool]] = []
    for word in text.split(" "):
        if not word:
            continue
        if word.isascii():
            atoms.append((word, len(word), True))
            continue
        pieces: list[list] = []  # [text, width]
        previous = ""
        for char in word:
            w = char_width(char)
            wide = w == 2 or (previous and char_width(previous) == 2)
            if pieces and not (wide and char not in _CLOSING and previous not in _OPENING):
                pieces[-1][0] += char
                pieces[-1][1] += w
            else:
                pieces.append([char, w])
            previous = char
        atoms += [(piece, w, i == 0) for i, (piece, w) in enumerate(pieces)]
    return atoms


def _fill_ascii(text: str, width: int, first: str, rest: str) -> str:
    """Return textwrap.fill(TEXT, WIDTH, initial_indent=FIRST, subsequent_indent=REST,
    break_long_words=False, break_on_hyphens=False) for single-spaced ASCII TEXT, several times faster."""
    lines: list[str] = []
    words: list[str] = []
    prefix, used = first, 0
    for word in text.split(" "):
        if not word:
            continue
        if words and used + 1 + len(word) > width - len(prefix):
            lines.append(prefix + " ".join(words))
            prefix, words, used = rest, [], 0
        used += len(word) + (1 if words else 0)
        words.append(word)
    if words:
        lines.append(prefix + " ".join(words))
    return "\n".join(lines) or first.rstrip()


__all__ = ["char_width", "display_width", "fill"]
