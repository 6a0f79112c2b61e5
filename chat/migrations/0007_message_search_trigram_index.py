"""PostgreSQL only: a trigram index for the sidebar search (`content__icontains`, which PostgreSQL runs as
UPPER(content) LIKE UPPER('%…%')). Without it every search reads every message. Where pg_trgm cannot be
installed (no privilege) or on SQLite, nothing happens and search still works, only slower."""

from typing import Any

from django.db import DatabaseError, migrations, transaction


def create_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):  # a savepoint: a refusal is harmless
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(
                "CREATE INDEX IF NOT EXISTS msg_content_trgm ON chat_message USING gin (UPPER(content) gin_trgm_ops)"
            )
    except DatabaseError:
        pass


def drop_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS msg_content_trgm")


class Migration(migrations.Migration):
    dependencies = [("chat", "0006_shares")]

    operations = [migrations.RunPython(create_index, drop_index)]
