"""The bottom layer: what every app of the project shares (the Redis client, metrics, bounded database waits, a
worker's shutdown deadline). It imports no app of the project (emails, providers, dashboard) nor the top
(mailservice: settings, urls, the Celery app), so the imports never go in a circle (tests/test_layers.py)."""
