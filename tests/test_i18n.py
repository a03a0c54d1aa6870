"""Languages: the catalogs shipped and their completeness, the language setting, a project's own
catalog, localized dates, and the text part's wrapping by display width."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from hypothesis import given, settings as hypothesis_settings, strategies as st

from newsletter import i18n
from newsletter.errors import SettingsError
from newsletter.renderer import html_to_text, wrap
from newsletter.settings import load_settings
from newsletter.textwidth import display_width

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.parent.parent.name for p in (REPO / "newsletter" / "locales").glob("*/LC_MESSAGES/messages.po"))


def _set_language(project: Path, language: str) -> None:
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('language = "en"', f'language = "{language}"', 1), encoding="utf-8")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> dict[str, object]:
    """Every msgid `pybabel extract -F babel.cfg` finds in the code and the templates, as a user runs it."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([str(pybabel), "-q", "extract", "-F", "babel.cfg", "-o", str(pot), "."], cwd=REPO, check=True)
    with pot.open("rb") as handle:
        return {message.id if isinstance(message.id, str) else message.id[0]: message
                for message in read_po(handle) if message.id}



@pytest.mark.parametrize("language", SHIPPED)
def test_every_extracted_string_is_translated_in_every_shipped_catalog(extracted, language):
    path = REPO / "newsletter" / "locales" / language / "LC_MESSAGES" / "messages.po"
    catalog = i18n.read_catalog(path, language)
    missing, stale, wrong_forms = [], [], []
    for msgid, template in extracted.items():
        message = catalog.get(template.id)
        strings = [] if message is None else (list(message.string) if template.pluralizable else [message.string])
        if message is None or not all(strings) or message.fuzzy:
            missing.append(msgid)
        elif template.pluralizable and len(strings) != catalog.num_plurals:
            wrong_forms.append(msgid)
    for message in catalog:
        key = message.id if isinstance(message.id, str) else message.id[0]
        if message.id and key not in extracted:
            stale.append(key)
    assert not missing, f"{path}: untranslated: {missing}"
    assert not wrong_forms, f"{path}: plural forms other than {catalog.num_plurals}: {wrong_forms}"
    assert not stale, f"{path}: strings no template or module uses any more: {stale}"


@pytest.mark.parametrize("language", SHIPPED)
def test_every_translation_keeps_the_placeholders_of_its_msgid(language):
    path = REPO / "newsletter" / "locales" / language / "LC_MESSAGES" / "messages.po"
    import re

    field = re.compile(r"%\(\w+\)[sd]|\{\w+\}")
    for message in i18n.read_catalog(path, language):
        if not message.id:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        wanted = set(field.findall(ids[-1])) | set(field.findall(ids[0]))
        for string in strings:
            found = set(field.findall(string))
            # a plural form may leave the number out ("one day" for 1, Arabic's dual)
            numbers = {"%(count)s", "%(num)d", "%(days)s"} if len(ids) > 1 else set()
            assert found <= wanted and (found >= wanted - numbers), (path, message.id, string)


def test_a_locale_with_a_region_is_accepted_and_tagged_for_html(project):
    _set_language(project, "pt_BR")
    settings = load_settings(project)
    assert i18n.html_lang(settings.newsletter.language) == "pt-BR"
    assert i18n.long_date(date(2026, 11, 26), "pt-BR") == "quinta-feira, 26 de novembro de 2026"


@pytest.mark.parametrize(("written", "suggested"), [("fr_XX", "'fr'"), ("French", "'fr'"), ("Français", "'fr'"),
                                                    ("pt-br", None), ("xx-klingon", None)])
def test_an_unknown_language_is_an_error_naming_the_setting_and_close_locales(project, written, suggested):
    _set_language(project, written)
    if written == "pt-br":  # any case of a real locale is that locale
        assert i18n.html_lang(load_settings(project).newsletter.language) == "pt-BR"
        return
    with pytest.raises(SettingsError) as caught:
        load_settings(project)
    message = str(caught.value)
    assert message.startswith(f"{project / 'newsletter.toml'}: newsletter.language {written!r} is not a locale")
    if suggested:
        assert f"(did you mean {suggested}" in message


def test_the_cli_says_which_setting_is_wrong(project, runner):
    from newsletter.cli import app

    _set_language(project, "klingon")
    result = runner.invoke(app, ["--project", str(project), "build"])
    assert result.exit_code == 1
    assert "newsletter.language 'klingon' is not a locale" in result.output


def test_a_project_catalog_overrides_a_shipped_string(project):
    (project / "translations").mkdir()
    (project / "translations" / "en.po").write_text(textwrap.dedent('''\
        msgid ""
        msgstr ""
        "Content-Type: text/plain; charset=utf-8\\n"

        msgid "View in browser"
        msgstr "Read it on the web"
        '''), encoding="utf-8")
    settings = load_settings(project)
    from newsletter.pipeline import prepare_issue

    day = next(p.name for p in (project / "articles").iterdir())
    rendered = prepare_issue(settings, date.fromisoformat(day)).rendered
    assert rendered is not None
    assert "Read it on the web</a>" in rendered.html and "View in browser" not in rendered.html
    assert "Unsubscribe</a>" in rendered.html  # what the project leaves alone comes from the package


