"""Settings, read from the environment (see the configuration table in README.md)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_secret(name: str, default: str) -> str:
    """A secret may be given directly or, for Docker/Kubernetes secrets, as a file in `<NAME>_FILE`."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE names a file that cannot be read: {exc.strerror}") from None
    return os.environ.get(name, default)


def secret_key(made_by_make_run: Path, *, debug: bool) -> str:
    """The environment's SECRET_KEY (or SECRET_KEY_FILE), else the key `make run` made in the checkout; with
    DEBUG off there is no default, since anyone who knows the key can forge sessions and signed cookies."""
    key = env_secret("SECRET_KEY", "")
    if not key and made_by_make_run.is_file():
        key = made_by_make_run.read_text().strip()
    if key:
        return key
    if debug:
        return "dev-only-insecure-secret-key"
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. With DEBUG off every process needs one: set SECRET_KEY (50+ random characters, e.g. "
        "from `python -c 'import secrets; print(secrets.token_urlsafe(50))'`) or SECRET_KEY_FILE (a file holding "
        f"it) in the environment; `make run` keeps one of its own in {made_by_make_run}."
    )


def encryption_keys(made_by_make_run: Path) -> list[str]:
    """MAIL_ENCRYPTION_KEYS (or MAIL_ENCRYPTION_KEYS_FILE): comma-separated Fernet keys, newest first; else the
    key `make run` made in the checkout; else none, and content is stored in clear. A key that is not one is
    refused here, naming the variable, rather than at the first email. Set but empty, it is off, whatever var/
    holds."""
    given = any(name in os.environ for name in ("MAIL_ENCRYPTION_KEYS", "MAIL_ENCRYPTION_KEYS_FILE"))
    value = env_secret("MAIL_ENCRYPTION_KEYS", "")
    if not given and made_by_make_run.is_file():
        value = made_by_make_run.read_text()
    keys = [key.strip() for key in value.split(",") if key.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"MAIL_ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe base64-encoded bytes, as "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` makes)."
            ) from None
    return keys


def embedded_servers(state_file: Path) -> dict[str, str]:
    """DATABASE_URL and REDIS_URL of the embedded servers `make run` started for this checkout (launcher/ writes
    the file while they run, and removes it when they stop), so that manage.py commands run from the checkout in
    another shell reach them; {} when it does not run. The environment wins over them."""
    try:
        state = json.loads(state_file.read_text())
        os.kill(int(state["pid"]), 0)  # a launcher that was killed leaves the file behind
    except PermissionError:
        pass  # alive, run by another user
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {name: state[name] for name in ("DATABASE_URL", "REDIS_URL") if isinstance(state.get(name), str)}


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_number(name: str, default: float, *, minimum: float = 0) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value!r}")
    return number


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    number = env_number(name, default, minimum=minimum)
    if number != int(number):
        raise ImproperlyConfigured(f"{name} must be a whole number, not {os.environ[name]!r}")
    return int(number)


def env_json(name: str, default: object) -> object:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None


DEBUG = env_bool("DEBUG", False)
# The environment wins over the file, which `make run` writes once (mode 600) on a machine that has no key.
SECRET_KEY = secret_key(BASE_DIR / "var" / "secret_key", debug=DEBUG)
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]

# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (and appends the client's address to
# X-Forwarded-For): what `manage.py check --deploy` asks for. Without it the service speaks plain HTTP, as
# `make run` serves it on 127.0.0.1.
MAIL_BEHIND_TLS_PROXY = env_bool("MAIL_BEHIND_TLS_PROXY", False)
if MAIL_BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Health checks and Prometheus usually reach the process directly, in plain HTTP, not through the proxy.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^health/ready$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # The header covers this host's name and the names under it only, not its parent domain.
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # A proxy that passes the Host header needs none of these; one that rewrites it still gets the admin's
    # login through, since the browser's Origin is https://<a host it serves>. "*" trusts no origin.
    CSRF_TRUSTED_ORIGINS = [
        f"https://*{host}" if host.startswith(".") else f"https://{host}" for host in ALLOWED_HOSTS if host != "*"
    ]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "anymail",
    "providers",
    "emails",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes): 5 failed logins from one client address lock logins from it for 15 minutes,
# whatever the user name, so guessing one password or spraying many accounts is bounded alike.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
# Its log lines name the path only (the address masked), not the user name (which may be an email address).
AXES_VERBOSE = False
if MAIL_BEHIND_TLS_PROXY:
    # The client is the last X-Forwarded-For entry, the one the proxy appended: any before it came from the
    # client and may be forged. Direct connections (no proxy, no header) fall back to REMOTE_ADDR.
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    AXES_IPWARE_PROXY_ORDER = "left-most"
    AXES_IPWARE_PROXY_COUNT = 0
    IPWARE_STRICT = False  # a forged entry before the proxy's must not discard the proxy's own
else:
    # Only the connection's address: a header is the client's to forge.
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

ROOT_URLCONF = "mailservice.urls"
WSGI_APPLICATION = "mailservice.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Without DATABASE_URL and REDIS_URL: the servers `make run` embedded, else the machine's at their default addresses.
# Lowercase: not a setting, which a debug page would show with the servers' password.
_embedded = embedded_servers(BASE_DIR / "var" / "embedded.json")

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", _embedded.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailservice")),
        conn_max_age=None,  # persistent: a reconnect costs a request tens of ms
        conn_health_checks=True,
    )
}
# An unreachable server fails a connect, and a vanished peer (host down, network cut) an open connection,
# in seconds rather than the kernel's minutes, in every process; options in DATABASE_URL win.
DATABASES["default"]["OPTIONS"] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged
    **DATABASES["default"].get("OPTIONS", {}),
}
# DATABASE_POOLING=transaction: DATABASE_URL is a pooler in transaction mode (PgBouncer's pool_mode =
# transaction), which lends each transaction whichever server connection is free. Then nothing may outlive a
# transaction on the server: no server-side cursors (QuerySet.iterator() would DECLARE one WITH HOLD, left on
# a connection the next transaction may not get), no session SET (infra.database leaves the statement
# timeout to the pooler). Unset: a direct connection, or a pooler in session mode.
DATABASE_POOLING = env_str("DATABASE_POOLING", "")
if DATABASE_POOLING not in ("", "transaction"):
    raise ImproperlyConfigured(f"DATABASE_POOLING must be transaction or unset, not {DATABASE_POOLING!r}")
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_POOLING == "transaction"
# Web and Celery processes only (infra.database.bound_every_query): the longest PostgreSQL may stay
# silent during one wait, and each statement's timeout. Two tries (the health check, then the reconnect)
# keep a request under 5 s when the server is frozen.
MAIL_DATABASE_TIMEOUT = env_number("MAIL_DATABASE_TIMEOUT", 2, minimum=0.1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["emails.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["emails.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "emails.exceptions.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["infra.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["emails.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env_str("MAIL_API_THROTTLE", "1000/second")},
}

# --- mail pipeline ---------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", _embedded.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
MAIL_OUTBOX_DIR = BASE_DIR / "var" / "outbox"
MAIL_PROVIDERS = env_json(
    "MAIL_PROVIDERS",
    [{"name": "outbox", "backend": "file", "options": {"file_path": str(MAIL_OUTBOX_DIR)}}],
)
MAIL_MAX_ATTEMPTS = env_int("MAIL_MAX_ATTEMPTS", 5, minimum=1)
MAIL_RETRY_BACKOFF = env_number("MAIL_RETRY_BACKOFF", 10)
MAIL_RETRY_BACKOFF_MAX = 3600
MAIL_LEASE_SECONDS = env_number("MAIL_LEASE_SECONDS", 300, minimum=1)
MAIL_SWEEP_INTERVAL = env_number("MAIL_SWEEP_INTERVAL", 60, minimum=0.1)
# A stopping worker (SIGTERM) finishes its sends in flight, hands back what it claimed but did not start,
# and is gone within this many seconds (inside Kubernetes' default 30 s grace period).
MAIL_SHUTDOWN_GRACE = env_number("MAIL_SHUTDOWN_GRACE", 25, minimum=1)
# The most provider calls that overlap in each worker process (threads, each with its own connections): how many
# are used is sized from what sends take (providers.concurrency).
MAIL_SEND_THREADS = env_int("MAIL_SEND_THREADS", 32, minimum=1)
# Circuit breaker per provider: open after this many consecutive transient failures, for this long.
MAIL_CIRCUIT_THRESHOLD = env_int("MAIL_CIRCUIT_THRESHOLD", 5, minimum=1)
MAIL_CIRCUIT_COOLDOWN = env_number("MAIL_CIRCUIT_COOLDOWN", 30, minimum=0.1)
MAIL_CIRCUIT_PROBE_SECONDS = 60  # a probe send that takes longer lets another probe go
# A worker waits at most this long for a rate-limited provider's slot; beyond, the email waits PENDING.
MAIL_RATE_MAX_WAIT = env_number("MAIL_RATE_MAX_WAIT", 5, minimum=0.1)
# Django's SMTP backend waits forever by default: a hung server must not hold a claim past its lease.
EMAIL_TIMEOUT = 30
# django-anymail: webhooks are protected by HTTP basic auth with MAIL_WEBHOOK_SECRET ("user:password"),
# plus each ESP's own signature where it has one (e.g. ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY).
ANYMAIL = {name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")}
if env_secret("MAIL_WEBHOOK_SECRET", ""):
    ANYMAIL["WEBHOOK_SECRET"] = env_secret("MAIL_WEBHOOK_SECRET", "")
# Contract limits: recipients per email, bytes per email (bodies and attachments).
MAIL_MAX_RECIPIENTS = 50
MAIL_MAX_EMAIL_BYTES = 10 * 1024 * 1024
# A request may be larger than the email it carries (JSON escaping, base64 attachments).
MAIL_MAX_REQUEST_BYTES = MAIL_MAX_EMAIL_BYTES * 3 // 2
DATA_UPLOAD_MAX_MEMORY_SIZE = MAIL_MAX_REQUEST_BYTES
# The longest a request's template rendering may take (a render process that overruns is killed): past it,
# a 400 naming `template`.
MAIL_TEMPLATE_RENDER_SECONDS = env_number("MAIL_TEMPLATE_RENDER_SECONDS", 1, minimum=0.01)
# The SMTP submission door (manage.py smtpd). Without a certificate and its key (PEM files) it offers no
# STARTTLS, and so listens only on a loopback address: API keys never cross a network in clear.
MAIL_SMTP_LISTEN = env_str("MAIL_SMTP_LISTEN", "127.0.0.1:2587")
MAIL_SMTP_TLS_CERT = env_str("MAIL_SMTP_TLS_CERT", "")
MAIL_SMTP_TLS_KEY = env_str("MAIL_SMTP_TLS_KEY", "")
# Encryption at rest of every copy of an email's content and of webhook secrets (infra/encryption.py), never with
# SECRET_KEY: the environment's keys win over the one `make run` keeps in var/.
MAIL_ENCRYPTION_KEYS = encryption_keys(BASE_DIR / "var" / "encryption_keys")
# Retention, off unless set (an upgrade never erases mail by surprise): emails final (SENT or FAILED) for longer
# than MAIL_RETENTION_DAYS lose their subject, bodies, headers and attachments; after MAIL_DELETE_AFTER_DAYS
# their rows are deleted. Beat applies them every minute, in bounded batches.
MAIL_RETENTION_DAYS = env_int("MAIL_RETENTION_DAYS", 0, minimum=1) if os.environ.get("MAIL_RETENTION_DAYS") else None
MAIL_DELETE_AFTER_DAYS = (
    env_int("MAIL_DELETE_AFTER_DAYS", 0, minimum=1) if os.environ.get("MAIL_DELETE_AFTER_DAYS") else None
)
# smtpd's processes, sharing its address (SO_REUSEPORT, Linux); 0: one per core.
MAIL_SMTP_PROCESSES = env_int("MAIL_SMTP_PROCESSES", 0, minimum=0)
# The stream door (manage.py consume_stream): entries on MAIL_STREAM, read in the consumer group "mailservice";
# results appended to "<MAIL_STREAM>:results", trimmed to about MAIL_STREAM_RESULTS_MAXLEN entries; entries a
# dead consumer left pending are claimed again after MAIL_STREAM_CLAIM_IDLE seconds.
MAIL_STREAM = env_str("MAIL_STREAM", "mailservice:submit")
MAIL_STREAM_CLAIM_IDLE = env_number("MAIL_STREAM_CLAIM_IDLE", 30, minimum=0.1)
MAIL_STREAM_RESULTS_MAXLEN = env_int("MAIL_STREAM_RESULTS_MAXLEN", 100_000, minimum=100)
# Webhooks out: a URL resolving to a private, loopback or link-local address is refused unless this is set
# (a receiver on the same host or network, in development).
MAIL_WEBHOOK_ALLOW_PRIVATE = env_bool("MAIL_WEBHOOK_ALLOW_PRIVATE", False)

SPECTACULAR_SETTINGS = {
    "TITLE": "mailservice API",
    "DESCRIPTION": "Submit transactional emails and follow them to SENT or FAILED. "
    "Authenticate with `Authorization: Bearer <key>` (make one with `.venv/bin/python manage.py create_api_key "
    "NAME`, or in the admin: API keys → Add).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Set: /metrics answers only `Authorization: Bearer <this token>` (Prometheus' `authorization` scrape option).
MAIL_METRICS_TOKEN = env_secret("MAIL_METRICS_TOKEN", "")

# Metrics of every process (gunicorn workers, Celery children) are summed from files in this folder;
# prometheus_client reads the variable when it is first imported, after the settings.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(BASE_DIR / "var" / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# --- Celery (Redis is the broker; the database is the record) -------------
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Above the longest retry countdown (1 h), so that a delayed task is not delivered twice.
    "visibility_timeout": 2 * MAIL_RETRY_BACKOFF_MAX,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# A failed publish must not hold an API request for long: the sweep publishes it later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BEAT_SCHEDULE = {
    "sweep-stranded-emails": {"task": "emails.tasks.sweep_stranded", "schedule": MAIL_SWEEP_INTERVAL},
    "apply-retention": {"task": "emails.tasks.apply_retention", "schedule": 60.0, "options": {"expires": 60}},
    # Webhook messages whose delivery is due: the first try when its kick was lost, and every retry.
    "deliver-webhooks": {"task": "emails.tasks.deliver_webhooks", "schedule": 5.0, "options": {"expires": 5}},
}
# Webhook deliveries have a queue and a worker of their own (the Procfile's `webhooks`): a receiver that holds
# each request for 10 s then delays other webhooks, never the sending of email.
WEBHOOK_QUEUE = "webhooks"
CELERY_TASK_ROUTES = {"emails.tasks.deliver_webhooks": {"queue": WEBHOOK_QUEUE}}
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connection before and after every task unless told to reuse it
# (a reconnect, and the statement timeout set on it, per task of up to 50 emails); a connection PostgreSQL
# dropped meanwhile fails the next query, which sending retries on a new connection.
CELERY_DB_REUSE_MAX = 1000
# A send task's own bounds come from the lease: its claim waits for an unreachable database for up to one
# lease, and once claimed it writes outcomes until that claim's lease runs out (a write the lease fences is
# safe however late). The limits only catch a task hung past all of that: the sweep takes its emails back.
CELERY_TASK_SOFT_TIME_LIMIT = 2 * MAIL_LEASE_SECONDS + 30
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 30

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"loggable_paths": {"()": "infra.log_privacy.LoggablePaths"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Its warnings name the request's path, which may hold an address.
    "loggers": {"django.request": {"filters": ["loggable_paths"]}},
}
