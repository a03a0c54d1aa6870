"""A newsletter project on disk: where the packaged templates are, and `newsletter init`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from newsletter.errors import ProjectError
from newsletter.i18n import N_
from newsletter.files import PRIVATE_DIR, PUBLIC_DIR
from newsletter.settings import CONFIG_NAME, SECRET_KEY_FILE, create_secret_key

PROJECT_FOLDERS = ("articles", "templates", "subscribers", "outbox")
# what init writes for [sender] postal_address; `newsletter check` refuses to send it
POSTAL_PLACEHOLDER = "Your organisation, street, city"

CONFIG_TEMPLATE = """\
# Settings of this newsletter. Every key is shown with its default; change what you need.
# Secrets never go here: the SMTP password comes from NEWSLETTER_SMTP_PASSWORD, and the key that
# signs unsubscribe links from NEWSLETTER_SECRET_KEY or subscribers/secret.key (made by init, 0600):
# back that file up. Once an issue is sent, every link in it depends on the key, so a missing key
# is an error, never silently replaced.

[newsletter]
name = "{name}"                       # masthead, From name, <title>
tagline = "Daily news"                # under the masthead
short_name = "{short_name}"           # used in cross-references: (see {short_name}, May 18)
base_url = "https://newsletter.example.org"   # where the archive and unsubscribe pages live
language = "en"                       # a locale: "fr", "de", "pt_BR"… (README: Languages)
timezone = "UTC"                      # the day of an issue and the send time are in this zone

[sender]
from = "{name} <bulletin@newsletter.example.org>"
reply_to = ""                         # empty: replies go to From
list_id = "bulletin.newsletter.example.org"   # List-Id header
unsubscribe_mailto = "unsubscribe@newsletter.example.org"   # mailto: in List-Unsubscribe
postal_address = "{postal_placeholder}"          # required: `newsletter check` refuses to send without a real one
bounce_address = ""                   # e.g. "bounces@newsletter.example.org": each message's envelope sender
                                      # becomes bounces+TAG@… so `newsletter inbox` knows whom a bounce is about

[issue]
sections = ["News", "Analysis"]       # the order sections appear in
default_section = "News"              # for articles that name no section (.txt files)
min_articles = 1                      # fewer than this: the day follows empty_policy
empty_policy = "skip"                 # "skip" sends nothing; "notice" sends a short "no issue today"
subject = "{{name}}, {{long_date}}"   # also {{short_name}}, {{date}}, {{number}}, {{lead_title}}
greeting = "Good morning, {{name}}."  # {{name}} is the subscriber's name
greeting_fallback = "Good morning."   # for subscribers without a name

[schedule]
send_time = "06:00"                   # HH:MM in [newsletter] timezone
catch_up_hours = 6.0                  # after a restart, a missed slot younger than this is sent

[digest]
weekday = "monday"                    # weekly readers get the past week's digest on this day, at send_time
# keys: {{name}} {{short_name}} {{week}} (2026-W48) {{dates}} (Nov 23 – 29, 2026) {{issues}} {{articles}} {{lead_title}}
subject = "{{name}}: the week of {{dates}}"
preheader = "{{articles}} articles from {{issues}} issues: {{lead_title}}"

[delivery]
transport = "outbox"                  # "outbox" writes .eml files; "smtp" sends
rate = 0.0                            # messages per second across all connections; 0 = no limit
hourly_cap = 0                        # messages per hour; 0 = no cap
concurrency = 4                       # SMTP connections
batch_size = 500                      # messages per fsync group and ledger commit
lease_seconds = 600.0                 # several senders on PostgreSQL: a stalled sender's rows go to the others after this

[smtp]
host = "localhost"
port = 587
security = "starttls"                 # "starttls", "ssl" or "none"
username = ""                         # its secret only from NEWSLETTER_SMTP_PASSWORD
timeout = 30.0                        # seconds
verify = true                         # check the server's TLS certificate (keep it on)
ca_file = ""                          # PEM file of a private CA to trust, relative to the project

[dkim]
selector = ""                         # empty: no DKIM signature
domain = ""                           # must equal the From domain
key_file = ""                         # RSA private key (PEM, 2048 bits or more), relative to the project
ed25519_selector = ""                 # optional second signature, Ed25519 (RFC 8463), under its own selector
ed25519_key_file = ""                 # its private key (PEM), relative to the project
canonicalization = "relaxed/simple"   # headers/body, each "relaxed" or "simple"

