from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User


class SignupForm(UserCreationForm[User]):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)


class ConversationSettingsForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    model = forms.ChoiceField(required=False)
    system_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["model"].choices = [("", f"Default ({settings.CHAT_MODEL})")] + [  # type: ignore[attr-defined]
            (m, m) for m in settings.CHAT_MODELS
        ]
