"""Languages: the locale a newsletter is written in, its catalogs of fixed strings, dates from CLDR.

Every fixed string of the templates (`{% trans %}`, `_()`) and of the Python code that writes to
readers (`_ = i18n.gettext_for(settings)`) is looked up, in this order, in:

1. the project's own catalog, `translations/<locale>.po` (e.g. `translations/pt_BR.po`, then
   `translations/pt.po`): a project overrides any string, or adds a language of its own;
2. the catalog shipped in the package, `newsletter/locales/<locale>/LC_MESSAGES/messages.po`;
3. the English catalog, so a string nobody translated still reads as English.

Catalogs are .po files read with Babel when first needed (and cached): there is no compile step, so a
fresh clone and a wheel work alike. Dates come from CLDR through Babel in the newsletter's locale;
the Atom feed keeps ISO dates.
"""

from __future__ import annotations

import difflib
import functools
import gettext
import io
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import SettingsError

if TYPE_CHECKING:
    from babel import Locale
    from babel.messages.catalog import Catalog

    from newsletter.settings import Settings

logger = logging.getLogger(__name__)

DOMAIN = "messages"
SOURCE_LANGUAGE = "en"  # the msgids are English; the English catalog says so explicitly
LOCALES_DIR = Path(__file__).resolve().parent / "locales"  # <locale>/LC_MESSAGES/messages.po
PROJECT_CATALOGS = "translations"  # <project>/translations/<locale>.po
# Babel's extraction of the templates, the same options as babel.cfg (msgids match the runtime's).
JINJA_EXTRACT_OPTIONS = {"extensions": "jinja2.ext.i18n", "trimmed": "true", "newstyle_gettext": "true",
                         "trim_blocks": "true", "lstrip_blocks": "true", "encoding": "utf-8"}


def N_(message: str) -> str:
    """Mark MESSAGE for extraction (Babel's keyword); it is translated where it is shown."""
    return message


# --- the locale ----------------------------------------------------------------------------------

def parse_locale(value: str) -> Locale:
    """Return the Babel locale VALUE names (`fr`, `pt_BR`, `pt-BR`); ValueError with close matches if none."""
    from babel import Locale, UnknownLocaleError

    cleaned = value.strip().replace("-", "_")
    try:
        if not cleaned:
            raise ValueError("empty")
        return Locale.parse(cleaned)
    except (UnknownLocaleError, ValueError, TypeError):
        close = suggestions(value)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"{value!r} is not a locale Babel knows{hint}; use a code such as 'fr', 'de' or "
                         "'pt_BR'") from None


def check_language(where: str, value: str) -> None:
    """Raise SettingsError naming WHERE (the file and key) if VALUE is not a known locale."""
    try:
        parse_locale(value)
    except ValueError as err:
        raise SettingsError(f"{where} {err}") from None


def suggestions(value: str, limit: int = 3) -> list[str]:
    """Return up to LIMIT locale codes close to VALUE, by code or by English name ('french' → 'fr')."""
    from babel.localedata import locale_identifiers

    codes = sorted(locale_identifiers())
    wanted = value.strip().replace("-", "_")
    base = [wanted.split("_")[0].lower()] if "_" in wanted and wanted.split("_")[0].lower() in codes else []
    by_code = difflib.get_close_matches(wanted, codes, n=limit, cutoff=0.6)
    names = _language_names()
    by_name = [names[n] for n in difflib.get_close_matches(wanted.lower(), list(names), n=limit, cutoff=0.75)]
    return list(dict.fromkeys(base + by_name + by_code))[:limit]


@functools.lru_cache(maxsize=1)
def _language_names() -> dict[str, str]:
    """Return each language's English and own name, lower case, with its code: 'french' and 'français' → 'fr'."""
    from babel import Locale
    from babel.localedata import locale_identifiers

    names: dict[str, str] = {}
    for code in sorted(locale_identifiers(), key=len):  # the shortest code for a name: 'fr' for French
        if "_" not in code:
            locale = Locale.parse(code)
            for name in (locale.english_name, locale.display_name):
                if name:
                    names.setdefault(name.lower(), code)
    return names


