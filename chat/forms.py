from django import forms
from django.conf import settings


class ConversationSettingsForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    model = forms.ChoiceField(required=False)
    system_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    thinking_budget = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=0,  # type: ignore[arg-type]  # no choice means off
        label="Extended thinking",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["model"].choices = [("", f"Default ({settings.CHAT_MODEL})")] + [  # type: ignore[attr-defined]
            (m, m) for m in settings.CHAT_MODELS
        ]
        self.fields["thinking_budget"].choices = [(0, "Off")] + [  # type: ignore[attr-defined]
            (b, f"On — budget {b:,} tokens")
            for b in settings.CHAT_THINKING_BUDGETS
            if b + settings.CHAT_MAX_TOKENS <= settings.CHAT_MAX_OUTPUT_TOKENS
        ]
