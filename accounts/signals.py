"""Deactivation takes effect at once: saving a user as inactive (the admin's Active checkbox) stops their
replies and ends their open streams (accounts.services.user_deactivated). QuerySet.update() sends no
signal; deactivate through a model save, as the admin does."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts import services


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.user_deactivated")
def on_user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if created or instance.is_active:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    services.user_deactivated(user_id=instance.pk)
