"""Retention on a large table: `python -m bench.retention [COUNT]` (default 1,000,000) makes a database of its own
(mailservice_retention), fills it with COUNT emails of every age and status in SQL, then times one retention
pass (erase after 30 days, delete after 90) batch by batch, and the index scan that finds the next batch.

Not part of `make bench`: it takes minutes and only says how retention scales."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = os.environ.get("RETENTION_DATABASE", "mailservice_retention")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}", "DJANGO_SETTINGS_MODULE":
           "mailservice.settings", "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-retention-" + "x" * 40),
           "MAIL_RETENTION_DAYS": "30", "MAIL_DELETE_AFTER_DAYS": "90"}  # fmt: skip
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB], check=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], check=True, cwd=ROOT, env=env)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from emails.models import Email
    from emails.services import email_create, emails_apply_retention

    model = email_create(
        api_key=None, from_email="Shop <shop@example.com>", to=["alice@example.org"], subject="Your order",
        text="Thank you. " * 200, html="<p>Thank you.</p>" * 200,
        attachments=[{"filename": "a.pdf", "content": "JVBERi0x" * 500, "content_type": "application/pdf"}],
    )  # fmt: skip
    table = Email._meta.db_table
    columns = [f.column for f in Email._meta.concrete_fields if f.column not in ("id", "status", "created_at",
                                                                                    "updated_at")]  # fmt: skip
    listed = ", ".join(f'"{c}"' for c in columns)
    started = time.monotonic()
    with connection.cursor() as cursor:
        # Ages spread over 0-120 days; 95 % final, 5 % PENDING.
        cursor.execute(
            f"""INSERT INTO {table} (id, status, created_at, updated_at, {listed})
                SELECT gen_random_uuid(), CASE WHEN n %% 20 = 0 THEN 'PENDING' WHEN n %% 7 = 0 THEN 'FAILED' ELSE 'SENT' END,
                       now() - (n %% 120) * interval '1 day', now() - (n %% 120) * interval '1 day', {listed}
                  FROM {table}, generate_series(1, %s) AS n WHERE id = %s""",
            [count, model.id],
        )
        cursor.execute(f"ANALYZE {table}")
    print(f"{count:,} emails generated in {time.monotonic() - started:.0f} s")
    Email.objects.filter(id=model.id).delete()
    runs = []
    while True:
        started = time.monotonic()
        result = emails_apply_retention(seconds=30)
        took = time.monotonic() - started
        if not (result.erased or result.deleted):
            break
        runs.append((result.erased, result.deleted, took))
        print(f"run: {result.erased:,} erased, {result.deleted:,} deleted in {took:.1f} s "
              f"({(result.erased + result.deleted) / took:,.0f} rows/s)", flush=True)  # fmt: skip
    erased, deleted, seconds = (sum(r[i] for r in runs) for i in range(3))
    print(f"in all: {erased:,} erased and {deleted:,} deleted in {seconds:.0f} s, {len(runs)} runs of at most 30 s")
    with connection.cursor() as cursor:
        started = time.monotonic()
        cursor.execute(
            f"""EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM {table} WHERE status IN ('SENT', 'FAILED')
                AND erased_at IS NULL AND created_at < now() - interval '30 days' AND updated_at < now() - interval
                '30 days' ORDER BY created_at LIMIT 1000"""
        )
        plan = cursor.fetchone()[0][0]
        print(f"finding the next batch once done: {plan['Execution Time']:.2f} ms ({plan['Plan']['Plans'][0]['Node Type']}"
              f" on {plan['Plan']['Plans'][0].get('Index Name', '-')})")  # fmt: skip
    print(f"remaining: {Email.objects.count():,} rows, {timezone.now():%Y-%m-%d}")


if __name__ == "__main__":
    main()
