"""chatsite settings. Every value comes from the environment through one django-environ `env` object;
`.env.example` documents each one. A `.env` file beside manage.py is read when present."""

from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets type-checked generics such as UserCreationForm[User] work at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).parent  # not resolved: chatsite/templates and chatsite/static are symlinks

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -----------------------------------------------------------------------------------------
# Off unless asked for: a deploy that forgets DEBUG must not serve debug pages with settings and request data.
# `scripts/run` turns it on for local use.
DEBUG = env.bool("DEBUG", default=False)
# The fallback key only exists so a fresh clone runs; `check --deploy` flags it, and DEBUG=False refuses it.
_DEV_SECRET = "django-insecure-dev-only-key-change-me-in-production-0123456789abcdef"
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne first: `runserver` then serves ASGI, so streaming works in development exactly as in production.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",  # before staticfiles: `runserver` leaves static files to its middleware
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "mozilla_django_oidc",
    "accounts",
    "axes",
    "chat",
    "usage",
]

# All middleware here is async-capable, so nothing forces the streaming views through a thread. Under ASGI,
# chat.handlers loads Django's MiddlewareMixin classes below as subclasses whose hooks run on the event loop
# (chat/middleware_inline.py): the names here stay Django's, for `check --deploy`.
# No GZipMiddleware: it would compress (and so buffer/mangle) the event streams.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "csp.middleware.CSPMiddleware",
    # ServeStatic: WhiteNoise's async-native fork (WhiteNoise is sync-only: it put every request in a thread).
    "servestatic.middleware.ServeStaticMiddleware",
    # Below ServeStatic, so static files keep their long cache lifetime; every page and stream is private.
    "chat.middleware.private_no_store",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "chat.middleware.SessionIdleRenewalMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: it turns axes' lockout of a login (user site or admin) into the "too many attempts" page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        # Django's backend, with each render's context taken apart after it (a reference cycle otherwise).
        "BACKEND": "chatsite.templating.DjangoTemplates",
        "NAME": "django",  # the name django-template-partials looks for (it adds its loader to that engine)
        # A symlink to the repository's templates/; a real directory in an installed wheel.
        "DIRS": [PACKAGE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.chat_settings",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
# Default: a SQLite file (zero set-up). DATABASE_URL=postgres://... selects PostgreSQL via psycopg 3.
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with this process's writers queued on a lock, not on SQLite's sleeping busy handler.
    _db["ENGINE"] = "chatsite.sqlite3"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Tests use a file too (not the in-memory shared cache, whose table locks production never sees).
    _db.setdefault("TEST", {"NAME": str(DATA_DIR / "test.sqlite3")})
    # WAL lets page reads proceed while a reply is being saved; IMMEDIATE avoids lock-upgrade deadlocks.
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "django.db.backends.postgresql"
    # Under ASGI, persistent connections leak across threads; Django advises CONN_MAX_AGE=0 with a pool.
    # Streams never hold a connection while they wait: every ORM call borrows one from the pool briefly.
    _db["CONN_MAX_AGE"] = 0
    if env.bool("DATABASE_POOL", default=True):
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN", default=1),
            "max_size": env.int("DATABASE_POOL_MAX", default=10),
            "timeout": 10,
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer (pub/sub between server processes) ---------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Rate-limit counters (the `limits` library): in this process's memory, or in Redis when several processes
# share the work, so that every process counts against the same limit.
RATE_LIMIT_STORAGE_URL = env.str("RATE_LIMIT_STORAGE_URL", default=REDIS_URL or "memory://")
# Under load, a process's PUBLISHes of steady deltas share one write at most this often (see
# RedisPubSubLayer's docstring): Redis wakes less often; such a delta read in another process arrives up to
# this much later. What someone waits for (a first delta, a sync's answer, a stop, an end) never waits.
REDIS_PUBLISH_EVERY_MS = env.float("REDIS_PUBLISH_EVERY_MS", default=5.0)
if not 0 <= REDIS_PUBLISH_EVERY_MS <= 1000:
    raise ImproperlyConfigured(
        f"REDIS_PUBLISH_EVERY_MS must be from 0 to 1000 milliseconds, not {REDIS_PUBLISH_EVERY_MS:g}"
    )
if REDIS_URL:
    # Redis pub/sub (chat/streaming/layers.py, RedisPubSubLayer). A command that gets no answer within 15 s
    # fails, and the pub/sub connection, quiet for 5 s, pings Redis and fails if no answer comes within
    # 15 s: a dead connection is noticed (TCP keepalive too). A short connect timeout: Redis is on loopback
    # or the LAN, and a producer must not wait on a dead one.
    _redis_host = {
        "address": REDIS_URL,
        "socket_timeout": 15,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.streaming.layers.RedisPubSubLayer",
            "CONFIG": {
                "hosts": [_redis_host],
                "capacity": 1000,
                "publish_every": REDIS_PUBLISH_EVERY_MS / 1000,
            },
        }
    }
