"""Django's template backend, with each render's context taken apart once the render is done.

A `RequestContext` is a reference cycle by Django's design: its first `update()` pushes a `ContextDict`,
which points back at the context. Refcounting never frees it, so everything the render was given (the
request, model instances, querysets, the page's dataclasses) stays until a cyclic collection reaches it.
Most die in a young collection; one that sees young collections go by during its render (a page's) is
promoted and waits for a full one. Found in the bench's server (`gc.DEBUG_SAVEALL`, not committed): every
render's context, with the conversation, messages and page objects it held, was among the garbage the
collector found. `tests/test_reference_cycles.py` checks that none is left.

Emptying the context's list of dicts after the render breaks the cycle, so the render's objects go when
the render returns. The test client's record of a render's context (`response.context`) is a copy with
its own list, and is kept."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.template import TemplateDoesNotExist
from django.template.backends import django as django_backend
from django.template.context import make_context
from django.utils.safestring import SafeString


class Template(django_backend.Template):
    def render(self, context: dict[str, Any] | None = None, request: HttpRequest | None = None) -> SafeString:
        made = make_context(context, request, autoescape=self.backend.engine.autoescape)
        try:
            return self.template.render(made)
        except TemplateDoesNotExist as exc:
            django_backend.reraise(exc, self.backend)
        finally:
            made.dicts.clear()


class DjangoTemplates(django_backend.DjangoTemplates):
    """settings.TEMPLATES' backend: Django's, whose templates are `Template` above."""

    def from_string(self, template_code: str) -> Template:
        return Template(self.engine.from_string(template_code), self)

    def get_template(self, template_name: str) -> Template:
        try:
            return Template(self.engine.get_template(template_name), self)
        except TemplateDoesNotExist as exc:
            django_backend.reraise(exc, self)