def test_an_unreadable_project_catalog_names_its_file(project):
    (project / "translations").mkdir()
    bad = project / "translations" / "en.po"
    bad.write_bytes(b'msgid "View in browser"\nmsgstr "Lire en ligne \xff"\n')  # not UTF-8
    with pytest.raises(SettingsError, match=str(bad)):
        i18n.language_of(load_settings(project))


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "Thursday, November 26, 2026"), ("fr", "jeudi 26 novembre 2026"),
    ("de", "Donnerstag, 26. November 2026"), ("es", "jueves, 26 de noviembre de 2026"),
    ("pt", "quinta-feira, 26 de novembro de 2026"), ("ar", "الخميس، 26 نوفمبر 2026"),
])
def test_dates_are_written_as_cldr_writes_them(language, expected):
    assert i18n.long_date(date(2026, 11, 26), language) == expected


# --- the text part by display width ----------------------------------------------------------------

def test_japanese_wraps_at_78_columns_not_78_characters():
    sentence = "東京の会議では新しい条約について長い議論が続きました。" * 6
    lines = wrap(sentence).split("\n")
    assert len(lines) > 2
    assert all(display_width(line) <= 78 for line in lines)
    assert all(display_width(line) >= 74 for line in lines[:-1])  # full lines, not 39 characters of 78
    assert not any(line.startswith(("。", "、")) for line in lines)  # no line opens with a stop
    assert "".join(lines) == sentence


def test_an_underline_is_as_wide_as_its_wide_title():
    title, rule = wrap("会議の記録").split("\n")[0], None
    from newsletter.renderer import underline

    title, rule = underline("会議の記録", "=").split("\n")
    assert rule == "=" * 10


_NARROW = st.text(st.sampled_from("abcdefghij KLMNOé́ß-"), min_size=1, max_size=12)
_WIDE = st.text(st.sampled_from("東京会議条約の「」。、한국어ＡＢ"), min_size=1, max_size=30)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_NARROW, _WIDE), min_size=1, max_size=40), st.sampled_from(["", "  - ", "> "]))
def test_wrapped_mixed_width_text_stays_within_78_columns_and_keeps_every_character(pieces, indent):
    text = " ".join(pieces)
    wrapped = wrap(text, indent=indent, hang=" " * len(indent))
    for line in wrapped.split("\n"):
        assert display_width(line) <= 78, line
    squash = lambda s: "".join(s.split())  # noqa: E731
    assert squash(wrapped).removeprefix(squash(indent)) == squash(text)


def test_html_to_text_wraps_cjk_paragraphs_by_width():
    text = html_to_text("<p>" + "한국어 문장이 계속됩니다 " * 12 + "</p><ul><li>" + "条約" * 50 + "</li></ul>")
    assert all(display_width(line) <= 78 for line in text.split("\n"))


def test_the_six_languages_ship():
    assert {"en", "fr", "de", "es", "pt", "ar"} <= set(SHIPPED)


# --- init --language and check ------------------------------------------------------------------

def test_init_in_french_writes_french_settings_and_a_french_welcome_article(tmp_path, runner):
    from newsletter.cli import app
    from conftest import fill_postal_address

    folder = tmp_path / "bulletin"
    result = runner.invoke(app, ["init", str(folder), "--language", "fr", "--name", "Le Bulletin"])
    assert result.exit_code == 0, result.output
    settings = load_settings(fill_postal_address(folder))
    assert settings.newsletter.language == "fr"
    assert settings.newsletter.tagline == "L’actualité du jour"
    assert settings.issue.sections == ("Actualités", "Analyse") and settings.issue.default_section == "Actualités"
    assert settings.issue.greeting == "Bonjour {name}," and settings.digest.subject == "{name}\u00a0: la semaine du {dates}"
    welcome = next(folder.glob("articles/*/welcome.md")).read_text(encoding="utf-8")
    assert 'title: "Bienvenue dans Le Bulletin"' in welcome and "un fichier Markdown par article" in welcome
    checked = runner.invoke(app, ["--project", str(folder), "check"])
    assert checked.exit_code == 0, checked.output
    assert "no problems found" in checked.output  # the welcome article cites nothing check cannot read
    built = runner.invoke(app, ["--project", str(folder), "build"])
    assert built.exit_code == 0, built.output
    html = next(folder.glob("outbox/*/issue.html")).read_text(encoding="utf-8")
    assert "Dans ce numéro" in html and "Bienvenue dans Le Bulletin" in html and "Bonjour," in html


def test_init_refuses_an_unknown_language_and_writes_nothing(tmp_path, runner):
    from newsletter.cli import app

    result = runner.invoke(app, ["init", str(tmp_path / "b"), "--language", "frnch"])
    assert result.exit_code == 1
    assert "Error: --language 'frnch' is not a locale Babel knows (did you mean 'fr'" in result.output
    assert not (tmp_path / "b").exists()