else:
    # One process: channels' in-memory layer, minus its per-message sweeps (see chat/streaming/layers.py).
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat.streaming.layers.LocalChannelLayer", "CONFIG": {"capacity": 1000}}
    }

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"

# --- Accounts: who may sign up, and sign-in with the team's identity provider ----------------------
# open: anyone may make an account; invite: only with a staff-made invite link; closed: no new accounts.
# `createsuperuser` works under every policy.
SIGNUP = env.str("SIGNUP", default="open" if DEBUG else "invite")
if SIGNUP not in ("open", "invite", "closed"):
    raise ImproperlyConfigured(f"SIGNUP must be open, invite or closed, not {SIGNUP!r}")
INVITE_DAYS = env.float("INVITE_DAYS", default=7.0)  # how long a new invite link works

# OpenID Connect (Keycloak, Google, Entra ID, Authentik, ...). Empty OIDC_ISSUER = no SSO.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")  # "Sign in with <this>"
OIDC_ALLOWED_DOMAINS = [d.lower() for d in env.list("OIDC_ALLOWED_DOMAINS", default=[])]
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")  # dotted path, e.g. realm_access.roles
OIDC_STAFF_GROUP = env.str("OIDC_STAFF_GROUP", default="")  # a value of that claim that makes staff
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=10.0)
OIDC_VERIFY_SSL = env.bool("OIDC_VERIFY_SSL", default=True)
PASSWORD_LOGIN = env.bool("PASSWORD_LOGIN", default=True)
if not PASSWORD_LOGIN and not OIDC_ISSUER:
    raise ImproperlyConfigured("PASSWORD_LOGIN=False needs OIDC_ISSUER: nobody could sign in otherwise")
# mozilla-django-oidc's names. Endpoints come from discovery (accounts.oidc), not from settings.
OIDC_RP_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_RP_SIGN_ALGO = env.str("OIDC_SIGN_ALGO", default="RS256")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
if OIDC_ISSUER and not (OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET):
    raise ImproperlyConfigured("OIDC_ISSUER is set: set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET too")
# Without ModelBackend (PASSWORD_LOGIN=False) no password signs anyone in, and sessions it made end.
# Django's own path is kept, so sessions made before this setting existed stay valid. The OIDC backend
# acts only on a callback with code and state, and only when OIDC_ISSUER is set.
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"] if PASSWORD_LOGIN else []
AUTHENTICATION_BACKENDS.append("accounts.oidc.TeamOIDCBackend")
# django-axes first: it refuses a locked-out username or client address before any backend hashes a password.
AUTHENTICATION_BACKENDS.insert(0, "axes.backends.AxesStandaloneBackend")

# Login throttling (user site and admin) by django-axes: its backend refuses a locked-out username or client
# address before the password is hashed, so a flood of guesses costs no hashing CPU. Failures are counted
# in the database, so every server process sees them.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
# Either one locks: too many failures for a username (from anywhere), or from a client address (any names).
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "chat.views.login_locked_out"
# The client address is REMOTE_ADDR: behind the documented nginx, daphne's --proxy-headers sets it from the
# X-Forwarded-For header that nginx overwrites with the address it saw (README, "Client addresses").
AXES_CLIENT_IP_CALLABLE = "chat.throttling.client_ip"
AXES_VERBOSE = False

# Sign-ups per client address per hour, and messages (and retries) per user per minute (chat/throttling.py).
SIGNUPS_PER_IP_PER_HOUR = env.int("SIGNUPS_PER_IP_PER_HOUR", default=10)

