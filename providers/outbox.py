"""The `file` backend: each message as its own .eml file, named after the email's id."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

ID_HEADER = "X-Mailservice-Id"


class EmailBackend(BaseEmailBackend):
    def __init__(self, file_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not file_path:
            raise ValueError("the file backend needs a 'file_path' option")
        self.file_path = Path(file_path)

    def send_messages(self, email_messages: list[EmailMessage]) -> int:
        self.file_path.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            name = message.extra_headers.get(ID_HEADER) or message.extra_headers.get("Message-ID", "message")
            target = self.file_path / f"{name}.eml"
            temporary = target.with_suffix(".eml.tmp")
            temporary.write_bytes(message.message().as_bytes(linesep="\r\n"))
            os.replace(temporary, target)  # readers never see half a file
        return len(email_messages)
