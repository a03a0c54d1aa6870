"""The one error root and the few subclasses the CLI tells apart."""


class NewsletterError(Exception):
    """Anything the user can fix: the message names the file, line, field or host at fault."""


class ProjectError(NewsletterError):
    """No project here, or a project that cannot be created."""


class SettingsError(NewsletterError):
    """newsletter.toml is wrong: an unknown key, a wrong type, a bad value."""


class SubscriberError(NewsletterError):
    """A subscriber operation failed: a bad address, an unknown subscriber, a refused change."""


class ImportFileError(SubscriberError):
    """An import file cannot be read or has invalid rows; nothing was imported."""


class ArticleError(NewsletterError):
    """An article file is invalid; nothing is built from its day."""


class BuildError(NewsletterError):
    """The issue cannot be built or rendered (size limit, template error)."""


class HeaderError(NewsletterError):
    """A header value carries control characters or encoded words (EMAIL.md rule 21)."""


class DeliveryError(NewsletterError):
    """Sending failed for a reason that is not about one recipient (circuit breaker)."""


class LockedError(NewsletterError):
    """Another sender holds the project's send lock."""