# Sessions end after this long without a request (the expiry is renewed at most once a minute).
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=120)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
# Django's database sessions, each request's row read by one plain SELECT (chatsite/sessions.py).
SESSION_ENGINE = "chatsite.sessions"

# --- i18n / static --------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [PACKAGE_DIR / "static"]  # a symlink to static/, like the templates
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "servestatic.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security (production values follow DEBUG; each can be overridden) ----------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
# Opt-in only: includeSubDomains forces HTTPS on every sibling host of the domain, and preload asks browsers
# to hard-code that for years. Neither is this app's decision to make for its operator.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health probes and the metrics scraper reach each daphne process directly, over plain HTTP (chat/ops.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# `check --deploy` warns about those two opt-ins being off; being off is the documented default.
SILENCED_SYSTEM_CHECKS = [
    *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
]

# Content-Security-Policy (django-csp): only this origin's scripts and styles, no inline code, no eval, no
# remote images (a prompt-injected image URL could carry chat text away), no framing, no foreign forms.
# htmx runs with allowEval and includeIndicatorStyles off (templates/base.html), so it needs neither.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }
}
# Permissions-Policy (django-permissions-policy): no powerful feature is used, so none is granted, except
# clipboard writes from this origin (the Copy button on code blocks).
PERMISSIONS_POLICY: dict[str, list[str]] = {
    "accelerometer": [],
    "ambient-light-sensor": [],
    "autoplay": [],
    "bluetooth": [],
    "browsing-topics": [],
    "camera": [],
    "clipboard-read": [],
    "clipboard-write": ["self"],
    "display-capture": [],
    "encrypted-media": [],
    "fullscreen": [],
    "geolocation": [],
    "gyroscope": [],
    "hid": [],
    "idle-detection": [],
    "magnetometer": [],
    "microphone": [],
    "midi": [],
    "payment": [],
    "publickey-credentials-get": [],
    "screen-wake-lock": [],
    "serial": [],
    "usb": [],
    "xr-spatial-tracking": [],
}

# --- Chat -----------------------------------------------------------------------------------------
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
# "anthropic" or "demo"; empty picks anthropic when a key is set, the labelled demo otherwise.
CHAT_PROVIDER = env.str("CHAT_PROVIDER", default="")
CHAT_MODEL = env.str("CHAT_MODEL", default="claude-sonnet-5-5")
CHAT_MODELS = env.list("CHAT_MODELS", default=[CHAT_MODEL, "claude-opus-5-5", "claude-haiku-5-5"])
CHAT_MAX_TOKENS = env.int("CHAT_MAX_TOKENS", default=4096)
CHAT_SYSTEM_PROMPT = env.str("CHAT_SYSTEM_PROMPT", default="You are a helpful assistant.")
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32000)
CHAT_MAX_CONCURRENT_PER_USER = env.int("CHAT_MAX_CONCURRENT_PER_USER", default=3)
CHAT_MESSAGES_PER_MINUTE = env.int("CHAT_MESSAGES_PER_MINUTE", default=20)
CHAT_SAVE_INTERVAL = env.float("CHAT_SAVE_INTERVAL", default=0.5)
CHAT_KEEPALIVE_SECONDS = env.float("CHAT_KEEPALIVE_SECONDS", default=15.0)
# Open SSE streams one user may hold in one server process (tabs x replies); beyond it, 429.
CHAT_MAX_STREAMS_PER_USER = env.int("CHAT_MAX_STREAMS_PER_USER", default=20)
CHAT_LEASE_SECONDS = env.float("CHAT_LEASE_SECONDS", default=10.0)
CHAT_UPSTREAM_CONNECT_TIMEOUT = env.float("CHAT_UPSTREAM_CONNECT_TIMEOUT", default=5.0)
CHAT_UPSTREAM_READ_TIMEOUT = env.float("CHAT_UPSTREAM_READ_TIMEOUT", default=60.0)
CHAT_UPSTREAM_MAX_RETRIES = env.int("CHAT_UPSTREAM_MAX_RETRIES", default=2)
# The SDK's HTTP transport: "aiohttp" (its DefaultAioHttpClient; a fifth less CPU per streamed delta) or
# "httpx" (its default). chat/providers/anthropic_provider.py says why.
CHAT_UPSTREAM_HTTP = env.str("CHAT_UPSTREAM_HTTP", default="aiohttp")
if CHAT_UPSTREAM_HTTP not in ("aiohttp", "httpx"):
    raise ImproperlyConfigured(f"CHAT_UPSTREAM_HTTP must be aiohttp or httpx, not {CHAT_UPSTREAM_HTTP!r}")
