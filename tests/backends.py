"""Django email backends for tests: any dotted backend is a valid provider."""

from anymail.message import AnymailRecipientStatus, AnymailStatus
from django.core.mail.backends.base import BaseEmailBackend


class PerRecipientIdsBackend(BaseEmailBackend):
    """Accepts every message and, like some ESPs through anymail, gives each recipient its own long id."""

    def send_messages(self, email_messages):
        for message in email_messages:
            status = AnymailStatus()
            status.set_recipient_status(
                {r: AnymailRecipientStatus(message_id=f"{r}-{'x' * 90}", status="queued") for r in message.recipients()}
            )
            message.anymail_status = status
        return len(email_messages)
