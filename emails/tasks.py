from celery import shared_task
from celery.signals import worker_process_shutdown

from emails import services
from infra.worker_shutdown import shutdown_deadline
from providers.selection import close_all


@shared_task
def send_emails(email_ids: list[str]) -> None:
    services.emails_send(email_ids, shutdown_deadline=shutdown_deadline)


@shared_task
def sweep_stranded() -> None:
    services.emails_sweep_stranded()


@worker_process_shutdown.connect
def close_provider_connections(**kwargs) -> None:
    close_all()  # say QUIT to SMTP servers instead of dropping the connection
