from django.apps import AppConfig


class EmailsConfig(AppConfig):
    name = "emails"

    def ready(self) -> None:
        from anymail.signals import tracking

        from emails.webhooks import on_tracking_event

        tracking.connect(on_tracking_event, dispatch_uid="emails.tracking")
