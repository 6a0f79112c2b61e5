from __future__ import annotations

from datetime import date, timedelta

from django import forms
from django.utils import timezone

MAX_DAYS = 400


class PeriodForm(forms.Form):
    """The dashboard's period: both ends inclusive; by default the last 30 days."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        end = data.get("end") or timezone.localdate()
        start = data.get("start") or end - timedelta(days=29)
        assert isinstance(start, date) and isinstance(end, date)
        if start > end:
            raise forms.ValidationError("The start of the period must not be after its end.")
        if (end - start).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose a period of at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data

    def period(self) -> tuple[date, date]:
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        end = timezone.localdate()
        return end - timedelta(days=29), end
