"""The dashboard's JSON: staff users only, through their Django session (CSRF-checked for writes)."""

from __future__ import annotations

import logging

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.selectors import active_api_key, active_api_keys, dashboard_snapshot
from emails import selectors
from emails.services import email_create, email_fields
from emails.throttling import ApiKeyRateThrottle

log = logging.getLogger(__name__)


class StaffApi(APIView):
    """A staff session, not an API key; refused with 403 (no redirect: the callers are scripts)."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAdminUser]
    throttle_classes: list = []


class MaySendEmails(BasePermission):
    """Staff alone may look; sending takes the permission to add emails (superusers have every permission)."""

    message = "Sending from the dashboard needs the permission to add emails (emails.add_email)."

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm("emails.add_email")


class DashboardDataApi(StaffApi):
    @extend_schema(exclude=True)  # not part of the public API
    def get(self, request):
        return Response(dashboard_snapshot())


class DashboardEmailProgressApi(StaffApi):
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        status = serializers.CharField()
        attempts = serializers.IntegerField()
        provider = serializers.CharField()
        last_error = serializers.CharField()
        created_at = serializers.DateTimeField()
        sent_at = serializers.DateTimeField(allow_null=True)
        updated_at = serializers.DateTimeField()

    @extend_schema(exclude=True)
    def get(self, request, email_id):
        email = selectors.email_progress(email_id=email_id)
        if email is None:
            raise NotFound("No such email.")
        return Response(self.OutputSerializer(email).data)


class DashboardApiKeyListApi(StaffApi):
    """The keys the send form may send as: asked only by those who may send."""

    permission_classes = [IsAdminUser, MaySendEmails]

    @extend_schema(exclude=True)
    def get(self, request):
        return Response({"results": active_api_keys()})


class DashboardEmailCreateApi(StaffApi):
    """The form sends as an API key the operator picks, so that key's limits apply to the operator too: its
    senders (checked by email_create), its rate (the API's throttle, counted against that key)."""

    permission_classes = [IsAdminUser, MaySendEmails]
    # Before the handler DRF checks it with no key (the session's auth is None): a no-op. It counts once the
    # body names the key, in post().
    throttle_classes = [ApiKeyRateThrottle]

    class InputSerializer(serializers.Serializer):
        # Bounded before it is parsed: DRF refuses a string over 1,000 characters before int() sees it.
        api_key = serializers.IntegerField(
            min_value=1,
            max_value=2**63 - 1,  # a BigAutoField: past it, no key can match
            error_messages={"required": "Pick the API key to send as: its sender list and rate apply."},
        )

    @extend_schema(exclude=True)
    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}  # (anything else: no key, a 400)
        picked = self.InputSerializer(data=body)  # reads api_key only: the email's fields are validated below
        picked.is_valid(raise_exception=True)
        api_key = active_api_key(api_key_id=picked.validated_data["api_key"])
        if api_key is None:
            raise serializers.ValidationError({"api_key": ["No active key has this id: revoked keys send nothing."]})
        request.auth = api_key  # as a client holding this key would be: throttled by its budget
        self.check_throttles(request)
        # The API's own validation, field for field: the form is one more client of POST /api/v1/emails.
        fields = email_fields({name: value for name, value in body.items() if name != "api_key"})
        email = email_create(api_key=api_key, **fields)
        log.info("email %s submitted from the dashboard by user %s as key %s", email.id, request.user.pk, api_key.pk)
        return Response(DashboardEmailProgressApi.OutputSerializer(email).data, status=status.HTTP_202_ACCEPTED)