@functools.lru_cache(maxsize=64)
def locale_of(language: str) -> Locale:
    """Return the (cached) Babel locale of a language setting already checked at load."""
    return parse_locale(language)


def html_lang(language: str) -> str:
    """Return LANGUAGE as a BCP 47 tag for `<html lang>` and `xml:lang` (`pt_BR` → `pt-BR`)."""
    return str(locale_of(language)).replace("_", "-")


def direction(language: str) -> str:
    """Return "rtl" for a language written right to left (Arabic, Hebrew, Persian…), else "ltr"."""
    return "rtl" if locale_of(language).character_order == "right-to-left" else "ltr"


def long_date(day: date, language: str = SOURCE_LANGUAGE) -> str:
    """Return DAY in full as CLDR writes it: 'Thursday, November 26, 2026', 'jeudi 26 novembre 2026'."""
    from babel.dates import format_date

    return format_date(day, format="full", locale=locale_of(language))


def month_year(day: date, language: str = SOURCE_LANGUAGE) -> str:
    """Return DAY's month and year as a heading: 'November 2026', 'novembre 2026'."""
    from babel.dates import format_skeleton

    text = format_skeleton("yMMMM", day, locale=locale_of(language))
    return text[:1].upper() + text[1:]  # a heading: 'Novembre 2026' (CLDR's stand-alone names are lower case in fr)


# --- the catalogs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Language:
    """A newsletter's language: its locale, the catalogs it reads (first wins), and gettext over them."""

    language: str
    catalogs: tuple[tuple[Path, Catalog], ...]  # the project's, then the package's, English last
    translations: gettext.NullTranslations

    @property
    def is_source(self) -> bool:
        return locale_of(self.language).language == SOURCE_LANGUAGE

    def translated(self, msgid: str) -> bool:
        """Return whether MSGID has a translation in a catalog of this language (English does not count)."""
        for path, catalog in self.catalogs:
            if path.parent.parent.name == SOURCE_LANGUAGE and path.is_relative_to(LOCALES_DIR):
                continue
            message = catalog.get(msgid)
            if message is not None and not message.fuzzy:
                strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
                if strings and all(strings):
                    return True
        return False


def catalog_paths(language: str, root: Path | None) -> list[Path]:
    """Return the catalog files LANGUAGE reads, first wins: the project's, the package's, English."""
    locale = locale_of(language)
    names = list(dict.fromkeys([str(locale), locale.language]))
    paths: list[Path] = []
    if root is not None:
        paths += [root / PROJECT_CATALOGS / f"{name}.po" for name in names]
    paths += [LOCALES_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po" for name in [*names, SOURCE_LANGUAGE]]
    return [p for p in dict.fromkeys(paths) if p.is_file()]


def language_of(settings: Settings) -> Language:
    """Return the newsletter's Language: its catalogs read once (again when a catalog file changes)."""
    return load(settings.newsletter.language, settings.root)


def load(language: str, root: Path | None) -> Language:
    """Return LANGUAGE with the catalogs of the project at ROOT (None: the package's only)."""
    paths = catalog_paths(language, root)
    stamps = tuple((p, p.stat().st_mtime_ns) for p in paths)
    return _load_language(language, stamps)


@functools.lru_cache(maxsize=16)
def _load_language(language: str, stamps: tuple[tuple[Path, int], ...]) -> Language:
    catalogs = tuple((path, read_catalog(path, language)) for path, _ in stamps)
    head: gettext.NullTranslations | None = None
    for _, catalog in catalogs:
        translations = _as_translations(catalog)
        if head is None:
            head = translations
        else:
            head.add_fallback(translations)
    return Language(language, catalogs, head or gettext.NullTranslations())


def read_catalog(path: Path, language: str) -> Catalog:
    """Read the .po file PATH; SettingsError naming it if it cannot be read."""
    from babel.messages.pofile import PoFileError, read_po

    try:
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=str(locale_of(language)), domain=DOMAIN, abort_invalid=True)
    except (OSError, UnicodeDecodeError, PoFileError, ValueError) as err:
        raise SettingsError(f"{path}: cannot read this translation catalog: {err}") from err
    for message in catalog:
        if message.id:
            _check_fields(path, message)
    return catalog


