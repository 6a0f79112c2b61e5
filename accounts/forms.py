from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User


class SignupForm(UserCreationForm[User]):
    """Validates a username and password; accounts.services.password_signup creates the account."""

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)
