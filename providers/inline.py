"""Inline parts: files an html body shows where it refers to them as cid:<content id> (a logo, a chart).

ESP backends (django-anymail) read a message's `attachments` and take a part with `Content-Disposition: inline`
and a Content-ID as inline, as anymail's own attach_inline_image() makes them. The SMTP and file backends send
`message()`, which here puts the inline parts in a multipart/related with the html (RFC 2387), where mail
clients look for what its cid: URLs name:

    multipart/mixed
        multipart/alternative
            text/plain
            multipart/related
                text/html
                <the inline parts>
        <the other attachments>
"""

from __future__ import annotations

from email import encoders
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart

from django.core.mail import EmailMultiAlternatives


class MessageWithInlineParts(EmailMultiAlternatives):
    def attach_inline(self, filename: str, content: bytes, mimetype: str, content_id: str) -> None:
        """Adds a part the html shows as cid:<content_id> (content_id without its <>)."""
        maintype, subtype = mimetype.split("/", 1)
        part = MIMEBase(maintype, subtype)
        part.set_payload(content)
        encoders.encode_base64(part)
        part.add_header("Content-Disposition", "inline", filename=filename)  # RFC 2231-encoded when not ASCII
        part.add_header("Content-ID", f"<{content_id}>")
        self.attach(part)

    def message(self):
        msg = super().message()
        if not msg.is_multipart() or msg.get_content_subtype() != "mixed":
            return msg  # no attachments, inline or not
        parts = msg.get_payload()
        inline = [part for part in parts if _is_inline(part)]
        if not inline:
            return msg
        html, holder = _html_part(msg)
        if html is None:
            return msg  # no html to show them: they stay inline parts of the mixed message
        related = MIMEMultipart("related", _subparts=[html, *inline], type="text/html")
        siblings = holder.get_payload()
        siblings[siblings.index(html)] = related
        msg.set_payload([part for part in parts if not _is_inline(part)])
        return msg


def _is_inline(part) -> bool:
    return part.get_content_disposition() == "inline" and part.get("Content-ID") is not None


def _html_part(mixed) -> tuple:
    """The html body and the multipart whose payload holds it, in a multipart/mixed message: its body (the
    first part), or one of the alternatives of a multipart/alternative body. (None, None) without html."""
    body = mixed.get_payload()[0]
    if body.get_content_type() == "text/html" and body.get_content_disposition() is None:
        return body, mixed
    if body.get_content_type() == "multipart/alternative":
        for alternative in body.get_payload():
            if alternative.get_content_type() == "text/html":
                return alternative, body
    return (None, None)
