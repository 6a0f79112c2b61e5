"""Thin views: the user's usage page, the staff dashboard and its CSV export."""

from __future__ import annotations

import csv

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from usage import selectors
from usage.forms import PeriodForm
from usage.reports import write_user_rows


@login_required
@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    return render(request, "usage/usage.html", {"usage": selectors.user_usage(user=request.user)})


@staff_member_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    form = PeriodForm(request.GET or None)
    start, end = form.period()
    if not form.is_bound:
        form = PeriodForm(initial={"start": start, "end": end})
    return render(
        request,
        "usage/dashboard.html",
        {"form": form, "dashboard": selectors.dashboard(start=start, end=end)},
    )


@staff_member_required
@require_GET
def dashboard_users_csv(request: HttpRequest) -> HttpResponse:
    start, end = PeriodForm(request.GET or None).period()
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="spend-per-user-{start}-{end}.csv"'
    write_user_rows(csv.writer(response), selectors.user_totals(start=start, end=end))
    return response
