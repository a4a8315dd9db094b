"""The dashboard's JSON: staff users only, through their Django session (CSRF-checked for writes)."""

from __future__ import annotations

import logging

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.selectors import dashboard_snapshot
from emails import selectors
from emails.apis import email_create_fields
from emails.services import email_create

log = logging.getLogger(__name__)


class StaffApi(APIView):
    """A staff session, not an API key; refused with 403 (no redirect: the callers are scripts)."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAdminUser]
    throttle_classes: list = []


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


class DashboardEmailCreateApi(StaffApi):
    @extend_schema(exclude=True)
    def post(self, request):
        # The API's own validation, field for field: the form is one more client of POST /api/v1/emails.
        email = email_create(api_key=None, **email_create_fields(request.data))
        log.info("email %s submitted from the dashboard by user %s", email.id, request.user.pk)
        return Response(DashboardEmailProgressApi.OutputSerializer(email).data, status=status.HTTP_202_ACCEPTED)