CHAT_DEMO_TOKEN_DELAY = env.float("CHAT_DEMO_TOKEN_DELAY", default=0.03)
CHAT_TOOLS = env.list("CHAT_TOOLS", default=["calculator", "current_time", "search_conversations"])
CHAT_TOOL_TIMEOUT = env.float("CHAT_TOOL_TIMEOUT", default=10.0)
CHAT_MAX_TOOL_ROUNDS = env.int("CHAT_MAX_TOOL_ROUNDS", default=5)
# On SIGTERM (daphne): refuse new replies, let running ones finish for up to this long, then save the rest as
# interrupted (Continue offered) and exit. Give the process manager's stop timeout a few seconds more.
CHAT_DRAIN_SECONDS = env.float("CHAT_DRAIN_SECONDS", default=30.0)
# Admission control (chat/streaming/admission.py): replies generating at once per server process; past it a
# new reply is refused at once (503, Retry-After: CHAT_BUSY_RETRY_AFTER seconds) and nothing is saved.
# 0 = no bound. Default from the measured CPU per delta (README, "Operations: capacity, metrics and health").
CHAT_MAX_ACTIVE_REPLIES = env.int("CHAT_MAX_ACTIVE_REPLIES", default=100)
CHAT_BUSY_RETRY_AFTER = env.int("CHAT_BUSY_RETRY_AFTER", default=10)
# Starts (new message, new conversation, edit, Retry, Continue) doing their work at once on a process's
# event loop; more wait their turn. Measured (issue 15, session 20): a burst of 125 starts a second with all
# of them at once made running streams stutter (per-delta p99 78-470 ms); with 2, 19-44 ms. 0 = no bound.
CHAT_MAX_CONCURRENT_STARTS = env.int("CHAT_MAX_CONCURRENT_STARTS", default=2)
if CHAT_MAX_CONCURRENT_STARTS < 0:
    raise ImproperlyConfigured(
        f"CHAT_MAX_CONCURRENT_STARTS must be 0 (no bound) or more, not {CHAT_MAX_CONCURRENT_STARTS}"
    )
# Render finished Markdown blocks on the server while a reply streams (off: raw text until the end).
CHAT_STREAM_MARKDOWN = env.bool("CHAT_STREAM_MARKDOWN", default=True)
# Context window per model, in tokens (e.g. "claude-haiku-5-5=200000;my-small-model=8000"); history that does
# not fit is trimmed, oldest exchanges first. Models not listed get CHAT_CONTEXT_TOKENS_DEFAULT.
CHAT_CONTEXT_TOKENS = env.dict("CHAT_CONTEXT_TOKENS", cast={"value": int}, default={})
CHAT_CONTEXT_TOKENS_DEFAULT = env.int("CHAT_CONTEXT_TOKENS_DEFAULT", default=200_000)

