from django.conf import settings
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import selectors
from emails.exceptions import PayloadTooLarge
from emails.fields import AddressField, AddressListField, HeadersField, MetadataField, StrictCharField
from emails.models import Email
from emails.services import email_create


def _api_name(fields: dict, python_name: str, api_name: str) -> dict:
    """`from` is a Python keyword: declare the field as from_email and expose it as `from`."""
    return {(api_name if name == python_name else name): field for name, field in fields.items()}


class EmailCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        from_email = AddressField(source="from_email")
        to = AddressListField(min_length=1)
        cc = AddressListField(required=False)
        bcc = AddressListField(required=False)
        reply_to = AddressListField(required=False)
        subject = StrictCharField(single_line=True, max_length=998)
        text = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
        html = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
        headers = HeadersField(required=False)
        tags = serializers.ListField(
            child=StrictCharField(single_line=True, max_length=100), required=False, max_length=20
        )
        metadata = MetadataField(required=False)
        send_at = serializers.DateTimeField(required=False, allow_null=True)

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

        def to_internal_value(self, data):
            if isinstance(data, dict):
                unknown = sorted(set(data) - set(self.fields))
                if unknown:
                    raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            return super().to_internal_value(data)

        def validate(self, attrs):
            if not attrs.get("text") and not attrs.get("html"):
                message = "Give text, html, or both."
                raise serializers.ValidationError({"text": [message], "html": [message]})
            count = sum(len(attrs.get(f, [])) for f in ("to", "cc", "bcc"))
            if count > settings.MAIL_MAX_RECIPIENTS:
                raise serializers.ValidationError(
                    {"to": [f"At most {settings.MAIL_MAX_RECIPIENTS} recipients in to, cc and bcc together ({count})."]}
                )
            size = len(attrs.get("text", "").encode()) + len(attrs.get("html", "").encode())
            if size > settings.MAIL_MAX_EMAIL_BYTES:
                raise PayloadTooLarge(f"The email is {size} bytes; at most {settings.MAIL_MAX_EMAIL_BYTES}.")
            return attrs

    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        email = email_create(api_key=request.auth, **serializer.validated_data)
        # The contract answers a submit with the email itself, as GET shows it.
        data = EmailDetailApi.OutputSerializer(email).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/v1/emails/{email.id}"})


class EmailDetailApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class EventSerializer(serializers.Serializer):
            type = serializers.CharField()
            at = serializers.DateTimeField()
            provider = serializers.CharField()
            detail = serializers.CharField()

        id = serializers.UUIDField()
        status = serializers.CharField()
        from_email = serializers.CharField(source="from_email")
        to = serializers.ListField()
        cc = serializers.ListField()
        bcc = serializers.ListField()
        reply_to = serializers.ListField()
        subject = serializers.CharField()
        text = serializers.CharField()
        html = serializers.CharField()
        headers = serializers.DictField()
        tags = serializers.ListField()
        metadata = serializers.DictField()
        attempts = serializers.IntegerField()
        provider = serializers.CharField()
        provider_message_id = serializers.CharField()
        last_error = serializers.CharField()
        created_at = serializers.DateTimeField()
        send_at = serializers.DateTimeField()
        sent_at = serializers.DateTimeField()
        resent_from = serializers.UUIDField(source="resent_from_id")
        events = EventSerializer(many=True, source="events.all")

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    def get(self, request, email_id):
        email = selectors.email_get(api_key=request.auth, email_id=email_id)
        if email is None:
            raise NotFound("No such email.")
        return Response(self.OutputSerializer(email).data)


class EmailListApi(APIView):
    class Pagination(CursorPagination):
        ordering = "-created_at"
        page_size = 50
        page_size_query_param = "limit"
        max_page_size = 500

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Email.Status.choices, required=False)

    class OutputSerializer(serializers.Serializer):
        """A summary per email: GET /emails/<id> has the bodies and the events."""

        id = serializers.UUIDField()
        status = serializers.CharField()
        from_email = serializers.CharField(source="from_email")
        to = serializers.ListField()
        cc = serializers.ListField()
        bcc = serializers.ListField()
        subject = serializers.CharField()
        tags = serializers.ListField()
        metadata = serializers.DictField()
        attempts = serializers.IntegerField()
        provider = serializers.CharField()
        provider_message_id = serializers.CharField()
        last_error = serializers.CharField()
        created_at = serializers.DateTimeField()
        send_at = serializers.DateTimeField()
        sent_at = serializers.DateTimeField()

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        emails = selectors.email_list(api_key=request.auth, **filters.validated_data)
        paginator = self.Pagination()
        page = paginator.paginate_queryset(emails, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class EmailCollectionApi(EmailListApi, EmailCreateApi):
    """/emails is one path for two operations: GET lists (EmailListApi), POST creates (EmailCreateApi)."""
