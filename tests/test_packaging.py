"""A non-editable install works: the wheel holds every package (chat.streaming, chat.providers, chat.tools,
the migrations, the template tags), the templates and the static files, and a Django set up from the
unpacked wheel alone - not from this checkout - renders the pages, finds the static files and migrates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fresh_checkout(target: Path) -> Path:
    """The files git would check out (tracked, or new and not ignored), symlinks kept: no stale build/ or
    *.egg-info of this working tree can leak into the wheel (setuptools reuses both)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        if not source.exists() and not source.is_symlink():  # deleted in the working tree
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    checkout = _fresh_checkout(tmp_path_factory.mktemp("checkout"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(checkout), "-w", str(out)],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("chatsite-*.whl")
    yield built


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_every_package_the_migrations_templates_and_static_files(wheel: Path) -> None:
    names = _names(wheel)
    for package in ("chat/streaming", "chat/providers", "chat/tools", "chat/migrations", "chat/templatetags"):
        assert f"{package}/__init__.py" in names, package
    # Every package and every migration of the checkout, whoever adds one later.
    for init in [
        *ROOT.glob("chat/**/__init__.py"),
        *ROOT.glob("chatsite/**/__init__.py"),
        *ROOT.glob("usage/**/__init__.py"),
        *ROOT.glob("accounts/**/__init__.py"),
    ]:
        assert init.relative_to(ROOT).as_posix() in names
    for app in ("chat", "usage", "accounts"):
        for migration in (ROOT / app / "migrations").glob("0*.py"):
            assert f"{app}/migrations/{migration.name}" in names
    for template in (ROOT / "templates").rglob("*.html"):
        assert f"chatsite/templates/{template.relative_to(ROOT / 'templates').as_posix()}" in names
    for asset in (ROOT / "static").rglob("*"):
        if asset.is_file():
            assert f"chatsite/static/{asset.relative_to(ROOT / 'static').as_posix()}" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)


def test_django_runs_from_the_unpacked_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    script = (
        "import django, chat, chatsite\n"
        "django.setup()\n"
        "from django.template.loader import get_template\n"
        "from django.contrib.staticfiles import finders\n"
        "from django.core.management import call_command\n"
        "from django.db import connection\n"
        "get_template('chat/conversation.html'); get_template('registration/login.html')\n"
        "assert finders.find('chat/app.js') and finders.find('vendor/htmx.min.js')\n"
        "call_command('migrate', verbosity=0)\n"
        "assert 'chat_message' in connection.introspection.table_names()\n"
        "import chat.streaming, chat.providers, chat.tools\n"
        "print(chat.__file__, chatsite.__file__)\n"
    )
    # -S: no site-packages processing, so the editable install of this checkout cannot answer the imports;
    # the dependencies come from the virtualenv's site-packages, the app only from the unpacked wheel.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "packaging-test-" + "x" * 40,
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chat_file, chatsite_file = result.stdout.split()
    assert chat_file.startswith(str(site)) and chatsite_file.startswith(str(site))