# --- Usage, cost and budgets ------------------------------------------------------------------------
# US dollars per million tokens: input, output, cache write (5-minute), cache read. Defaults to override:
# they follow Anthropic's published pattern (cache write 1.25x input, cache read 0.1x input). A model id
# the API reports with a date suffix takes the prices of the longest name it starts with. CHAT_PRICES_JSON
# (a JSON object of the same shape) replaces models' entries; prices set in the admin (ModelPrice) win.
CHAT_PRICES: dict[str, dict[str, str]] = {
    "claude-sonnet-5-5": {"input": "3", "output": "15", "cache_write": "3.75", "cache_read": "0.30"},
    "claude-opus-5-5": {"input": "5", "output": "25", "cache_write": "6.25", "cache_read": "0.50"},
    "claude-haiku-5-5": {"input": "1", "output": "5", "cache_write": "1.25", "cache_read": "0.10"},
}
CHAT_PRICES.update(env.json("CHAT_PRICES_JSON", default={}))
# The composer shows the remaining budget when less than this fraction of the tightest budget is left.
CHAT_BUDGET_NOTICE_FRACTION = env.float("CHAT_BUDGET_NOTICE_FRACTION", default=0.10)
# --- Attachments and extended thinking (issue 13) --------------------------------------------------
# Limits follow the Messages API's own (5 MB per image, 8000 px per side, 100 PDF pages, 32 MB per request)
# with room for the rest of the request: base64 adds a third, and later turns resend earlier files.
CHAT_ATTACHMENT_MAX_BYTES = env.int("CHAT_ATTACHMENT_MAX_BYTES", default=5 * 1024 * 1024)
CHAT_ATTACHMENT_MAX_PIXELS = env.int("CHAT_ATTACHMENT_MAX_PIXELS", default=25_000_000)
CHAT_ATTACHMENT_MAX_SIDE = env.int("CHAT_ATTACHMENT_MAX_SIDE", default=8000)
CHAT_ATTACHMENT_MAX_PAGES = env.int("CHAT_ATTACHMENT_MAX_PAGES", default=100)
CHAT_ATTACHMENTS_PER_MESSAGE = env.int("CHAT_ATTACHMENTS_PER_MESSAGE", default=5)
# Uploaded but never sent (the tab was closed): deleted after this many hours.
CHAT_ATTACHMENT_PENDING_HOURS = env.float("CHAT_ATTACHMENT_PENDING_HOURS", default=24.0)
CHAT_ATTACHMENTS_MAX_CONVERSATION_BYTES = env.int(
    "CHAT_ATTACHMENTS_MAX_CONVERSATION_BYTES", default=20 * 1024 * 1024
)
# Where attachment files live. "local": DATA_DIR/media/attachments, never served by URL (only by the
# authorised view). "s3": any S3-compatible store through django-storages (`pip install .[s3]`), private ACL.
ATTACHMENTS_STORAGE = env.str("ATTACHMENTS_STORAGE", default="local")
if ATTACHMENTS_STORAGE == "s3":
    _attachments_storage: dict[str, Any] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            "access_key": env.str("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default="") or None,
            "location": env.str("AWS_LOCATION", default="attachments"),
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _attachments_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        # base_url is never used: files are only streamed by chat.views.attachment_file.
        "OPTIONS": {"location": str(DATA_DIR / "media" / "attachments"), "base_url": None},
    }
STORAGES["attachments"] = _attachments_storage
# Extended thinking: the budgets a conversation may choose. A reply's max_tokens is CHAT_MAX_TOKENS plus
# the budget (so budget < max_tokens always holds and the answer keeps its full length); the sum must stay
# within the model's output limit, CHAT_MAX_OUTPUT_TOKENS.
CHAT_THINKING_BUDGETS = [int(b) for b in env.list("CHAT_THINKING_BUDGETS", default=["1024", "4096", "16000"])]
CHAT_MAX_OUTPUT_TOKENS = env.int("CHAT_MAX_OUTPUT_TOKENS", default=64000)
# Per-model output limits where they differ, e.g. "claude-haiku-5-5=8192": a budget is offered for a model
# only if it fits. A model whose limit leaves no room for the smallest budget cannot think.
CHAT_MODEL_MAX_OUTPUT_TOKENS = env.dict("CHAT_MODEL_MAX_OUTPUT_TOKENS", cast={"value": int}, default={})

# --- Operations: /metrics and /readyz (chat/ops.py) ------------------------------------------------
# /metrics is for staff, for `Authorization: Bearer <METRICS_TOKEN>` (empty = no token works), and for client
# addresses or networks in METRICS_ALLOW_IPS (e.g. 127.0.0.1,10.0.0.0/8; empty = none).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOW_IPS = env.list("METRICS_ALLOW_IPS", default=[])
for _entry in METRICS_ALLOW_IPS:
    try:
        ip_network(_entry.strip(), strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"METRICS_ALLOW_IPS: {_entry!r} is not an address or network") from _error
# Each readiness check (database, channel layer) fails after this many seconds.
READYZ_TIMEOUT = env.float("READYZ_TIMEOUT", default=2.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