_PERCENT_FIELD = re.compile(r"%\((\w+)\)[sd]")
_BRACE_FIELD = re.compile(r"\{(\w+)\}")


def _check_fields(path: Path, message) -> None:
    """Refuse a translation that names a placeholder its msgid lacks, or holds a lone '%': it would fail
    (or show garbage) in every issue; the error names the file and line instead."""
    ids = [message.id] if isinstance(message.id, str) else list(message.id)
    strings = [message.string] if isinstance(message.string, str) else list(message.string)
    percent = {name for msgid in ids for name in _PERCENT_FIELD.findall(msgid)}
    brace = {name for msgid in ids for name in _BRACE_FIELD.findall(msgid)}
    where = f"{path}:{message.lineno}" if message.lineno else str(path)
    for string in filter(None, strings):
        unknown = (set(_PERCENT_FIELD.findall(string)) - percent) | (set(_BRACE_FIELD.findall(string)) - brace)
        if unknown:
            shown = ", ".join(sorted(unknown))
            raise SettingsError(f"{where}: the translation of {ids[0]!r} uses {shown}, which the original does not "
                                f"have; keep its placeholders: {', '.join(sorted(percent | brace)) or 'none'}")
        try:
            string % dict.fromkeys(percent, 1)  # the templates always %-format a translation
        except (ValueError, TypeError, KeyError) as err:
            raise SettingsError(f"{where}: the translation of {ids[0]!r} cannot be filled in ({err}); "
                                "write %% for a literal %") from None


def _as_translations(catalog: Catalog) -> gettext.GNUTranslations:
    """Return gettext over CATALOG: Babel writes it as a .mo in memory (untranslated entries fall through)."""
    from babel.messages.mofile import write_mo
    from babel.support import Translations

    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def gettext_for(settings: Settings) -> Callable[..., str]:
    """Return `_` for Python code: `_("Check your inbox")`, `_("No. %(number)s") % {"number": 6}`."""
    return language_of(settings).translations.gettext


def ngettext_for(settings: Settings) -> Callable[[str, str, int], str]:
    """Return `ngettext` for Python code, with the plural forms of the newsletter's language."""
    return language_of(settings).translations.ngettext


def install(env, settings: Settings) -> None:
    """Give the Jinja environment ENV the i18n extension and the newsletter's translations."""
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True  # a {% trans %} block's whitespace is folded, as babel.cfg says
    env.install_gettext_translations(language_of(settings).translations, newstyle=True)


# --- what is not translated ----------------------------------------------------------------------

def source_msgids() -> list[str]:
    """Return every msgid of the shipped English catalog (every fixed string the package has)."""
    catalog = read_catalog(LOCALES_DIR / SOURCE_LANGUAGE / "LC_MESSAGES" / f"{DOMAIN}.po", SOURCE_LANGUAGE)
    return [message.id if isinstance(message.id, str) else message.id[0] for message in catalog if message.id]


def template_msgids(folder: Path) -> list[tuple[str, Path, int]]:
    """Return (msgid, file, line) of every translatable string in the templates under FOLDER."""
    from babel.messages.extract import extract_from_dir

    if not folder.is_dir():
        return []
    found = []
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(folder), method_map=[("**.j2", "jinja2")], options_map={"**.j2": JINJA_EXTRACT_OPTIONS},
    ):
        msgid = message if isinstance(message, str) else message[0]
        found.append((msgid, folder / filename, lineno))
    return found


def untranslated(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """Return the fixed strings with no translation in the newsletter's language ([] for English)."""
    lang = language_of(settings)
    if lang.is_source:
        return []
    wanted = dict.fromkeys([*source_msgids(), *extra])
    return [msgid for msgid in wanted if not lang.translated(msgid)]


__all__ = [
    "Language", "N_", "catalog_paths", "check_language", "direction", "gettext_for", "html_lang", "install",
    "language_of", "load", "locale_of", "long_date", "month_year", "ngettext_for", "parse_locale", "read_catalog",
    "source_msgids", "suggestions", "template_msgids", "untranslated",
]
