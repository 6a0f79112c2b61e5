"""chatsite settings. Every value comes from the environment through one django-environ `env` object;
`.env.example` documents each one. A `.env` file beside manage.py is read when present."""

from pathlib import Path

import django_stubs_ext
import environ

# Lets type-checked generics such as UserCreationForm[User] work at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -----------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=True)
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
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "chat",
]

# All middleware here is async-capable, so nothing forces the streaming views through a thread.
# No GZipMiddleware: it would compress (and so buffer/mangle) the event streams.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

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
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
        }
    }
else:
    # One process: channels' in-memory layer, minus its per-message sweeps (see chat/layers.py).
    CHANNEL_LAYERS = {"default": {"BACKEND": "chat.layers.LocalChannelLayer", "CONFIG": {"capacity": 1000}}}

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

# --- i18n / static --------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
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
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

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
CHAT_SAVE_INTERVAL = env.float("CHAT_SAVE_INTERVAL", default=0.5)
CHAT_KEEPALIVE_SECONDS = env.float("CHAT_KEEPALIVE_SECONDS", default=15.0)
CHAT_LEASE_SECONDS = env.float("CHAT_LEASE_SECONDS", default=10.0)
CHAT_UPSTREAM_CONNECT_TIMEOUT = env.float("CHAT_UPSTREAM_CONNECT_TIMEOUT", default=5.0)
CHAT_UPSTREAM_READ_TIMEOUT = env.float("CHAT_UPSTREAM_READ_TIMEOUT", default=60.0)
CHAT_UPSTREAM_MAX_RETRIES = env.int("CHAT_UPSTREAM_MAX_RETRIES", default=2)
CHAT_DEMO_TOKEN_DELAY = env.float("CHAT_DEMO_TOKEN_DELAY", default=0.03)
CHAT_TOOLS = env.list("CHAT_TOOLS", default=["calculator", "current_time", "search_conversations"])
CHAT_TOOL_TIMEOUT = env.float("CHAT_TOOL_TIMEOUT", default=10.0)
CHAT_MAX_TOOL_ROUNDS = env.int("CHAT_MAX_TOOL_ROUNDS", default=5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