[web]
allowed_origins = []                  # other sites whose pages may post the sign-up form, e.g. ["https://example.org"]
trusted_proxies = []                  # proxies whose X-Forwarded-For is believed, e.g. ["127.0.0.1"]
request_timeout = 10.0                # seconds a client has to send a request's headers, and again its body

# The email services' bounce and complaint webhooks in `newsletter serve` (README: "When mail comes back")
[webhooks.ses]
enabled = false                       # POST /webhooks/ses takes SES's reports through an SNS topic
topics = []                           # the topic ARNs believed, e.g. ["arn:aws:sns:eu-west-1:123456789012:newsletter-feedback"]
cert_hosts = 'sns\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?'   # hosts SNS certificates are fetched from (leave it)
ca_file = ""                          # CA certificates for those fetches instead of the system's (leave it)

[webhooks.postmark]
enabled = false                       # POST /webhooks/postmark: bounce and spam-complaint webhooks
username = "postmark"                 # HTTP basic auth; the password only from NEWSLETTER_POSTMARK_PASSWORD

[webhooks.mailgun]
enabled = false                       # POST /webhooks/mailgun; the signing key only from NEWSLETTER_MAILGUN_SIGNING_KEY
max_age = 300.0                       # seconds a signed timestamp stays good; older or reused is refused

[bounces]
soft_limit = 3                        # temporary bounces on this many different days mark an address bounced
window_days = 14                      # … within this many days

[inbox]
host = ""                             # IMAP server (TLS) where bounces, complaints and mailto unsubscribes arrive;
                                      # set, the scheduler reads it every_minutes. Password: NEWSLETTER_INBOX_PASSWORD
port = 993
username = ""
folder = "INBOX"
processed = "move"                    # a message read is moved to processed_folder, or "flag"ged, or "delete"d
processed_folder = "Processed"
human_folder = "For a human"          # where messages the tool cannot act on are moved
verify = true                         # check the server's TLS certificate (keep it on)
ca_file = ""                          # PEM file of a private CA to trust, relative to the project
timeout = 30.0                        # seconds
every_minutes = 5
max_message_bytes = 10000000          # larger messages are left for a human unread

[database]
url = ""                              # empty: the SQLite file subscribers/newsletter.db. Several hosts on one list:
                                      # "postgresql://newsletter@db.example.org/newsletter", password from
                                      # NEWSLETTER_DATABASE_PASSWORD (or the whole URL in NEWSLETTER_DATABASE_URL)

# Articles from feeds (README: "Articles from feeds"): one [[feeds]] table per feed; `newsletter fetch`
# (and the scheduler, before each send) writes each new entry as an article file in articles/DAY/.
# [[feeds]]
# url = "https://example.org/feed.xml"  # RSS, Atom or JSON Feed; or file:PATH inside this project
# name = ""                           # the source line of its articles; empty: the feed's own title
# section = ""                        # empty: [issue] default_section
# max_items = 10                      # the most new entries taken per issue (the newest)
# content = "full"                    # "full": the entry's content; "summary": its summary and a link
# upgrade_http = false                # true: http: links become https:; false: their text stays, the link goes
# timeout = 20.0                      # seconds to connect, and again between reads
# max_bytes = 5000000                 # a larger answer is refused while it streams
"""

SAMPLE_ARTICLE = """\
---
title: Welcome to {name}
section: News
summary: The first article of a new newsletter, showing the article format.
sources: ["Editors, {month_day}"]
priority: 1
---
Put each day's articles in `articles/YYYY-MM-DD/`, one Markdown file per article, with a
front matter block like the one above (Editors, {month_day}).

