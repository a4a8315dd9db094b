from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The index is built without locking the table against writes: every hard bounce and complaint adds a row,
    # and sending reads the table for each email.
    atomic = False

    dependencies = [
        ("emails", "0015_encrypted_content"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="suppression",
            index=models.Index(fields=["api_key", "-created_at", "-id"], name="suppression_key_created"),
        ),
    ]
