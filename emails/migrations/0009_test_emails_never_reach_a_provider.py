from django.db import migrations, models

# Keys and emails that generate_emails made before they carried the mark: its keys are the only ones whose
# prefix is "ms_gen" (a real key's prefix is its first 10 characters). A database without them (any but a
# trial one) updates no row, and costs next to nothing: with no marked key the join ends before reading emails.
MARK_GENERATED = """
UPDATE emails_apikey SET test = true WHERE prefix = 'ms_gen';
UPDATE emails_email SET test = true WHERE api_key_id IN (SELECT id FROM emails_apikey WHERE test) AND NOT test;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("emails", "0008_trust_senders_owned_templates_keyed_suppressions"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="test",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="A test key: its emails go through the whole pipeline but are never handed to a provider.",
            ),
        ),
        migrations.AddField(
            model_name="email",
            name="test",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunSQL(MARK_GENERATED, reverse_sql=migrations.RunSQL.noop),
    ]