Run `newsletter preview` to see the issue, and `newsletter send` to write it to the outbox.
"""


# What init writes in the newsletter's language (the English text above is the msgid of each).
_INIT_VALUES = (
    ('tagline = "Daily news"', "tagline", N_("Daily news")),
    ('sections = ["News", "Analysis"]', "sections", (N_("News"), N_("Analysis"))),
    ('default_section = "News"', "default_section", N_("News")),
    ('greeting = "Good morning, {name}."', "greeting", "Good morning, {name}."),
    ('greeting_fallback = "Good morning."', "greeting_fallback", "Good morning."),
    ('subject = "{name}: the week of {dates}"', "subject", "{name}: the week of {dates}"),
    ('preheader = "{articles} articles from {issues} issues: {lead_title}"', "preheader",
     "{articles} articles from {issues} issues: {lead_title}"),
)


def localized_config(config: str, language: str) -> str:
    """Return the newsletter.toml CONFIG (English) with its language and wording in LANGUAGE."""
    from newsletter import i18n

    _ = i18n.load(language, None).translations.gettext
    config = config.replace('language = "en"      ', f"language = {_toml(language)}", 1)
    for english, key, msgid in _INIT_VALUES:
        value = "[" + ", ".join(_toml(_(m)) for m in msgid) + "]" if isinstance(msgid, tuple) else _toml(_(msgid))
        config = config.replace(english, f"{key} = {value}", 1)
    return config


def localized_article(language: str, name: str) -> str:
    """Return the welcome article in LANGUAGE (no citation: citations are 'Source, Month Day' in English)."""
    from newsletter import i18n

    _ = i18n.load(language, None).translations.gettext
    front = {
        "title": _("Welcome to %(name)s") % {"name": name}, "section": _("News"),
        "summary": _("The first article of a new newsletter, showing the article format."),
    }
    body = [
        _("Put each day's articles in `articles/YYYY-MM-DD/`, one Markdown file per article, with a front matter "
          "block like the one above."),
        _("Run `newsletter preview` to see the issue, and `newsletter send` to write it to the outbox."),
    ]
    lines = ["---", *(f"{key}: {_toml(value)}" for key, value in front.items()), "priority: 1", "---"]
    return "\n".join(lines) + "\n" + "\n\n".join(body) + "\n"


def _toml(value: str) -> str:
    """Return VALUE as a TOML (and YAML) basic string: JSON's escapes are both."""
    return json.dumps(value, ensure_ascii=False)


def packaged_templates() -> Path:
    """Return the folder of the templates shipped with the tool."""
    # An installed wheel has newsletter/templates/ (a folder without __init__.py, which
    # importlib.resources gives as a MultiplexedPath that is no file system path); a source
    # checkout and an editable install have the repository's templates/ next to newsletter/.
    here = Path(__file__).resolve().parent
    installed = here / "templates"
    return installed if (installed / "issue.html.j2").is_file() else here.parent / "templates"


def init_project(folder: Path, name: str, short_name: str, today_iso: str, month_day: str,
                 language: str = "en") -> Path:
    """Create a working project in FOLDER, its settings and welcome article in LANGUAGE; refuse if one is there."""
    from newsletter import i18n

    try:
        i18n.parse_locale(language)
    except ValueError as err:
        raise ProjectError(f"--language {err}") from None
    english = i18n.locale_of(language).language == i18n.SOURCE_LANGUAGE
    folder = folder.resolve()
    if (folder / CONFIG_NAME).exists():
        raise ProjectError(f"{folder / CONFIG_NAME}: a project is already here; nothing was changed")
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder}: exists and is not a folder")
    for sub in PROJECT_FOLDERS:
        if (folder / sub).exists() and any((folder / sub).iterdir()):
            raise ProjectError(f"{folder / sub}: exists and is not empty; nothing was changed")
    if any(c in name for c in '"\\\n\r') or any(c in short_name for c in '"\\\n\r'):
        raise ProjectError("--name and --short-name must not contain quotes, backslashes or newlines")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in PROJECT_FOLDERS:
        (folder / sub).mkdir(exist_ok=True)
    # the list and the key are the owner's alone; outbox/ holds the public site/ next to private days
    os.chmod(folder / "subscribers", PRIVATE_DIR)
    os.chmod(folder / "outbox", PUBLIC_DIR)
    shutil.copytree(packaged_templates(), folder / "templates", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    day_dir = folder / "articles" / today_iso
    day_dir.mkdir(parents=True, exist_ok=True)
    article = SAMPLE_ARTICLE.format(name=name, month_day=month_day) if english else localized_article(language, name)
    (day_dir / "welcome.md").write_text(article, encoding="utf-8")
    (folder / "subscribers" / ".gitignore").write_text("*.db\n*.db-*\nsecret.key\n*.lock\n", encoding="utf-8")
    (folder / "outbox" / ".gitignore").write_text("*\n!.gitignore\n", encoding="utf-8")
    config = CONFIG_TEMPLATE.format(name=name, short_name=short_name, postal_placeholder=POSTAL_PLACEHOLDER)
    (folder / CONFIG_NAME).write_text(config if english else localized_config(config, language), encoding="utf-8")
    create_secret_key(folder / SECRET_KEY_FILE)
    return folder