def _italian_catalog(folder: Path, translate=lambda msgid: "IT " + msgid) -> None:
    """Write translations/it.po with every shipped string 'translated' (as a translator's finished catalog)."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    english = i18n.read_catalog(i18n.LOCALES_DIR / "en" / "LC_MESSAGES" / "messages.po", "en")
    catalog = Catalog(locale="it")
    for message in english:
        if message.id:
            ids = [message.id] if isinstance(message.id, str) else list(message.id)
            strings = translate(ids[0]) if len(ids) == 1 else tuple(
                translate(ids[min(n, 1)]) for n in range(catalog.num_plurals))  # Italian has three forms
            catalog.add(message.id, strings)
    (folder / "translations").mkdir(exist_ok=True)
    with (folder / "translations" / "it.po").open("wb") as handle:
        write_po(handle, catalog)


def test_check_errors_on_a_fixed_string_with_no_translation(project, runner):
    from newsletter.cli import app

    _set_language(project, "it")  # Babel knows Italian; no catalog ships for it
    result = runner.invoke(app, ["--project", str(project), "check"])
    assert result.exit_code == 1
    assert "'View in browser' has no 'it' translation" in result.output or "more fixed strings have no 'it'" \
        in result.output
    assert "add it to translations/it.po" in result.output
    _italian_catalog(project, lambda msgid: "" if msgid == "View in browser" else "IT " + msgid)
    result = runner.invoke(app, ["--project", str(project), "check", "--format", "json"])
    assert result.exit_code == 1
    import json

    found = [f for f in json.loads(result.output)["findings"] if f["rule_id"] == "translation"]
    assert [f["message"].split(" has no")[0] for f in found] == ["'View in browser'"]
    assert found[0]["path"] == "templates/partials/layout.html.j2" and found[0]["line"]
    _italian_catalog(project)
    result = runner.invoke(app, ["--project", str(project), "check"])
    assert result.exit_code == 0, result.output


def test_check_names_the_template_of_a_project_string_missing_from_its_catalog(project, runner):
    from newsletter.cli import app

    _set_language(project, "it")
    _italian_catalog(project)
    layout = project / "templates" / "partials" / "layout.html.j2"
    text = layout.read_text(encoding="utf-8")
    layout.write_text(text.replace("<p>{{ sender.postal_address }}</p>",
                                   '<p>{{ _("Printed on recycled electrons") }}</p>\n<p>{{ sender.postal_address }}</p>'),
                      encoding="utf-8")
    result = runner.invoke(app, ["--project", str(project), "check"])
    assert result.exit_code == 1
    assert "templates/partials/layout.html.j2:" in result.output
    assert "'Printed on recycled electrons' has no 'it' translation" in result.output


def test_check_warns_of_a_template_copy_made_before_languages_existed(project, runner):
    from newsletter.cli import app

    _set_language(project, "fr")
    contents = project / "templates" / "partials" / "contents.html.j2"
    contents.write_text(contents.read_text(encoding="utf-8").replace('{{ _("In this issue") }}', "In this issue"),
                        encoding="utf-8")
    result = runner.invoke(app, ["--project", str(project), "check"])
    assert result.exit_code == 0, result.output  # a warning: the project may mean it
    assert "templates/partials/contents.html.j2: this copy of a packaged template has no translatable strings" \
        in " ".join(result.output.split())


@pytest.mark.parametrize(("language", "direction"), [("ar", "rtl"), ("he", "rtl"), ("fa", "rtl"), ("ur", "rtl"),
                                                     ("fr", "ltr"), ("pt_BR", "ltr"), ("zh", "ltr")])
def test_the_writing_direction_comes_from_the_locale(language, direction):
    from newsletter.renderer import direction_values

    values = direction_values(language)
    assert values["direction"] == direction
    assert (values["start"], values["end"]) == (("right", "left") if direction == "rtl" else ("left", "right"))


@pytest.mark.parametrize(("msgstr", "expected"), [
    ("Par %(auteur)s", "uses auteur, which the original does not have; keep its placeholders: author"),
    ("100 % par %(author)s", "cannot be filled in"),
])
def test_a_project_translation_that_would_break_the_issue_is_an_error_naming_its_line(project, runner, msgstr,
                                                                                        expected):
    from newsletter.cli import app

    _set_language(project, "fr")
    (project / "translations").mkdir()
    (project / "translations" / "fr.po").write_text(textwrap.dedent(f'''\
        msgid ""
        msgstr "Content-Type: text/plain; charset=utf-8\\n"

        msgid "By %(author)s"
        msgstr "{msgstr}"
        '''), encoding="utf-8")
    result = runner.invoke(app, ["--project", str(project), "build"])
    assert result.exit_code == 1
    assert f"Error: {project / 'translations' / 'fr.po'}:4: the translation of 'By %(author)s' " in result.output
    assert expected in " ".join(result.output.split())
