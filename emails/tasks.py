from celery import shared_task
from celery.signals import worker_process_shutdown

from emails import services
from emails.services.webhook_delivery import webhooks_deliver_due
from infra import safe_http
from infra.worker_shutdown import shutdown_deadline
from providers.selection import close_all


@shared_task
def send_emails(email_ids: list[str]) -> None:
    services.emails_send(email_ids, shutdown_deadline=shutdown_deadline)


@shared_task
def sweep_stranded() -> None:
    services.emails_sweep_stranded()


@shared_task
def apply_retention() -> None:
    services.emails_apply_retention()


@shared_task
def deliver_webhooks() -> None:
    webhooks_deliver_due(shutdown_deadline=shutdown_deadline)


@worker_process_shutdown.connect
def close_provider_connections(**kwargs) -> None:
    close_all()  # say QUIT to SMTP servers instead of dropping the connection
    safe_http.close_all()
